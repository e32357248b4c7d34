"""``restore_from``: loading weights into a freshly built model, recognised by content, with one clear error otherwise.

Accepted, as the original tool accepts them:

- a checkpoint directory of this project (``icae_config.yaml`` + ``model.safetensors``): its config must agree with
  the model's on every key that changes what the tensors mean, and its base model must be the model's;
- a ``.safetensors`` file written by the original tool (``icae.*``, ``memory_token_embed.weight``, ``decoder.*``):
  see :mod:`icae.models.original_format`;
- a directory of (sharded) Hugging Face model weights (``model.safetensors`` or ``model-0000x-of-0000y.safetensors``
  with their index, e.g. a fully fine-tuned base): loaded as the base weights (here one copy serves both the encoder
  and the decoder; the original loaded it into its decoder copy);
- a hub id (``org/name``, or ``org/name/path/to/file.safetensors``), fetched through ``huggingface_hub`` when the hub
  is reachable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from icae.config import load_config
from icae.errors import UserError
from icae.models import checkpoint, original_format
from icae.models.checkpoint import CheckpointError
from icae.models.loading import resolve_checkpoint


def restore_weights(model, source: str | Path) -> None:
    """Load ``source`` into ``model``, whichever of the accepted kinds it is."""
    path = resolve_checkpoint(Path(source).expanduser())
    if not path.exists():
        path = fetch_from_hub(str(source), "restore_from")
    if checkpoint.is_checkpoint(path):
        saved = load_config(path / checkpoint.CONFIG_NAME)
        checkpoint.check_same_meaning(saved, dataclasses.asdict(model.args),
                                      f"restore_from {path}")
        model.load_checkpoint(path)
    elif path.is_file() and path.suffix == ".safetensors":
        state = checkpoint.load_trained_tensors(path)
        if not original_format.is_original_state(state):
            raise CheckpointError(f"restore_from {path}: a .safetensors file that is neither a checkpoint of the original "
                                  "tool (icae.*, memory_token_embed.weight) nor of this project (a directory)")
        if model.model_type != "icae":
            raise CheckpointError(f"restore_from {path}: a checkpoint of the original tool's ICAE; set model_type: icae")
        original_format.load_original_state(model, state, str(path))
    elif path.is_dir() and _weight_files(path):
        load_base_weights(model, path)
    else:
        raise CheckpointError(
            f"restore_from {source}: not something this project can load. Expected a checkpoint directory "
            f"({checkpoint.CONFIG_NAME} + {checkpoint.WEIGHTS_NAME}), a .safetensors file of the original tool, or a "
            "directory of Hugging Face model weights (*.safetensors)")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: unreadable index of weight shards ({e})") from None
        return [directory / s for s in shards]
    return sorted(directory.glob("*.safetensors"))


def load_base_weights(model, directory: Path) -> None:
    """Hugging Face weights (``model.layers.0...``) into the base under the adapters; every base weight must be there
    (a tied ``lm_head`` may be absent)."""
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(directory):
        state.update(checkpoint.load_trained_tensors(file))
    base = model.base_causal_lm
    ours = {name.replace(".base_layer.", "."): name for name, _ in base.named_parameters() if "lora_" not in name}
    tied = getattr(model.base_config, "tie_word_embeddings", False)
    missing = [k for k in ours if k not in state and not (tied and k.endswith("lm_head.weight"))]
    unexpected = [k for k in state if k not in ours]
    shapes = [k for k in ours if k in state and state[k].shape != dict(base.named_parameters())[ours[k]].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"restore_from {directory}: these weights are not those of {model.args.model_name_or_path!r}"
                              f" (missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {shapes[:4]}): set "
                              "model_name_or_path to the architecture they belong to")
    params = dict(base.named_parameters())
    with torch.no_grad():
        for key, name in ours.items():
            if key in state:
                params[name].copy_(state[key])


def fetch_from_hub(source: str, key: str) -> Path:
    """A hub id -> a local path: ``org/name`` (the repository) or ``org/name/path/in/repo`` (one file)."""
    parts = source.strip("/").split("/")
    if len(parts) < 2 or source.startswith((".", "/", "~")) or any(not p for p in parts):
        raise UserError(f"{key}: no such file or directory: {source}")
    repo, inner = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        local = hf_hub_download(repo, inner) if inner else snapshot_download(repo)
    except Exception as e:  # the hub client raises many types (offline, not found, gated): the user needs the reason
        raise UserError(
            f"{key}: {source!r} is not a local path, and the hub could not provide it as a model id "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Without the hub, download it elsewhere "
            f"(huggingface-cli download {repo}) and pass the local path: {key}=/path/to/it") from None
    return Path(local)
