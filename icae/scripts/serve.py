"""Serve a compressor to agents over the OpenAI chat-completions protocol.

    icae serve --config_path icae/configs/serve_tiny.yaml [restore_from=...] [--host 127.0.0.1 --port 8000]
    python -m icae.serve --config_path icae/configs/serve_tiny.yaml
    icae serve --help          every config key, as --key VALUE (or key=VALUE)
    icae serve --config_path icae/configs/serve_tiny.yaml --backend llamacpp [--gguf DIR] [--weights q8_0]

Config -> the model (``restore_from``: a checkpoint, a shipped compressor such as ``tiny-icae-4x``, an original-tool
file; ``model_type: llm`` serves SimpleLLM for A/B runs) -> the engine (caches, batching) -> uvicorn. Point any
OpenAI client at ``http://HOST:PORT/v1`` with the model name the server prints. See docs/serve.md.
"""

from __future__ import annotations

import torch

from icae.config import SECTIONS, TrainingKeys, load_config
from icae.models import build_model
from icae.scripts import entry

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parser():
    """``--config_path`` and every config key as a flag (grouped by section, with its help), for ``--help``; values
    are read as in YAML, and ``key=value`` overrides work too."""
    import argparse
    import dataclasses

    p = argparse.ArgumentParser(prog="icae serve", usage="icae serve [--config_path FILE] [--KEY VALUE | KEY=VALUE ...]",
                                description=__doc__, argument_default=argparse.SUPPRESS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", default=None, help="YAML config file (see icae/configs/).")
    engine = p.add_argument_group("engine (docs/engines.md)")
    engine.add_argument("--backend", choices=["torch", "llamacpp"], help="torch (default) or llamacpp")
    engine.add_argument("--gguf", metavar="DIR", help="--backend llamacpp: a GGUF export (icae export --format gguf); "
                        "default: restore_from, exported once into $ICAE_HOME/gguf")
    engine.add_argument("--weights", choices=["f32", "f16", "q8_0", "q4_k"], help="--backend llamacpp: weight type "
                        "(default f32)")
    sections = {**SECTIONS, "training": TrainingKeys}
    for name in ["serve", *[s for s in sections if s != "serve"]]:
        group = p.add_argument_group(f"{name} keys")
        for f in dataclasses.fields(sections[name]):
            if f.name == "extra":
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            group.add_argument(f"--{f.name}", metavar="VALUE",
                               help=f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%"))
    return p


ENGINE_FLAGS = ("backend", "gguf", "weights")


def config_from_args(argv: list[str] | None, engine: dict | None = None):
    """The config; ``engine``, if given, receives the engine flags (``ENGINE_FLAGS``) that were set."""
    import sys

    args, rest = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    given = vars(args)
    path = given.pop("config_path", None)
    for key in ENGINE_FLAGS:
        if key in given and engine is not None:
            engine[key] = given.pop(key)
        given.pop(key, None)
    return load_config(path, [f"{key}={value}" for key, value in given.items()] + rest)


def exposure_warning(config) -> str | None:
    """What to say when the server listens beyond this machine with no API key (None: nothing to say)."""
    if config.serve.host in LOOPBACK or api_key_of(config):
        return None
    return (f"warning: serving on {config.serve.host} without an API key: anyone who can reach this port can use the "
            "model; set api_key (or ICAE_API_KEY)")


def api_key_of(config):
    import os

    return config.serve.api_key or os.environ.get("ICAE_API_KEY") or None


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
    engine = Engine(model, config, s.max_batch_size, s.slot_cache_mb, s.max_conversations, s.default_max_tokens,
                    prefix_cache_mb=s.prefix_cache_mb)
    return engine, name


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from icae.serve.app import create_app

    import sys

    flags: dict = {}
    config = config_from_args(argv, flags)
    if flags.get("backend", "torch") != "llamacpp" and ({"gguf", "weights"} & set(flags)):
        from icae.errors import UserError

        raise UserError("--gguf and --weights choose the llama.cpp engine's files: add --backend llamacpp")
    warning = exposure_warning(config)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if flags.get("backend") == "llamacpp":
        from icae.engines.llamacpp_serve import build as build_llamacpp

        engine, name = build_llamacpp(config, flags.get("gguf"), flags.get("weights", "f32"))
    else:
        engine, name = build(config)
    print(f"serving {name!r} ({config.model.model_type}) at http://{config.serve.host}:{config.serve.port}/v1", flush=True)
    uvicorn.run(create_app(engine, name, api_key_of(config)), host=config.serve.host, port=config.serve.port, log_level="warning")


if __name__ == "__main__":
    entry(main)
