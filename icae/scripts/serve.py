"""Serve a compressor to agents over the OpenAI chat-completions protocol.

    icae serve --config_path icae/configs/serve_tiny.yaml [restore_from=...] [--host 127.0.0.1 --port 8000]
    python -m icae.serve --config_path icae/configs/serve_tiny.yaml

Config -> the model (``restore_from``: a checkpoint, a shipped compressor such as ``tiny-icae-4x``, an original-tool
file; ``model_type: llm`` serves SimpleLLM for A/B runs) -> the engine (caches, batching) -> uvicorn. Point any
OpenAI client at ``http://HOST:PORT/v1`` with the model name the server prints. See docs/serve.md.
"""

from __future__ import annotations

import torch

from icae.config import config_from_cli
from icae.models import build_model
from icae.scripts import entry


def build(config):
    """(engine, served model name) for ``config``: loads the model (the slow part) and starts the worker."""
    from icae.serve.engine import Engine

    if config.serve.torch_threads:
        torch.set_num_threads(config.serve.torch_threads)  # process-wide: the engine's worker thread uses it too
    torch.manual_seed(config.seed)
    model = build_model(config)
    model.freeze_for_inference()
    s = config.serve
    name = s.served_model_name or str(config.model.restore_from or config.model.model_name_or_path).rstrip("/")
    engine = Engine(model, config, s.max_batch_size, s.slot_cache_mb, s.max_conversations, s.default_max_tokens)
    return engine, name


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from icae.serve.app import create_app

    config = config_from_cli(argv, description=__doc__)
    engine, name = build(config)
    print(f"serving {name!r} ({config.model.model_type}) at http://{config.serve.host}:{config.serve.port}/v1", flush=True)
    uvicorn.run(create_app(engine, name), host=config.serve.host, port=config.serve.port, log_level="warning")


if __name__ == "__main__":
    entry(main)
