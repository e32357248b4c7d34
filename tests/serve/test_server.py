"""A real server on 127.0.0.1 (a free port) with a tiny model, driven by the real openai client."""

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from icae.config import load_config
from icae.data.trajectories import from_messages, render_turns
from icae.models import Span, build_model
from icae.serve.app import create_app
from icae.serve.engine import Engine

TOOL_OUTPUT = "\n".join(f"src/module_{i}.py:{10 * i}: def handler_{i}(request):" for i in range(12))
CONVERSATION = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "Find the handler for route 7."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                                                        "function": {"name": "grep", "arguments": "{\"q\": \"def\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": TOOL_OUTPUT},
    {"role": "assistant", "content": "It is handler_7 in src/module_7.py."},
    {"role": "tool", "content": TOOL_OUTPUT.replace("def", "async def")},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(model_type="icae", base="tiny-qwen2"):
    return load_config(None, {"model_name_or_path": base, "model_type": model_type, "fixed_mem_size": 4,
                              "mean_compression_rate": 4, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                              "min_tokens_to_compress": 16, "use_position_identifiers": True, "train": False,
                              "model_max_length": 2048})


class Server:
    def __init__(self, model_type="icae", max_batch_size=4, max_conversations=8, base="tiny-qwen2"):
        torch.manual_seed(0)
        self.config = tiny_config(model_type, base)
        self.model = build_model(self.config)
        with torch.no_grad():  # a non-trivial adapter, as a trained one would be
            for n, p in self.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        self.model.eval()
        self.engine = Engine(self.model, self.config, max_batch_size, 16.0, max_conversations, 16)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.engine, "tiny"), host="127.0.0.1", port=self.port,
                                                   log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def chat(server, messages, **kw):
    return server.client.chat.completions.create(model="tiny", messages=messages, max_tokens=kw.pop("max_tokens", 6),
                                                 temperature=kw.pop("temperature", 0), **kw)


def reference(server, messages, max_tokens=6) -> list[int]:
    """What generate_spans produces on the same history (rendered the way the server renders it), once the engine's
    worker is idle: it leaves the model's (process-wide) decoder adapter state after it has answered, and a reference
    computed meanwhile would compress with the wrong adapter (a flaky failure, seen under load)."""
    assert server.engine.wait_idle(30)
    model = server.model
    turns = render_turns(model.tokenizer, from_messages(messages, "r"), ["tool"], 16, model.memory_length)
    spans = [s for t in turns for s in t.spans(loss=False)]
    spans.append(Span(model.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]))
    ids, _ = model.generate_spans([spans], max_new_tokens=max_tokens, stop_token_ids=sorted(server.engine.stop_ids))
    return ids[0]


def test_completion_equals_generate_spans_and_reports_compression(server):
    out = chat(server, CONVERSATION[:4])
    expected_ids = [t for t in reference(server, CONVERSATION[:4]) if t not in server.engine.stop_ids]
    expected = server.model.tokenizer.decode(expected_ids, skip_special_tokens=True)
    assert out.choices[0].message.content == expected and out.choices[0].finish_reason in ("stop", "length")
    usage = out.model_dump()["usage"]
    compression = usage["compression"]
    assert compression["decoder_positions"] < usage["prompt_tokens"]  # the tool output became slots
    assert compression["tokens_saved"] == usage["prompt_tokens"] - compression["decoder_positions"]
    assert usage["completion_tokens"] == len(expected_ids)  # generated tokens, the stop token not counted


def test_streaming_gives_the_same_text_in_openai_chunks(server):
    whole = chat(server, CONVERSATION[:2]).choices[0].message.content
    chunks = list(chat(server, CONVERSATION[:2], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_growing_conversation_prefills_only_what_is_new():
    server = Server()
    try:
        first = chat(server, CONVERSATION[:4]).model_dump()["usage"]["compression"]
        second = chat(server, CONVERSATION[:6]).model_dump()
        c = second["usage"]["compression"]
        # Turn 2 reuses turn 1's cache: only the assistant reply, the new observation's slots and the header are new.
        assert c["reused_positions"] == first["decoder_positions"]
        assert c["prefilled_positions"] == c["decoder_positions"] - c["reused_positions"]
        assert c["compressed_observations"] == 1  # only the new observation is compressed
        expected = server.model.tokenizer.decode(reference(server, CONVERSATION[:6]), skip_special_tokens=True)
        assert second["choices"][0]["message"]["content"] == expected
        again = chat(server, CONVERSATION[:4] + [{"role": "tool", "content": TOOL_OUTPUT}]).model_dump()
        assert again["usage"]["compression"]["slot_cache_hits"] >= 1  # the same output seen before: not recompressed
    finally:
        server.stop()


def test_concurrent_clients_get_what_they_would_get_alone(server):
    prompts = [CONVERSATION[:2], CONVERSATION[:4], [{"role": "user", "content": "Say hi."}],
               CONVERSATION[:4] + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "More?"}]]
    alone = [chat(server, p, max_tokens=5 + i).choices[0].message.content for i, p in enumerate(prompts)]
    results = [None] * len(prompts)

    def run(i):
        results[i] = chat(server, prompts[i], max_tokens=5 + i).choices[0].message.content

    before = server.engine.metrics.counters.copy()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone
    after = server.engine.metrics.counters
    batches = after["batches_total"] - before["batches_total"]
    assert after["batched_requests_total"] - before["batched_requests_total"] == 4 and batches < 4  # decoded together


def test_sampling_with_a_seed_is_reproducible(server):
    a = chat(server, CONVERSATION[:2], temperature=1.0, seed=7, max_tokens=8).choices[0].message.content
    b = chat(server, CONVERSATION[:2], temperature=1.0, seed=7, max_tokens=8).choices[0].message.content
    assert a == b


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "role must be one of"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "is not served here"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "   "}]}, 400, "has no content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x " * 1500}], "max_tokens": 1000}, 400,
     "maximum context length is 2048 tokens"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, needle):
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == status
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] and "Traceback" not in r.text


def test_invalid_json_health_models_and_metrics(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert [m.id for m in server.client.models.list()] == ["tiny"]
    chat(server, CONVERSATION[:4])
    text = httpx.get(server.url + "/metrics").text
    values = dict(line.split(" ") for line in text.splitlines() if line and not line.startswith("#"))
    assert int(values["icae_requests_total"]) >= 1 and int(values["icae_tokens_saved_total"]) > 0
    assert int(values['icae_request_latency_seconds_bucket{le="+Inf"}']) == int(values["icae_request_latency_seconds_count"])


def test_the_readme_agent_loop_runs_against_the_server(server, monkeypatch):
    """The README's agent-loop example, run as written (only the URL and model name pointed at this server)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Point an agent at it"):]
    code = section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))]
    code = code.replace("http://127.0.0.1:8000", server.url).replace('model="tiny-icae-4x"', 'model="tiny"')
    assert server.url in code and 'model="tiny"' in code  # the example still has the names it is documented with
    before = server.engine.metrics.counters["requests_total"]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    messages = namespace["messages"]
    assert server.engine.metrics.counters["requests_total"] > before
    assert [m["role"] for m in messages[:3]] == ["system", "user", "assistant"]
    assert all(m["role"] in ("assistant", "tool") for m in messages[2:])


@pytest.mark.parametrize("model_type", ["icae", "llm"])
def test_a_mistral_base_serves_what_generate_spans_gives(model_type):
    server = Server(model_type=model_type, base="tiny-mistral")
    try:
        out = chat(server, CONVERSATION[:4])
        expected = [t for t in reference(server, CONVERSATION[:4]) if t not in server.engine.stop_ids]
        assert out.choices[0].message.content == server.model.tokenizer.decode(expected, skip_special_tokens=True)
        assert out.usage.completion_tokens == len(expected)
        saved = out.model_dump()["usage"]["compression"]["tokens_saved"]
        assert (saved > 0) if model_type == "icae" else (saved == 0)
    finally:
        server.stop()


def test_simple_llm_serves_too():
    server = Server(model_type="llm")
    try:
        out = chat(server, CONVERSATION[:4]).model_dump()
        assert out["usage"]["compression"]["tokens_saved"] == 0  # the full context: nothing saved
        assert json.dumps(out)
    finally:
        server.stop()


def test_a_client_that_disconnects_frees_its_place(server):
    before = server.engine.metrics.counters["cancelled_total"]
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": CONVERSATION[:2], "max_tokens": 1500, "temperature": 0,
                            "stream": True, "stop": ["\u2603"]}) as r:
        next(r.iter_lines())  # the role chunk, then the client goes away
    for _ in range(100):
        if server.engine.metrics.counters["cancelled_total"] > before:
            break
        time.sleep(0.1)
    assert server.engine.metrics.counters["cancelled_total"] == before + 1
    assert chat(server, CONVERSATION[:2]).choices[0].finish_reason in ("stop", "length")  # still serving


def test_torch_threads_sets_the_threads_the_engine_decodes_with():
    from icae.scripts.serve import build

    before = torch.get_num_threads()
    try:
        config = load_config(None, {**tiny_config().to_dict(), "torch_threads": 1})
        engine, _ = build(config)
        seen = []
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # as the engine's worker
        worker.start()
        worker.join()
        assert seen == [1] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match="torch_threads must be >= 1, got 0"):
        load_config(None, {**tiny_config().to_dict(), "torch_threads": 0})


def test_the_engine_says_when_its_worker_is_idle(server, monkeypatch):
    import contextlib

    assert server.engine.wait_idle(30)
    entered, release = threading.Event(), threading.Event()
    real = server.model.decoder_context

    @contextlib.contextmanager
    def held():  # the worker stops inside the decoder state until released
        with real():
            entered.set()
            release.wait(30)
            yield

    monkeypatch.setattr(server.model, "decoder_context", held)
    replies = []
    asking = threading.Thread(target=lambda: replies.append(chat(server, CONVERSATION[:2])))
    asking.start()
    assert entered.wait(30) and not server.engine.wait_idle(0)  # generating: another thread must not run the model
    release.set()
    asking.join(30)
    assert replies and server.engine.wait_idle(30)  # answered and out of the decoder state
