"""icae: learned context compression (In-Context AutoEncoder) for LLM agents.

    from icae import ICAE, SimpleLLM, load_config
    config = load_config("icae/configs/pretrain_tiny_qwen2.yaml")
    model = ICAE.from_config(config)
    memory = model.compress(["def f(x):\n    return x + 1\n"])   # Memory: slots (batch, n_slots, hidden)
    model.reconstruct(["def f(x):\n    return x + 1\n"])
"""

from icae.config import Config, ConfigError, ModelArguments, TaskArguments, load_config
from icae.models import (
    ICAE,
    CompressorOutput,
    Memory,
    SimpleLLM,
    Span,
    build_model,
    build_tiny_model,
    load_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "ICAE",
    "SimpleLLM",
    "Memory",
    "Span",
    "CompressorOutput",
    "Config",
    "ConfigError",
    "ModelArguments",
    "TaskArguments",
    "load_config",
    "build_model",
    "load_checkpoint",
    "build_tiny_model",
]
