"""Checkpoints of this project: the trained tensors, the resolved config, and what is needed to reload them exactly.

A checkpoint directory holds

- ``model.safetensors``: only what was trained (LoRA adapters, memory and special-token embeddings; never the frozen
  base weights), written atomically;
- ``icae_config.yaml``: the resolved flat config the model was built from;
- ``icae_meta.json``: the model type, the base model's name and *fingerprint* (its architecture, and a hash of a few
  of its weights), the tensor names and shapes, and the sha256 of ``model.safetensors``.

The base is recorded twice: by name in ``icae_config.yaml`` (``model_name_or_path``) and by name and fingerprint in
``icae_meta.json``. Loading refuses what would give silently wrong results: a weights file whose sha256 differs from
the recorded one (checkpoints written before checksums load without this check), a tensor that is not finite, a base
model whose fingerprint differs from the one the tensors were trained on (without the metadata file: a base named
differently from the config's), and overrides of keys that change what the trained tensors mean (:func:`meaning_keys`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from icae.config import Config, ConfigError, load_config
from icae.config.layout_names import canonical_layout
from icae.errors import UserError
from icae.models.loading import resolve_checkpoint
from icae.utils.io import atomic_path, atomic_write_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "icae_config.yaml"
META_NAME = "icae_meta.json"


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
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    config.save(out / CONFIG_NAME)
    atomic_write_json(out / META_NAME, {
        "model_type": model.args.model_type,
        "base_model": model.args.model_name_or_path,
        "base_fingerprint": model.base_fingerprint,
        "tensors": {k: list(v.shape) for k, v in sorted(state.items())},
        "num_parameters": int(sum(v.numel() for v in state.values())),
        "sha256": {WEIGHTS_NAME: digest},
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


def load_verified_tensors(directory: str | Path, meta: dict) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint directory, read once: the file's sha256 checked against the metadata's (when it
    records one), then every tensor checked to be finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    directory = resolve_checkpoint(directory)
    file = directory / WEIGHTS_NAME
    if not file.is_file():
        raise CheckpointError(f"no {WEIGHTS_NAME} in checkpoint directory {directory}")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read ({e.strerror or e})") from None
    try:
        state = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file (truncated or corrupt?): {e}") from None
    expected = (meta.get("sha256") or {}).get(WEIGHTS_NAME)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{file}: its sha256 differs from the one recorded in {META_NAME} when it was saved: the "
                              "file was changed or damaged (copy it again from where it was trained)")
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{file}: tensors with NaN or infinite values: {bad[:5]}{' ...' if len(bad) > 5 else ''}"
                              " (a diverged training run, or a damaged file): use an earlier checkpoint")
    return state


def read_meta(directory: str | Path) -> dict:
    """``icae_meta.json`` of a checkpoint ({} when absent), its fields checked: a hand-edited file is one message."""
    path = resolve_checkpoint(directory) / META_NAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({e})") from None
    problems = []
    if not isinstance(meta, dict):
        problems.append(f"expected a JSON object, got a {type(meta).__name__}")
    else:
        for key, kind in (("base_fingerprint", dict), ("sha256", dict), ("tensors", dict), ("base_model", str),
                          ("model_type", str)):
            if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
                problems.append(f"{key} must be a JSON {'object' if kind is dict else 'string'}, got "
                                f"{type(meta[key]).__name__}")
        sums = meta.get("sha256")
        if isinstance(sums, dict) and not all(isinstance(v, str) for v in sums.values()):
            problems.append("sha256 must map file names to hex digests")
    if problems:
        raise CheckpointError(f"{path}: not the metadata this project writes ({'; '.join(problems)}); it was edited "
                              "by hand: restore it from where the checkpoint was trained")
    return meta


def is_checkpoint(directory: str | Path) -> bool:
    directory = resolve_checkpoint(directory)
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def checkpoint_config(directory: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """The config a checkpoint was saved with, plus ``overrides``; an override of a :func:`meaning_keys` key that differs
    from the saved value is refused, naming every such key with both values. ``directory`` may be the name of a
    shipped compressor (``tiny-icae-4x``)."""
    directory = resolve_checkpoint(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"{directory} is not an icae checkpoint (no {CONFIG_NAME})")
    saved = load_config(directory / CONFIG_NAME)
    check_same_meaning(saved, overrides or {}, f"checkpoint {directory}")
    return saved.replace(**{**(overrides or {}), "restore_from": None})


# model_type -> the config keys that change what its trained tensors mean, as each model class declares them
# (``meaning_keys``); filled by CompressorBase.__init_subclass__ when the classes are defined, which importing any
# module of icae.models does first (the package imports them), so this module needs no import of the classes.
MEANING_KEYS: dict[str, tuple[str, ...]] = {}


def meaning_keys(model_type: str) -> tuple[str, ...]:
    """Keys that change what the trained tensors of a ``model_type`` model mean (its class's ``meaning_keys``): a
    checkpoint loads only with the values it was trained with."""
    return MEANING_KEYS[model_type]


def check_same_meaning(saved: Config, new: Config | dict[str, Any], what: str) -> None:
    """Raise ConfigError naming each of the saved model's :func:`meaning_keys` whose value in ``new`` differs from
    ``saved`` (a layout's earlier name is its name)."""
    old = saved.to_dict()
    keys = meaning_keys(old["model_type"])
    values = new.to_dict() if isinstance(new, Config) else {k: v for k, v in new.items() if k in keys}
    if "layout" in values:
        values["layout"] = canonical_layout(values["layout"])
    changed = [f"{k}: {what} was trained with {old[k]!r}, got {values[k]!r} (it changes what the trained tensors "
               "mean; use the trained value or train anew)" for k in keys if k in values and values[k] != old[k]]
    if changed:
        raise ConfigError(changed, what)


def check_base(meta: dict, model, source: str, saved_base: str | None = None) -> None:
    """Refuse trained tensors on a base model other than the one they were trained on: by fingerprint when the
    metadata has one, else by the base's name as ``icae_config.yaml`` (``saved_base``) or the metadata records it."""
    expected = meta.get("base_fingerprint")
    if not expected:
        named = meta.get("base_model") or saved_base
        if named and named != model.args.model_name_or_path:
            raise CheckpointError(
                f"{source} was trained on base model {named!r} (its {META_NAME}, which would let the weights be "
                f"compared, is missing), but the loaded base is {model.args.model_name_or_path!r}: set "
                f"model_name_or_path to {named!r}")
        return
    found = model.base_fingerprint
    if found != expected:
        diff = ", ".join(f"{k} {expected.get(k)!r} -> {found.get(k)!r}" for k in found if found.get(k) != expected.get(k))
        raise CheckpointError(
            f"{source} was trained on base model {meta.get('base_model')!r}, but the loaded base "
            f"{model.args.model_name_or_path!r} differs ({diff}): set model_name_or_path to the base it was trained on")


def verified_state(model, directory: str | Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a checkpoint directory for ``model``, after every check: its metadata, its base (by
    fingerprint, else by the name either file records), its checksum and finite values."""
    directory = resolve_checkpoint(directory)
    meta = read_meta(directory)
    saved_base = None
    if not meta.get("base_fingerprint") and (directory / CONFIG_NAME).is_file():
        saved_base = load_config(directory / CONFIG_NAME).model.model_name_or_path
    check_base(meta, model, str(directory), saved_base)
    return load_verified_tensors(directory, meta)
