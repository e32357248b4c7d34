"""Building a compressor from a config, or from a checkpoint directory, whichever class its model_type names."""

from __future__ import annotations

from pathlib import Path

from icae.config import Config, ModelArguments
from icae.models.base import CompressorBase
from icae.models.checkpoint import checkpoint_config
from icae.models.framing import Layout
from icae.models.icae import ICAE
from icae.models.simple_llm import SimpleLLM

MODEL_CLASSES: dict[str, type[CompressorBase]] = {"icae": ICAE, "llm": SimpleLLM}


def layout_for(args: ModelArguments, tokenizer) -> Layout:
    """The layout a model of config ``args`` has (``model.layout``), built before the model is loaded: what a data
    loader reads (:mod:`icae.models.framing`)."""
    return MODEL_CLASSES[args.model_type].make_layout(args, tokenizer)


def build_model(config: Config) -> CompressorBase:
    """ICAE or SimpleLLM per ``model_type``, with ``restore_from`` loaded if set."""
    return MODEL_CLASSES[config.model.model_type].from_config(config)


def load_checkpoint(directory: str | Path, **overrides) -> CompressorBase:
    """Load a checkpoint written by ``save_pretrained`` (its saved config, plus ``overrides`` that keep its meaning)."""
    model_type = checkpoint_config(directory, overrides).model.model_type
    return MODEL_CLASSES[model_type].from_pretrained(directory, **overrides)
