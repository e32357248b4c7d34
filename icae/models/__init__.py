"""Model code: ICAE, the SimpleLLM baseline, and loading helpers (no data, no training loops)."""

from __future__ import annotations

from pathlib import Path

from icae.config import Config, load_config
from icae.models.base import (
    CONFIG_NAME,
    CompressorBase,
    CompressorOutput,
    Memory,
    Span,
    load_trained_tensors,
)
from icae.models.icae import ICAE
from icae.models.loading import build_tiny_model, load_base_model
from icae.models.simple_llm import SimpleLLM


def build_model(config: Config) -> CompressorBase:
    """ICAE or SimpleLLM per ``model_type``, with ``restore_from`` loaded if set."""
    cls = ICAE if config.model.model_type == "icae" else SimpleLLM
    return cls.from_config(config)


def load_checkpoint(directory: str | Path, **overrides) -> CompressorBase:
    """Load a checkpoint written by ``save_pretrained``: its saved config (plus ``overrides``) and trained tensors."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{directory} is not an icae checkpoint (no {CONFIG_NAME})")
    config = load_config(directory / CONFIG_NAME, {**overrides, "restore_from": None})
    model = build_model(config)
    model.load_trainable_state_dict(load_trained_tensors(directory))
    return model


__all__ = [
    "ICAE",
    "SimpleLLM",
    "Memory",
    "Span",
    "CompressorBase",
    "CompressorOutput",
    "build_model",
    "load_checkpoint",
    "build_tiny_model",
    "load_base_model",
]
