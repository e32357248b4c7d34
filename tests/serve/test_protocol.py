"""The OpenAI protocol of ``icae serve`` for agents, with the real ``openai`` client against a live server.

The model is a stand-in agent (tests/serve/toolmodel.py): a tiny Qwen2 overfit to answer every assistant turn with
a Hermes tool call of ``bash`` when tools are offered and a fenced command otherwise, so the replies parsed here are
tokens the server really decoded; the expected values are the stand-in's fixed replies.
"""

import json
import subprocess
import threading
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from icae.config import load_config
from icae.models import build_model
from icae.serve.app import create_app
from icae.serve.engine import Engine
from tests.serve import toolmodel
from tests.serve.test_server import free_port

ASSET = Path(__file__).parent / "assets" / "standin"
TOOLS = [toolmodel.BASH_TOOL]
TASK = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": "Task: list the sources."}]
OUTPUT = "\n".join(f"-rw-r--r-- 1 user user {100 * i} Nov 30 src/module_{i}.py" for i in range(7))
HISTORY = TASK + [
    {"role": "assistant", "content": "Listing the sources.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls -la src"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": OUTPUT},
]
COMMAND = {"command": toolmodel.COMMAND}


class Live:
    """A server on 127.0.0.1 with the stand-in model; ``overrides``: config keys."""

    def __init__(self, api_key=None, **overrides):
        torch.manual_seed(0)
        self.config = load_config(None, {
            "model_name_or_path": str(standin_path()), "model_type": "icae", "fixed_mem_size": 4,
            "mean_compression_rate": 4, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
            "min_tokens_to_compress": 16, "use_position_identifiers": True, "train": False, "model_max_length": 1024,
            **overrides})
        self.model = build_model(self.config).eval()
        self.engine = Engine(self.model, self.config, 4, 16.0, 8, self.config.serve.default_max_tokens)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.engine, "agent", api_key), host="127.0.0.1",
                                                   port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or "unused", max_retries=0, timeout=60)

    def chat(self, messages, **kw):
        kw.setdefault("temperature", 0)
        kw.setdefault("max_tokens", 60)
        return self.client.chat.completions.create(model="agent", messages=messages, **kw)

    def post(self, body: dict, **kw):
        return httpx.post(self.url + "/v1/chat/completions", json={"model": "agent", **body}, timeout=60, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def standin_path() -> Path:
    """The committed stand-in (tests/serve/toolmodel.py; its standin.json says how it was trained)."""
    if not (ASSET / "standin.json").is_file():
        pytest.skip(f"the stand-in agent model is missing from {ASSET}: python -m tests.serve.toolmodel {ASSET} both")
    return ASSET


@pytest.fixture(scope="module")
def live():
    server = Live()
    yield server
    server.stop()


def arguments(call) -> dict:
    return json.loads(call.function.arguments)


# ------------------------------------------------------------------------------------------------- tool calls
def test_a_tool_call_in_the_reply_comes_back_as_tool_calls(live):
    out = live.chat(TASK, tools=TOOLS)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Listing the sources."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "bash" and arguments(call) == COMMAND
    assert call.id.startswith("call_")


def test_tool_calls_in_the_history_and_tool_results_are_rendered_and_compressed(live):
    out = live.chat(HISTORY, tools=TOOLS)
    assert out.choices[0].finish_reason == "tool_calls" and arguments(out.choices[0].message.tool_calls[0]) == COMMAND
    compression = out.model_dump()["usage"]["compression"]
    assert compression["decoder_positions"] < out.usage.prompt_tokens  # the tool result became slots
    # the reply goes back into the history as the client keeps it, and the next turn is served as well
    turn = out.choices[0].message.model_dump(exclude_none=True)
    again = live.chat(HISTORY + [turn, {"role": "tool", "tool_call_id": turn["tool_calls"][0]["id"],
                                        "content": OUTPUT.replace("src", "lib")}], tools=TOOLS)
    assert again.choices[0].finish_reason == "tool_calls"
    assert again.model_dump()["usage"]["compression"]["tokens_saved"] > compression["tokens_saved"]


def test_streaming_sends_the_same_content_and_tool_calls(live):
    whole = live.chat(HISTORY, tools=TOOLS).choices[0]
    chunks = list(live.chat(HISTORY, tools=TOOLS, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert content == whole.message.content and "<tool_call>" not in content
    assert [(t.index, t.function.name, json.loads(t.function.arguments)) for t in calls] == [(0, "bash", COMMAND)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_renders_no_tools_and_parses_nothing(live):
    out = live.chat(TASK, tools=TOOLS, tool_choice="none").choices[0]
    assert out.message.tool_calls is None and out.finish_reason == "stop"
    assert out.message.content == toolmodel.REPLY["text"]  # the reply the stand-in writes when no tools are offered


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "bash"}}])
def test_tool_choice_required_and_named_begin_the_call_for_the_model(live, choice):
    out = live.chat(TASK, tools=TOOLS, tool_choice=choice).choices[0]
    assert out.finish_reason == "tool_calls" and out.message.content is None  # the call came first: no text
    assert [(c.function.name, arguments(c)) for c in out.message.tool_calls] == [("bash", COMMAND)]


def test_a_call_cut_by_a_stop_string_or_max_tokens_is_returned_as_text(live):
    reply = toolmodel.REPLY["tools"]
    cut = live.chat(TASK, tools=TOOLS, stop=['"}}']).choices[0]
    assert cut.message.tool_calls is None and cut.message.content == reply[:reply.index('"}}')]
    assert cut.finish_reason == "stop"
    short = live.chat(TASK, tools=TOOLS, max_tokens=12).choices[0]
    assert short.message.tool_calls is None and short.finish_reason == "length"
    assert reply.startswith(short.message.content) and len(short.message.content) < len(reply)


def test_a_call_of_a_function_that_was_not_offered_is_text(live):
    grep = {"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}}
    out = live.chat(TASK, tools=[grep]).choices[0]
    if out.message.content and "<tool_call>" in out.message.content:  # the stand-in still calls bash: text, not a call
        assert out.message.tool_calls is None and out.finish_reason == "stop"
    else:
        assert all(c.function.name == "grep" for c in out.message.tool_calls or [])


# ------------------------------------------------------------------------------------------------- observations
def test_user_messages_after_the_first_over_the_threshold_are_observations(live):
    text_agent = TASK + [{"role": "assistant", "content": toolmodel.REPLY["text"]}, {"role": "user", "content": OUTPUT}]
    long_task = [TASK[0], {"role": "user", "content": OUTPUT}]

    def compressed(messages, **extra):
        out = live.chat(messages, extra_body=extra or None)
        return out.model_dump()["usage"]["compression"]["tokens_saved"], out.choices[0].message.content

    assert compressed(long_task, compress_user_min_tokens=16)[0] == 0  # the task itself stays text
    saved, reply = compressed(text_agent, compress_user_min_tokens=16)
    assert saved > 0 and reply == toolmodel.REPLY["text"]
    assert compressed(text_agent, compress_user_min_tokens=None)[0] == 0  # per request: user messages stay text
    assert compressed(text_agent, compress_user_min_tokens=10_000)[0] == 0


def test_an_empty_tool_output_is_accepted(live):
    out = live.chat(HISTORY[:-1] + [{"role": "tool", "tool_call_id": "call_1", "content": ""}], tools=TOOLS)
    assert out.choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------------------------------------- limits
def test_without_max_tokens_the_reply_may_use_the_rest_of_the_window(live):
    from icae.serve.protocol import ChatRequest

    prepared = live.engine.renderer.render(ChatRequest(model="agent", messages=TASK))
    assert prepared.job.params.max_new_tokens == 1024 - prepared.job.positions


def test_a_prompt_over_the_window_without_max_tokens_is_openais_context_error(live):
    r = live.post({"messages": [{"role": "user", "content": "word " * 1100}]})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is 1024 tokens. However, you requested")


def test_litellm_raises_its_context_window_error(live):
    """litellm (in the agent environment of ``make agent-check``) maps this server's context error to
    ContextWindowExceededError, so agents stop or summarise instead of retrying."""
    python = Path(__file__).resolve().parents[2] / ".agents" / "mini-swe-agent" / "bin" / "python"
    if not python.is_file():
        pytest.skip("litellm lives in the agent environment: make agent-check creates it (.agents/mini-swe-agent)")
    script = ("import litellm, sys\n"
              "try:\n"
              f"    litellm.completion(model='openai/agent', api_base='{live.url}/v1', api_key='x', num_retries=0,\n"
              "                       messages=[{'role': 'user', 'content': 'word ' * 1100}])\n"
              "except Exception as e:\n"
              "    print(type(e).__name__)\n")
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "ContextWindowExceededError", out.stderr[-2000:]


def test_a_prompt_over_max_prompt_tokens_is_refused_before_it_is_tokenised():
    server = Live(max_prompt_tokens=200, max_request_mb=0.01)
    try:
        calls = []
        tokenizer = server.engine.renderer.tokenizer
        server.engine.renderer.tokenizer = lambda *a, **k: calls.append(a) or tokenizer(*a, **k)
        r = server.post({"messages": [{"role": "user", "content": "x" * 9000}]})  # >= 9000 / 41 tokens (41: longest token)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert "max_prompt_tokens (200)" in r.json()["error"]["message"] and calls == []
        big = server.post({"messages": [{"role": "user", "content": "x" * 20_000}]})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        chunked = httpx.post(server.url + "/v1/chat/completions", timeout=30,  # no content-length: read and counted
                             content=iter([b'{"model": "agent", "messages": [{"role": "user", "content": "',
                                           b"y" * 20_000, b'"}]}']))
        assert chunked.status_code == 413
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
    finally:
        server.stop()


def test_rendering_runs_off_the_event_loop(live, monkeypatch):
    seen, render = [], live.engine.renderer.render
    monkeypatch.setattr(live.engine.renderer, "render", lambda body: seen.append(threading.current_thread()) or
                        render(body))
    live.chat(TASK, max_tokens=2)
    assert seen and seen[0] is not live.thread  # not the thread whose event loop serves HTTP


@pytest.mark.parametrize("extra, needle", [
    ({"presence_penalty": 0.5}, "presence_penalty and frequency_penalty are not implemented"),
    ({"logit_bias": {"5": 1.0}}, "logit_bias is not implemented"),
    ({"response_format": {"type": "json_object"}}, "response_format 'json_object' is not implemented"),
    ({"top_k": 5}, "top_k is not a parameter this server knows"),
    ({"tool_choice": "auto"}, "tool_choice is only allowed when tools are specified"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "grep"}}}, "which is not in tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "a function name is 1-64"),
    ({"seed": 2**64}, "seed"),
    ({"top_logprobs": 3}, "top_logprobs needs logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "content"),
])
def test_parameters_the_server_does_not_implement_are_a_clear_400(live, extra, needle):
    r = live.post({"messages": TASK, **extra})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_a_seed_at_the_edge_of_the_range_is_served(live):
    assert live.chat(TASK, seed=2**64 - 1, temperature=1.0, max_tokens=3).choices[0].finish_reason


# ------------------------------------------------------------------------------------------------- access, models
def test_models_report_the_context_window_and_unknown_ids_are_404(live):
    [card] = live.client.models.list().data
    assert card.id == "agent" and card.model_dump()["max_model_len"] == 1024
    assert live.client.models.retrieve("agent").model_dump()["max_model_len"] == 1024
    with pytest.raises(openai.NotFoundError):
        live.client.models.retrieve("other")


def test_an_api_key_is_checked_and_cors_origins_are_allowed():
    server = Live(api_key="s3cret", cors_origins=["http://ui.example"])
    try:
        assert server.chat(TASK, max_tokens=2).choices  # the client sends the key as a Bearer token
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = server.post({"messages": TASK}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(server.url + "/health").status_code == 200  # liveness needs no key
        r = httpx.options(server.url + "/v1/chat/completions", headers={
            "Origin": "http://ui.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "http://ui.example"
        r = httpx.options(server.url + "/v1/chat/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") is None
    finally:
        server.stop()


def test_a_server_failure_is_a_500_and_the_connection_stays_usable(live, monkeypatch):
    def broken(body):
        raise RuntimeError("boom")

    with httpx.Client(base_url=live.url, timeout=60) as client:
        monkeypatch.setattr(live.engine.renderer, "render", broken)
        r = client.post("/v1/chat/completions", json={"model": "agent", "messages": TASK})
        assert r.status_code == 500 and "RuntimeError" in r.json()["error"]["message"] and "boom" not in r.text
        monkeypatch.undo()
        assert client.post("/v1/chat/completions", json={"model": "agent", "messages": TASK, "max_tokens": 2,
                                                          "temperature": 0}).status_code == 200


# ------------------------------------------------------------------------------------------------- logprobs
def test_logprobs_are_the_chosen_tokens_with_their_alternatives(live):
    from icae.serve.engine import Job

    if "logprobs" not in Job.__dataclass_fields__:
        pytest.skip("this engine does not compute per-token logprobs")
    out = live.chat(TASK, tools=TOOLS, tool_choice="none", logprobs=True, top_logprobs=3).choices[0]
    entries = out.logprobs.content
    assert "".join(e.token for e in entries) == out.message.content  # one entry per generated token, in order
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.logprob <= 0
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob  # greedy: the best
        assert bytes(e.bytes).decode() == e.token
    streamed = [e for c in live.chat(TASK, tools=TOOLS, tool_choice="none", logprobs=True, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
