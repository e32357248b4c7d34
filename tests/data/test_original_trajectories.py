"""layout: original renders trajectories as the original tool: observations framed as user turns, compressed unframed when
they have at least k tokens, and an empty think block (Qwen3's) read only by the assistant turn being made."""

import pytest
import torch

from icae.config import load_config
from icae.data.trajectories import rendered, trajectory_rows
from icae.models import build_model
from icae.models.auto import layout_for
from icae.models.loading import build_tiny_model, tiny_tokenizer
from icae.models.original import chat_frame

# A Qwen3-style template written for this test: assistant turns open with an empty think block when thinking is off.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}<think>\n\n</think>\n\n"
    "{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
TRAJECTORY = {"id": "t", "messages": [
    {"role": "system", "content": "You fix bugs."},
    {"role": "user", "content": "Fix the parser."},
    {"role": "assistant", "content": "search parse"},
    {"role": "tool", "content": "parse.py:10: def parse(text):\n" * 3},
    {"role": "assistant", "content": "open parse.py 10"},
    {"role": "tool", "content": "ok"},
    {"role": "assistant", "content": "submit"},
]}


def config(name, **extra):
    return load_config(None, {"model_name_or_path": name, "task": "trajectories", "layout": "original",
                              "fixed_mem_size": 4, "mean_compression_rate": 4, "lora_r": 4, "lora_alpha": 8,
                              "lora_dropout": 0.0, **extra})


@pytest.fixture(scope="module")
def think_model(tmp_path_factory):
    path = build_tiny_model("qwen2", tmp_path_factory.mktemp("think") / "m")
    tok = tiny_tokenizer()
    tok.chat_template = THINK_TEMPLATE
    tok.save_pretrained(path)
    return str(path)


def test_original_turns_follow_the_original_rendering():
    tok = tiny_tokenizer()
    frame = chat_frame(tok)
    cfg = config("tiny-qwen2")
    turns = rendered(cfg, layout_for(cfg.model, tok), TRAJECTORY)
    decode = lambda ids: tok.decode(ids)  # noqa: E731
    assert [decode(t.header) for t in turns] == ["<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n",
                                                 "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_start|>user\n",
                                                 "<|im_start|>assistant\n"]  # observations are user turns
    assert [t.compress for t in turns] == [False, False, False, True, False, False, False]  # >= k tokens; "ok" is 1
    assert all(t.footer == list(frame.suffix) for t in turns) and not any(t.think for t in turns)
    [(row, owner)] = trajectory_rows(turns)  # no think block: one row scores every assistant turn
    assert sum(s.loss for s in row) == 3 and owner[-1] == 6
    # the baselines: the observation left out (its header and footer stay), or read as its tokens where its slots go
    [(blind, blind_owner)] = trajectory_rows(turns, drop_memory=True)
    compressed = [j for j, s in enumerate(row) if s.compress]
    assert len(compressed) == 1 and blind_owner == [o for j, o in enumerate(owner) if j not in compressed]
    assert [(s.ids.tolist(), s.loss) for s in blind] == [(s.ids.tolist(), s.loss) for s in row if not s.compress]
    [(full, full_owner)] = trajectory_rows(turns, as_tokens=True)
    assert full_owner == owner and not any(s.compress for s in full)
    assert [(s.ids.tolist(), s.loss) for s in full] == [(s.ids.tolist(), s.loss) for s in row]
    with pytest.raises(ValueError, match="exclude each other"):
        trajectory_rows(turns, drop_memory=True, as_tokens=True)


def test_a_think_block_is_read_only_by_the_turn_being_made(think_model):
    model = build_model(config(think_model))
    tok = model.tokenizer
    turns = rendered(config(think_model), model.layout, TRAJECTORY)
    assistant = [t for t in turns if t.role == "assistant"]
    assert all(tok.decode(t.header) == "<|im_start|>assistant\n" for t in assistant)
    assert all(tok.decode(t.think) == "<think>\n\n</think>\n\n" for t in assistant)
    rows = trajectory_rows(turns)
    assert len(rows) == 3  # one row per assistant turn
    for (row, owner), index in zip(rows, [2, 4, 6]):
        text = tok.decode(torch.cat([s.ids for s in row if not s.compress]).tolist())
        assert text.count("<think>") == 1 and text.rstrip().endswith(TRAJECTORY["messages"][index]["content"] +
                                                                     "<|im_end|>")
        assert [owner[j] for j, s in enumerate(row) if s.loss] == [index]  # the loss is on this turn only


def test_kept_cache_drops_the_think_block_like_reprefilling(think_model, tmp_path):
    from icae.scripts import inference_trajectories
    from icae.utils.io import atomic_write_jsonl

    data = tmp_path / "t.jsonl"
    atomic_write_jsonl(data, [TRAJECTORY, {**TRAJECTORY, "id": "u"}])
    args = [f"model_name_or_path={think_model}", "task=trajectories", "layout=original", f"dataset_repo={data}",
            f"eval_dataset_repo={data}", "fixed_mem_size=4", "lora_r=4", "lora_alpha=8", "max_out_length=4",
            "teacher_forcing=false", f"output_path={tmp_path}", "use_cpu=true", "seed=0"]
    kept = inference_trajectories.main(args + ["reuse_kv_cache=true"])
    full = inference_trajectories.main(args + ["reuse_kv_cache=false"])
    assert kept["turn"] == pytest.approx(full["turn"]) and kept["num_turns"] == 6
    import json

    read = lambda r: [json.loads(x)["prediction"] for x in open(r["predictions_path"])]  # noqa: E731
    assert read(kept) == read(full)  # the cropped think block leaves the history exactly as re-prefilling builds it
