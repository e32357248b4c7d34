"""The layout objects (icae.models.framing) against values worked out by hand: encoder segments and position ids,
decoder frames, end and stop tokens, the compress threshold; and the earlier name ``seed`` read as ``original``.

The tiny tokenizer's ChatML frame, as ids: user header ``<|im_start|>user\\n`` = [2, 1468, 202], end of turn
``<|im_end|>\\n`` = [3, 202], assistant header ``<|im_start|>assistant\\n`` = [2, 314, 374, 2631, 202]; EOS is 0 and
``<|im_end|>`` is 3 (tests/models/test_original_layout.py decodes the same frame).
"""

import pytest
import torch

from icae.config import ModelArguments, layout_names, load_config
from icae.models import ICAE, SimpleLLM
from icae.models.framing import NativeLayout, OriginalLayout, layout_class
from icae.models.loading import tiny_tokenizer

USER, END, ASSISTANT, EOS, IM_END = [2, 1468, 202], [3, 202], [2, 314, 374, 2631, 202], 0, 3
ROW = torch.arange(40, 47)  # 7 tokens


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def layout(tok, cls=ICAE, **args):
    return cls.make_layout(ModelArguments(**{"fixed_mem_size": 2, "mean_compression_rate": 2, **args}), tok)


def plan(segments):
    return [(ids.tolist(), pos.tolist()) for ids, pos in segments]


def test_native_segments_and_encoder_position_ids(tok):
    # 7 tokens, k=2, rate 2: ceil(7/4) = 2 balanced segments of 4 and 3 tokens, at global ids 1..4 and 5..7. Memory
    # ids are the centres of k equal blocks, rounded half up: 1..4 -> blocks of 2 -> centres 1.5, 3.5 -> 2, 4;
    # 5..7 -> blocks of 1.5 -> centres 5.25, 6.75 -> 5, 7.
    native = layout(tok, layout="native", use_position_identifiers=True)
    assert isinstance(native, NativeLayout)
    assert plan(native.segments(ROW, 2)) == [([40, 41, 42, 43], [1, 2, 3, 4, 2, 4]), ([44, 45, 46], [5, 6, 7, 5, 7])]
    plain = layout(tok, layout="native", use_position_identifiers=False)
    assert plan(plain.segments(ROW, 2)) == [([40, 41, 42, 43], [0, 1, 2, 3, 4, 5]), ([44, 45, 46], [0, 1, 2, 3, 4])]


def test_original_segments_and_encoder_position_ids(tok):
    original = layout(tok, layout="original", fixed_mem_size=4, use_position_identifiers=True)
    assert isinstance(original, OriginalLayout)
    # Framed: 3 + 7 + 2 + 5 = 17 ids; k=4, rate 2: n = ceil(17/8) = 3 segments of ceil(17/3) = 6, the last 5 long.
    # Each segment's tokens at 1..len; memory ids linspace(1, len, 4) truncated: 6 -> 1, 2.67, 4.33, 6 -> [1, 2, 4, 6];
    # 5 -> 1, 2.33, 3.67, 5 -> [1, 2, 3, 5].
    assert plan(original.segments(ROW, 2)) == [
        (USER + [40, 41, 42], [1, 2, 3, 4, 5, 6, 1, 2, 4, 6]),
        ([43, 44, 45, 46] + END, [1, 2, 3, 4, 5, 6, 1, 2, 4, 6]),
        (ASSISTANT, [1, 2, 3, 4, 5, 1, 2, 3, 5]),
    ]
    # Agent observations are cut unframed: 7 ids, n = 1 segment (7 <= 8); ids 1..7 and linspace(1, 7, 4) = 1, 3, 5, 7.
    assert plan(original.segments(ROW, 2, framed=False)) == [(ROW.tolist(), [1, 2, 3, 4, 5, 6, 7, 1, 3, 5, 7])]
    plain = layout(tok, layout="original", fixed_mem_size=4, use_position_identifiers=False)
    assert [pos for _, pos in plan(plain.segments(ROW, 2))] == [list(range(10)), list(range(10)), list(range(9))]


def test_decoder_frames(tok):
    native, original = layout(tok, layout="native"), layout(tok, layout="original")
    assert native.frame_row("ft", [7, 8], []) == ([], True, [7, 8])  # [slots][FT] prompt
    assert native.frame_row("ae", [], []) == ([], True, [])
    # user_prefix prefix [slots] prompt end-of-turn assistant-header: the question sits in the user turn ...
    assert original.frame_row("ft", [7, 8], [5, 6]) == (USER + [5, 6], False, [7, 8] + END + ASSISTANT)
    assert original.frame_row("ae", [], []) == (USER, False, END + ASSISTANT)
    # ... and an LM prompt starts the continuation, after the assistant header.
    assert original.frame_row("lm", [7, 8], []) == (USER, False, END + ASSISTANT + [7, 8])
    assert not native.takes_prefix and original.takes_prefix


def test_end_and_stop_tokens(tok):
    native, original = layout(tok, layout="native"), layout(tok, layout="original")
    assert native.ae_end == [EOS] and original.ae_end == END
    assert native.answer_end is None  # the answer with its leading space, then EOS
    assert original.answer_end == [EOS]  # the original's ICAE ends an answer with EOS ...
    assert layout(tok, SimpleLLM, layout="original").answer_end == END  # ... its SimpleLLM with the end of turn
    assert native.stop_ids is None and original.stop_ids == [EOS, IM_END]
    assert native.turn_stop_ids == [EOS, IM_END] and original.turn_stop_ids == [EOS, IM_END]


def test_turn_headers_and_footers(tok):
    native, original = layout(tok, layout="native"), layout(tok, layout="original")
    assert native.turn_header("tool") == ([2, 538, 671, 202], [])  # <|im_start|>tool\n
    assert native.turn_footer == END
    assert original.turn_header("tool") == (USER, [])  # observations are user turns
    assert original.turn_header("assistant") == (ASSISTANT, [])  # no think block in the tiny template
    assert tok.decode(original.turn_header("system")[0]) == "<|im_start|>system\n"
    assert original.turn_footer == END


def test_compress_threshold_and_memory_length(tok):
    native = layout(tok, layout="native", fixed_mem_size=4, mean_compression_rate=4, min_tokens_to_compress=10)
    assert native.compress_threshold == 10 and not native.compresses(9) and native.compresses(10)
    assert native.memory_length(9) == 9 and native.memory_length(40) == 12  # ceil(40 / 16) = 3 segments of 4 slots
    original = layout(tok, layout="original", fixed_mem_size=4, mean_compression_rate=4, min_tokens_to_compress=10)
    assert original.compress_threshold == 4 and not original.compresses(3) and original.compresses(4)  # at least k
    assert original.memory_length(3) == 3 and original.memory_length(9) == 4
    off = layout(tok, layout="native", fixed_mem_size=4, do_compress=False)
    assert not off.compresses(100) and off.memory_length(100) == 100
    llm = layout(tok, SimpleLLM, layout="native", fixed_mem_size=4)  # SimpleLLM's memory is its context
    assert not llm.compresses(100) and llm.memory_length(100) == 100


def test_decoder_keeps_positions(tok):
    assert layout(tok, layout="native", use_position_identifiers=True).decoder_keeps_positions
    assert not layout(tok, layout="native", use_position_identifiers=False).decoder_keeps_positions
    assert not layout(tok, layout="native", use_position_identifiers=True, do_compress=False).decoder_keeps_positions
    assert not layout(tok, SimpleLLM, layout="native", use_position_identifiers=True).decoder_keeps_positions
    assert not layout(tok, layout="original", use_position_identifiers=True).decoder_keeps_positions


def test_qa_template(tok):
    default = load_config(None, {}).squad.qa_prompt_template
    original = layout(tok, layout="original")
    assert original.qa_template(default).startswith("Based on the context, answer the following question")
    assert original.qa_template("Q: {question}") == "Q: {question}"  # a configured template is kept
    assert layout(tok, layout="native").qa_template(default) == default


def test_seed_is_read_as_original_with_one_notice(capsys, monkeypatch):
    monkeypatch.setattr(layout_names, "_noticed", set())
    assert load_config(None, {"layout": "seed"}).model.layout == "original"
    assert ModelArguments(layout="seed").layout == "original"
    err = capsys.readouterr().err
    assert err.count("layout: seed is now called layout: original") == 1  # said once, not per config
    assert load_config(None, {"layout": "original"}).model.layout == "original"
    assert capsys.readouterr().err == ""
    assert layout_class("seed") is OriginalLayout and layout_class("native") is NativeLayout
    with pytest.raises(Exception, match="layout"):
        load_config(None, {"layout": "orignal"})


def test_a_checkpoint_that_recorded_layout_seed_loads_as_original(tmp_path):
    from icae.config import ConfigError
    from icae.models import load_checkpoint
    from icae.models.checkpoint import CONFIG_NAME
    from tests.conftest import make_model

    model = make_model("tiny-qwen2", layout="original", use_position_identifiers=True)
    model.save_pretrained(tmp_path / "ckpt")
    saved = tmp_path / "ckpt" / CONFIG_NAME
    text = saved.read_text()
    assert "layout: original" in text
    saved.write_text(text.replace("layout: original", "layout: seed"))  # what a checkpoint saved before the rename says
    again = load_checkpoint(tmp_path / "ckpt", train=False)
    assert again.args.layout == "original" and isinstance(again.layout, OriginalLayout)
    ids = [list(range(30, 53))]
    with torch.no_grad():
        torch.testing.assert_close(again.compress(ids).slots, model.compress(ids).slots, atol=0, rtol=0)
    assert load_checkpoint(tmp_path / "ckpt", train=False, layout="seed").args.layout == "original"  # same meaning
    with pytest.raises(ConfigError, match="layout"):
        load_checkpoint(tmp_path / "ckpt", train=False, layout="native")


def test_a_gguf_manifest_that_says_seed_reads_as_original():
    from icae.engines.manifest import Manifest

    fields = dict(base_family="qwen2", hidden_size=8, vocab_size=16, head_dim=4, weights={"f32": "w.gguf"},
                  encoder_lora="e.gguf", decoder_lora=None, lora_alpha=16.0, lora_r=8, use_position_identifiers=True,
                  fixed_mem_size=4, mean_compression_rate=4, eos_token_id=0, pad_token_id=None)
    assert Manifest(layout="seed", **fields).layout == "original"
    assert Manifest(layout="native", **fields).layout == "native"
    with pytest.raises(Exception, match="layout must be one of native, original"):
        Manifest(layout="orignal", **fields)
