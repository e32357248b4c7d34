"""icae: learned context compression (In-Context AutoEncoder) for LLM agents.

    from icae import ICAE, SimpleLLM, load_config
    config = load_config("icae/configs/pretrain_tiny_qwen2.yaml")
    model = ICAE.from_config(config)
    memory = model.compress(["def f(x):\n    return x + 1\n"])   # Memory: slots (batch, n_slots, hidden)
    model.reconstruct(["def f(x):\n    return x + 1\n"])
"""

from icae.config import Config, ConfigError, ModelArguments, load_config
from icae.errors import UserError
# The models (and torch) load on first use, so that `import icae.config`, `icae.agent` or `icae.data.*` stays light.
_MODELS = ("ICAE", "CheckpointError", "CompressorOutput", "Memory", "SamplingParams", "SimpleLLM", "Span",
           "build_model", "build_tiny_model", "load_checkpoint")


def __getattr__(name: str):
    if name in _MODELS:
        import icae.models

        return getattr(icae.models, name)
    raise AttributeError(f"module 'icae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODELS))


__version__ = "0.2.0"

__all__ = [
    "ICAE", "SimpleLLM", "Memory", "Span", "CompressorOutput", "SamplingParams", "Config", "ConfigError",
    "CheckpointError", "UserError", "ModelArguments", "load_config", "build_model", "load_checkpoint",
    "build_tiny_model",
]
