"""``icae serve --backend llamacpp``'s engine: served tokens equal the PyTorch model's on the same history, a turn
that extends a served one continues its kept llama.cpp sequence, rows decoded together equal rows alone, and a
cancelled request stops at the next token. Over the runtime double of tests/engines/fakes.py (no llama.cpp)."""

import queue

import pytest
import torch

from icae.models import Span
from icae.models.decoding import SamplingParams
from icae.serve.engine import Job
from tests.conftest import make_model, small_config
from tests.engines.fakes import TorchRuntime, engine_for
from tests.serve.test_engine import finish  # the same wait-for-the-end helper

OBS = list(range(100, 140))  # 40 tokens: 12 slots at k=4, rate 4


def history(*tail):
    return [Span([1, 2, 3, 4]), Span(OBS, compress=True), Span([5, 6]), *[Span(t) for t in tail]]


@pytest.fixture(scope="module")
def served_pair():
    from icae.engines.llamacpp_serve import LlamaCppEngine

    model = make_model("tiny-qwen2", fixed_mem_size=4, use_position_identifiers=True, freeze_decoder=False)
    engine = engine_for(model, TorchRuntime(model, n_seq_max=8))
    return model, LlamaCppEngine(engine, small_config("tiny-qwen2"), 3, 16.0, 4, 16)


def make_job(spans, max_tokens, positions, emit=None) -> Job:
    events: queue.Queue = queue.Queue()
    params = SamplingParams(max_new_tokens=max_tokens, stop_token_ids=())
    job = Job(spans, [], params, [], None, events.put, sum(s.ids.numel() for s in spans), positions)
    job.emit = (lambda e: (emit(job, e), events.put(e))) if emit else events.put
    job.events = events
    return job


def test_served_tokens_equal_pytorch_and_a_next_turn_continues_the_kept_history(served_pair):
    model, engine = served_pair
    first, second = history([7, 8, 9]), history([7, 8, 9], [10, 11], [12])
    with torch.no_grad():
        ref, _ = model.generate_spans([first, second], cache={}, max_new_tokens=5, stop_token_ids=[])
    positions = lambda spans: sum(model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in spans)
    job = make_job(first, 5, positions(first))
    engine.submit(job)
    finish(job)
    assert job.ids == ref[0] and job.finish == "length" and job.stats["reused_positions"] == 0
    assert job.stats["compressed_observations"] == 1
    nxt = make_job(second, 5, positions(second))
    engine.submit(nxt)
    finish(nxt)
    assert nxt.ids == ref[1]
    assert nxt.stats["prefix_cache_hit"] and nxt.stats["reused_positions"] == positions(first)
    assert nxt.stats["prefilled_positions"] == 3 and nxt.stats["slot_cache_hits"] == 0  # only [10, 11] and [12]
    assert len(engine.histories) == 2


def test_rows_decoded_together_equal_rows_alone_and_cancel_stops_at_the_next_token(served_pair):
    model, engine = served_pair
    rows = [history([20 + i]) for i in range(3)]
    with torch.no_grad():
        ref = [model.generate_spans([r], cache={}, max_new_tokens=4, stop_token_ids=[])[0][0] for r in rows]
    at = {}

    def cancel(job, event):
        if event and len(job.ids) >= 2 and not job.cancelled.is_set():
            job.cancelled.set()
            at["tokens"] = len(job.ids)

    jobs = [make_job(r, 4, 0) for r in rows[:2]] + [make_job(rows[2], 4, 0, emit=cancel)]
    for job in jobs:
        engine.submit(job)
    for job in jobs:
        finish(job)
    assert [j.ids for j in jobs[:2]] == ref[:2]
    assert jobs[2].finish == "cancelled" and len(jobs[2].ids) == at["tokens"] and jobs[2].ids == ref[2][:at["tokens"]]
    assert engine.metrics.counters["cancelled_total"] >= 1


def test_build_exports_the_configured_checkpoint_once_and_serves_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf", reason="the gguf package is not installed: pip install -e '.[engines]'")
    from icae.engines import llamacpp
    from icae.engines.llamacpp_serve import build
    from icae.errors import UserError

    overrides = dict(fixed_mem_size=4, use_position_identifiers=True, freeze_decoder=False)
    model = make_model("tiny-qwen2", **overrides)
    model.save_pretrained(tmp_path / "ckpt", small_config("tiny-qwen2", **overrides))
    made = []
    monkeypatch.setattr(llamacpp, "LlamaRuntime",
                        lambda path, adapters, options: made.append(options) or TorchRuntime(model, options.n_seq_max))
    config = small_config("tiny-qwen2", restore_from=str(tmp_path / "ckpt"), **overrides)
    engine, name = build(config)
    assert name == str(tmp_path / "ckpt") and made[0].n_seq_max == config.serve.max_batch_size + \
        config.serve.max_conversations + 1
    first = history([7, 8, 9])
    with torch.no_grad():
        ref, _ = model.generate_spans([first], cache={}, max_new_tokens=4, stop_token_ids=[])
    job = make_job(first, 4, 0)
    engine.submit(job)
    assert finish(job).ids == ref[0]
    import os
    from pathlib import Path

    assert capsys.readouterr().out.count("exporting") == 1
    build(config)  # the second build finds the export
    assert len(made) == 2 and "exporting" not in capsys.readouterr().out
    assert len(list((Path(os.environ["ICAE_HOME"]) / "gguf").glob("ckpt-*"))) == 1
    with pytest.raises(UserError, match="--gguf DIR"):
        build(small_config("tiny-qwen2"))


def test_serve_flags_choose_the_engine(capsys):
    from icae.cli import main
    from icae.scripts.serve import config_from_args

    flags = {}
    config = config_from_args(["--config_path", "icae/configs/serve_tiny.yaml", "--backend", "llamacpp", "--weights",
                               "q8_0", "--port", "9123"], flags)
    assert flags == {"backend": "llamacpp", "weights": "q8_0"} and config.serve.port == 9123
    assert main(["serve", "--config_path", "icae/configs/serve_tiny.yaml", "--gguf", "somewhere"]) == 2
    assert "add --backend llamacpp" in capsys.readouterr().err


def test_the_app_serves_a_conversation_on_the_llamacpp_engine(monkeypatch):
    """The OpenAI-compatible app over the llama.cpp engine (the shipped compressor, exported; the double's compute):
    the observation is compressed, and the next turn continues the first one's kept history."""
    pytest.importorskip("gguf", reason="the gguf package is not installed: pip install -e '.[engines]'")
    from fastapi.testclient import TestClient

    from icae.config import load_config
    from icae.engines import llamacpp
    from icae.engines.llamacpp_serve import build
    from icae.models import load_checkpoint
    from icae.serve.app import create_app

    config = load_config("icae/configs/serve_tiny.yaml")
    model = load_checkpoint("tiny-icae-4x", train=False)
    monkeypatch.setattr(llamacpp, "LlamaRuntime", lambda path, adapters, options: TorchRuntime(model, 4))
    config = config.replace(max_batch_size=2, max_conversations=1)
    engine, name = build(config)
    client = TestClient(create_app(engine, name))
    tool = "def f(x):\n    return [i * x for i in range(10) if i % 2]\n" * 3
    messages = [{"role": "user", "content": "fix f"}, {"role": "tool", "content": tool}]
    out = client.post("/v1/chat/completions", json={"model": name, "messages": messages, "max_tokens": 6,
                                                    "temperature": 0}).json()
    usage = out["usage"]["compression"]
    assert usage["compressed_observations"] == 1 and usage["tokens_saved"] > 0
    messages += [{"role": "assistant", "content": out["choices"][0]["message"]["content"] or "ok"},
                 {"role": "user", "content": "and now?"}]
    again = client.post("/v1/chat/completions", json={"model": name, "messages": messages, "max_tokens": 6,
                                                      "temperature": 0}).json()
    second = again["usage"]["compression"]
    assert second["reused_positions"] >= usage["decoder_positions"] and second["compressed_observations"] == 0
    assert second["prefilled_positions"] == second["decoder_positions"] - second["reused_positions"]
