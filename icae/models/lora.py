"""LoRA adapters on a base causal LM, shared by ICAE (encoder adapter, optional decoder adapter) and SimpleLLM.

Every adapter lives on the same base weights (one copy in memory); :func:`route` chooses which one the LoRA layers
apply, without touching which adapters train.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn

from icae.config import ModelArguments
from icae.errors import UserError

ENCODER_ADAPTER, DECODER_ADAPTER = "default", "decoder"


def lora_config(args: ModelArguments):
    from peft import LoraConfig

    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=list(args.lora_target_modules), bias="none", task_type="CAUSAL_LM")


def check_targets(model: nn.Module, targets) -> None:
    """Every LoRA target must name a module of the model; the error lists the linear modules it has."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise UserError(f"lora_target_modules {missing} not found in {type(model).__name__}; its linear modules: "
                        f"{linear}")


def add_lora(base_model: nn.Module, args: ModelArguments, adapters: tuple[str, ...] = (ENCODER_ADAPTER,)):
    """Freeze ``base_model`` and wrap it in a peft model with one LoRA adapter per name in ``adapters`` (the first is
    peft's active one). Every adapter's weights are float32 and require a gradient; callers freeze what they must."""
    from peft import get_peft_model

    check_targets(base_model, args.lora_target_modules)
    for p in base_model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing: not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base_model, lora_config(args), adapter_name=adapters[0])
    for name in adapters[1:]:
        model.add_adapter(name, lora_config(args))  # added inactive and frozen: trainability is set below
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
    return model


def adapter_parameters(model: nn.Module, adapter: str) -> Iterator[tuple[str, torch.Tensor]]:
    return ((n, p) for n, p in model.named_parameters() if "lora_" in n and f".{adapter}." in n)


def lora_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "_active_adapter")]


@contextlib.contextmanager
def route(layers: list[nn.Module], adapter: str):
    """Route every LoRA layer through ``adapter`` alone, for the duration of the block.

    peft's ``set_adapter`` would also change which adapter requires a gradient (it freezes the inactive ones), but the
    encoder's and the decoder's adapters train together: only the routing may change, so each layer's active adapter
    is set directly.
    """
    before = [layer._active_adapter for layer in layers]
    for layer in layers:
        layer._active_adapter = [adapter]
    try:
        yield
    finally:
        for layer, active in zip(layers, before):
            layer._active_adapter = active
