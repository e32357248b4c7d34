"""The llama.cpp backend's control flow (segments in parallel sequences, chunked passes, rows decoded together,
histories kept as sequences across turns, sequences given back) gives the PyTorch ICAE's results, run over a
runtime that keeps llama.cpp's contract but computes with the PyTorch model (tests/engines/fakes.py). No llama.cpp
needed; test_llamacpp.py checks the real runtime where it is built."""

import pytest
import torch

from icae.models import Span
from tests.conftest import TEXTS, make_model
from tests.engines.fakes import TorchRuntime, engine_for


@pytest.fixture(params=[("tiny-qwen2", True, False), ("tiny-mistral", False, True)],
                ids=["qwen2-ids-decoder-adapter", "mistral-frozen-decoder"])
def pair(request):
    name, identifiers, frozen = request.param
    model = make_model(name, fixed_mem_size=4, use_position_identifiers=identifiers, freeze_decoder=frozen)
    runtime = TorchRuntime(model, n_seq_max=2)  # fewer sequences than rows and segments: forces groups
    return model, engine_for(model, runtime), runtime


def test_compress_and_greedy_generate_equal_pytorch(pair):
    model, engine, runtime = pair
    with torch.no_grad():
        ref = model.compress(TEXTS)
        ref_ae = model.generate(ref, mode="ae", max_new_tokens=6, stop_token_ids=[])
        prompts = model.tokenize(["# q\n", "why?", "x = 1\n"])
        ref_ft = model.generate(ref, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[])
    got = engine.compress(TEXTS)
    assert torch.equal(got.position_ids, ref.position_ids) and torch.equal(got.mask, ref.mask)
    assert torch.allclose(got.slots, ref.slots, atol=1e-4)
    assert engine.generate(got, mode="ae", max_new_tokens=6, stop_token_ids=[]) == ref_ae
    assert engine.generate(got, prompt_ids=prompts, mode="ft", max_new_tokens=5, stop_token_ids=[]) == ref_ft
    assert runtime.free_sequences == 2 and all(not h for h in runtime.history.values())  # all given back, empty


def test_stop_tokens_and_callback_end_rows(pair):
    model, engine, runtime = pair
    memory = engine.compress(TEXTS[:2])
    full = engine.generate(memory, mode="ae", max_new_tokens=6, stop_token_ids=[])
    cut = engine.generate(memory, mode="ae", max_new_tokens=6, stop_token_ids=[full[0][2]])
    assert cut[0] == full[0][: full[0].index(full[0][2])]  # stops before its stop token, which is not returned
    seen = []
    rows = [engine.decoder_row(memory, i, "ae", torch.zeros(0, dtype=torch.long)) for i in range(2)]
    from icae.models.decoding import SamplingParams

    out = engine.decode_rows(rows, SamplingParams.of(max_new_tokens=6, stop_token_ids=[]),
                             on_token=lambda r, t: seen.append((r, t)) or (r == 1 and len(seen) >= 1))
    assert out[0] == full[0] and out[1] == full[1][:1]  # row 1 ended by the callback after its first token
    assert runtime.free_sequences == 2


def test_kept_history_across_turns_equals_whole_history(pair):
    model, engine, _ = pair
    engine.runtime = runtime = TorchRuntime(model, n_seq_max=3)  # two kept histories and one pass at a time
    tok = model.tokenize
    turn1 = [Span(tok(["user: look\n"])[0]), Span(tok([TEXTS[2]])[0], compress=True), Span(tok(["bot:"])[0])]
    turn2 = [Span(tok([" ok\n"])[0]), Span(tok([TEXTS[0]])[0], compress=True), Span(tok(["bot:"])[0])]
    think = [Span(tok(["<think></think>"])[0])]
    sampling = dict(max_new_tokens=4, stop_token_ids=[])
    with torch.no_grad():
        ref1, _ = model.generate_spans([turn1], cache={}, **sampling)
        ref2, _ = model.generate_spans([turn1 + turn2], cache={}, **sampling)
        ref_think, _ = model.generate_spans([turn1 + think], cache={}, **sampling)
    got, counts = engine.generate_spans([turn1 + turn2, turn1], cache={}, **sampling)
    assert got == [ref2[0], ref1[0]] and counts == {"compressed": 2, "cache_hits": 1}
    cache = {}
    ids1, state1, _ = engine.generate_incremental(None, turn1, cache, **sampling)
    ids_t, state_t, _ = engine.generate_incremental(None, turn1, cache, transient=think, **sampling)
    assert ids1 == ref1[0] and ids_t == ref_think[0]
    assert state_t.length == state1.length == len(runtime.history[state1.lane])  # the think block is not kept
    state_t.release()
    ids2, state2, counts2 = engine.generate_incremental(state1, turn2, cache, **sampling)
    assert ids2 == ref2[0] and counts2 == {"compressed": 1, "cache_hits": 0}
    assert len(runtime.history[state2.lane]) == state2.length  # generated tokens are not kept
    assert runtime.free_sequences == 1  # state1 and state2 hold theirs: a history lives as long as its state
    state2.release()
    again, state3, _ = engine.generate_incremental(state1, turn2, cache, **sampling)  # the older state is whole
    assert again == ids2
    state1.release(), state3.release()
    assert runtime.free_sequences == 3


def test_sampling_draws_from_the_engines_sampler_with_its_seed(pair):
    _, engine, _ = pair
    memory = engine.compress(TEXTS[:1])
    a = engine.generate(memory, mode="ae", max_new_tokens=6, do_sample=True, seed=3, stop_token_ids=[])
    b = engine.generate(memory, mode="ae", max_new_tokens=6, do_sample=True, seed=3, stop_token_ids=[])
    c = engine.generate(memory, mode="ae", max_new_tokens=6, do_sample=True, seed=4, stop_token_ids=[])
    assert a == b and len(a[0]) == 6
    assert a != c or a != engine.generate(memory, mode="ae", max_new_tokens=6, do_sample=True, seed=5,
                                          stop_token_ids=[])


def test_an_export_loads_and_computes_like_its_checkpoint(tmp_path, monkeypatch):
    """From a GGUF export directory (manifest, tokenizer, embeddings, the GGUF's token table) to generations equal to
    the checkpoint's, with only the llama.cpp compute replaced by the double."""
    pytest.importorskip("gguf", reason="the gguf package is not installed: pip install -e '.[engines]'")
    from icae.engines import llamacpp
    from icae.engines.gguf_export import export_gguf
    from icae.errors import UserError
    from icae.models import ICAE
    from tests.conftest import small_config

    overrides = dict(fixed_mem_size=4, use_position_identifiers=True, freeze_decoder=False)
    model = make_model("tiny-qwen2", **overrides)
    model.save_pretrained(tmp_path / "ckpt", small_config("tiny-qwen2", **overrides))
    out = export_gguf(tmp_path / "ckpt", tmp_path / "gguf", types=("f32", "q8_0"))
    seen = {}

    def runtime(path, adapters, options):
        seen.update(path=path.name, adapters=sorted(adapters), kv_f32=options.kv_f32)
        return TorchRuntime(model, n_seq_max=options.n_seq_max)

    monkeypatch.setattr(llamacpp, "LlamaRuntime", runtime)
    engine = ICAE.from_pretrained(out, backend="llamacpp")
    assert seen == {"path": "base-f32.gguf", "adapters": ["decoder", "encoder"], "kv_f32": True}
    with torch.no_grad():
        ref = model.reconstruct(TEXTS[:2], max_new_tokens=6)
    assert engine.reconstruct(TEXTS[:2], max_new_tokens=6) == ref
    q8 = ICAE.from_pretrained(out, backend="llamacpp", weights="q8_0")
    assert seen["path"] == "base-q8_0.gguf" and not seen["kv_f32"]
    assert not torch.equal(q8.embed(torch.tensor([5])), engine.embed(torch.tensor([5])))  # its own, quantized table
    with pytest.raises(UserError, match="no 'q4_k' weights"):
        ICAE.from_pretrained(out, backend="llamacpp", weights="q4_k")
    with pytest.raises(UserError, match=r"unknown options \['n_thread'\]"):
        ICAE.from_pretrained(out, backend="llamacpp", n_thread=2)
    assert ICAE.from_pretrained(out, backend="llamacpp", n_threads=1, n_seq_max=3).runtime.free_sequences == 3
