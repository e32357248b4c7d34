"""Model code: ICAE, the SimpleLLM baseline, and what they share (no data, no training loops).

Rooms: ``memory`` (the containers), ``framing`` (the layout objects: native and the original tool's, and
``original``, its arithmetic; ``original_format``, its checkpoint file), ``layouts`` (decoder inputs), ``decoding``
(sampling and the KV-cache loop), ``lora`` (adapters), ``checkpoint`` and ``restore`` (saving and loading),
``segments`` (segment arithmetic),
``loading`` (base models and the built-in tiny ones), ``base`` (the abstract compressor), ``icae``, ``simple_llm``,
``auto`` (by model_type).
"""

from __future__ import annotations

from icae.models.auto import MODEL_CLASSES, build_model, load_checkpoint
from icae.models.base import CompressorBase
from icae.models.checkpoint import CONFIG_NAME, CheckpointError, load_trained_tensors
from icae.models.decoding import SamplingParams
from icae.models.icae import ICAE
from icae.models.loading import build_tiny_model, load_base_model
from icae.models.memory import CompressorOutput, DecoderState, Memory, Span
from icae.models.simple_llm import SimpleLLM

__all__ = [
    "ICAE", "SimpleLLM", "Memory", "Span", "DecoderState", "CompressorBase", "CompressorOutput", "SamplingParams",
    "CheckpointError", "CONFIG_NAME", "MODEL_CLASSES", "build_model", "load_checkpoint", "load_trained_tensors",
    "build_tiny_model", "load_base_model",
]
