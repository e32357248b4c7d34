"""``restore_from``: loading trained weights into a freshly built model, recognised by content."""

from __future__ import annotations

from pathlib import Path

from icae.config import load_config
from icae.models import checkpoint
from icae.models.checkpoint import CheckpointError


def restore_weights(model, source: str | Path) -> None:
    """Load ``source`` into ``model``: a checkpoint directory of this project (its config must agree with the model's
    on every key that changes what the tensors mean, and its base model must be the model's)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"restore_from: no such file or directory: {source}")
    if checkpoint.is_checkpoint(path):
        saved = load_config(path / checkpoint.CONFIG_NAME)
        checkpoint.check_same_meaning(saved, {k: getattr(model.args, k) for k in checkpoint.MEANING_KEYS},
                                      f"restore_from {path}")
        model.load_checkpoint(path)
        return
    raise CheckpointError(f"restore_from: {source} is not a checkpoint this project can read (expected a directory "
                          f"with {checkpoint.CONFIG_NAME} and {checkpoint.WEIGHTS_NAME})")
