"""Checkpoints of this project: the trained tensors, the resolved config, and what is needed to reload them exactly.

A checkpoint directory holds

- ``model.safetensors``: only what was trained (LoRA adapters, memory and special-token embeddings; never the frozen
  base weights), written atomically;
- ``icae_config.yaml``: the resolved flat config the model was built from;
- ``icae_meta.json``: the model type, the base model's name and *fingerprint* (its architecture, and a hash of a few
  of its weights), and the tensor names and shapes.

Loading refuses what would give silently wrong results: a base model whose fingerprint differs from the one the
tensors were trained on, and overrides of keys that change what the trained tensors mean (``MEANING_KEYS``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from icae.config import Config, ConfigError, load_config
from icae.errors import UserError
from icae.models.loading import resolve_checkpoint
from icae.utils.io import atomic_path, atomic_write_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "icae_config.yaml"
META_NAME = "icae_meta.json"
# Keys that change what trained tensors mean: a checkpoint loads only with the values it was trained with (SimpleLLM's:
# only those of its adapter).
MEANING_KEYS = ("model_type", "layout", "fixed_mem_size", "mean_compression_rate", "use_position_identifiers", "do_compress",
                "use_lora", "lora_r", "lora_alpha", "lora_target_modules", "freeze_decoder",
                "add_special_token_for_lm")


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded as asked; the message says what differs and what to change."""


def base_fingerprint(model) -> dict[str, Any]:
    """What identifies a base model's weights: its architecture and a hash of a few weight rows (cast to bfloat16,
    so the same weights loaded in float32 or bfloat16 give the same hash)."""
    cfg = model.config
    h = hashlib.sha1()
    embedding = model.get_input_embeddings().weight
    h.update(embedding[:16].detach().to(torch.bfloat16).float().cpu().numpy().tobytes())
    last = [p for n, p in model.named_parameters() if p.dim() == 2 and "lora_" not in n][-1]
    h.update(last[:16].detach().to(torch.bfloat16).float().cpu().numpy().tobytes())
    return {"architecture": getattr(cfg, "model_type", type(model).__name__), "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers, "vocab_size": embedding.shape[0], "weights_sha1": h.hexdigest()[:16]}


def save_checkpoint(model, directory: str | Path, config: Config) -> Path:
    """Write the trained tensors (safetensors), the resolved config and the metadata, each file atomically."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config.save(out / CONFIG_NAME)
    atomic_write_json(out / META_NAME, {
        "model_type": model.args.model_type,
        "base_model": model.args.model_name_or_path,
        "base_fingerprint": model.base_fingerprint,
        "tensors": {k: list(v.shape) for k, v in sorted(state.items())},
        "num_parameters": int(sum(v.numel() for v in state.values())),
    })
    return out


def load_trained_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint directory (or of a ``.safetensors`` file); a clear error when missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_checkpoint(path)
    file = path / WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"no {WEIGHTS_NAME} in checkpoint directory {path}" if path.is_dir()
                              else f"no such checkpoint file: {path}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file (truncated or corrupt?): {e}") from None


def read_meta(directory: str | Path) -> dict:
    path = resolve_checkpoint(directory) / META_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({e})") from None


def is_checkpoint(directory: str | Path) -> bool:
    directory = resolve_checkpoint(directory)
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def checkpoint_config(directory: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """The config a checkpoint was saved with, plus ``overrides``; an override of a ``MEANING_KEYS`` key that differs
    from the saved value is refused, naming every such key with both values. ``directory`` may be the name of a
    shipped compressor (``tiny-icae-4x``)."""
    directory = resolve_checkpoint(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"{directory} is not an icae checkpoint (no {CONFIG_NAME})")
    saved = load_config(directory / CONFIG_NAME)
    check_same_meaning(saved, overrides or {}, f"checkpoint {directory}")
    return saved.replace(**{**(overrides or {}), "restore_from": None})


LLM_MEANING_KEYS = ("model_type", "layout", "use_lora", "lora_r", "lora_alpha", "lora_target_modules")


def check_same_meaning(saved: Config, new: Config | dict[str, Any], what: str) -> None:
    """Raise ConfigError naming each MEANING_KEYS key whose value in ``new`` differs from ``saved``."""
    old = saved.to_dict()
    values = new.to_dict() if isinstance(new, Config) else {k: v for k, v in new.items() if k in MEANING_KEYS}
    keys = LLM_MEANING_KEYS if old["model_type"] == "llm" else MEANING_KEYS
    changed = [f"{k}: {what} was trained with {old[k]!r}, got {values[k]!r} (it changes what the trained tensors "
               "mean; use the trained value or train anew)" for k in keys if k in values and values[k] != old[k]]
    if changed:
        raise ConfigError(changed, what)


def check_base(meta: dict, model, source: str) -> None:
    """Refuse trained tensors on a base model other than the one they were trained on."""
    expected = meta.get("base_fingerprint")
    if not expected:
        return  # checkpoints written before fingerprints: nothing to compare
    found = model.base_fingerprint
    if found != expected:
        diff = ", ".join(f"{k} {expected.get(k)!r} -> {found.get(k)!r}" for k in found if found.get(k) != expected.get(k))
        raise CheckpointError(
            f"{source} was trained on base model {meta.get('base_model')!r}, but the loaded base "
            f"{model.args.model_name_or_path!r} differs ({diff}): set model_name_or_path to the base it was trained on")
