"""``icae serve --backend llamacpp`` with the real llama.cpp: the shipped tiny-icae-4x, exported, answers an agent
conversation over the openai client with the replies the PyTorch server gives, and the second turn continues the
first one's kept llama.cpp sequence.

Runs where llama-cpp-python is importable (`make llamacpp`, then `.engines/llamacpp/bin/python -m pytest
tests/engines`); skipped elsewhere, with that reason.
"""

import threading
import time

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed here: `make llamacpp`, then run "
                                        "`.engines/llamacpp/bin/python -m pytest tests/engines`")
pytest.importorskip("gguf", reason="the gguf package is not installed")
openai = pytest.importorskip("openai", reason="the openai client is not installed")

TOOL = "".join(f"src/pkg/module_{i}.py:{12 * i}:    def handler_{i}(self, request):\n" for i in range(10))


def _serve(engine, name):
    """A uvicorn server over ``engine`` on a free port, in a thread; returns (server, openai client)."""
    import socket

    import uvicorn

    from icae.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine, name), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    return server, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)


def _conversation(client, name):
    """Two agent turns, each after a tool output; returns (replies, compression usage per turn)."""
    messages = [{"role": "system", "content": "You are a coding agent."},
                {"role": "user", "content": "Where is the request handled?"},
                {"role": "assistant", "content": "grep -n handler src/pkg"},
                {"role": "tool", "content": TOOL}]
    replies, usages = [], []
    for follow_up in ("and module_3?", None):
        out = client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
        replies.append(out.choices[0].message.content)
        usages.append(out.usage.model_extra["compression"])
        if follow_up:
            messages += [{"role": "assistant", "content": replies[-1] or "ok"}, {"role": "user", "content": follow_up},
                         {"role": "assistant", "content": "grep -n handler_3 src/pkg"},
                         {"role": "tool", "content": TOOL.replace("handler", "route")}]
    return replies, usages


def test_served_conversation_equals_the_pytorch_server(tmp_path):
    from icae.config import load_config
    from icae.engines.gguf_export import export_gguf
    from icae.engines.llamacpp_serve import build as build_llamacpp
    from icae.scripts.serve import build as build_torch

    config = load_config("icae/configs/serve_tiny.yaml").replace(max_batch_size=2, max_conversations=2)
    export = export_gguf("tiny-icae-4x", tmp_path / "gguf", types=("f32",))
    servers = []
    try:
        results = {}
        for backend, (engine, name) in (("torch", build_torch(config)),
                                        ("llamacpp", build_llamacpp(config, str(export), "f32"))):
            server, client = _serve(engine, name)
            servers.append(server)
            results[backend] = _conversation(client, name)
    finally:
        for server in servers:
            server.should_exit = True
    (torch_replies, torch_usage), (replies, usage) = results["torch"], results["llamacpp"]
    assert replies == torch_replies and all(r for r in replies), (replies, torch_replies)
    assert [u["compressed_observations"] for u in usage] == [1, 1]  # each turn's new tool output, once
    assert usage[0]["tokens_saved"] > 0
    # the second turn continues the first one's kept sequence: only what is new is prefilled
    assert usage[1]["reused_positions"] >= usage[0]["decoder_positions"]
    assert usage[1]["prefilled_positions"] == usage[1]["decoder_positions"] - usage[1]["reused_positions"]
    assert [u["decoder_positions"] for u in usage] == [u["decoder_positions"] for u in torch_usage]
