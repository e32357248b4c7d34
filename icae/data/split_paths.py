"""Where prepared pretraining splits go, and what may be found there.

Data preparation writes each split as a directory (``datasets.Dataset.save_to_disk`` plus ``icae_prepare_info.json``)
and replaces an earlier preparation's directory in place. Anything else at those paths belongs to the user: it is
refused, never deleted. Pretraining reads only directories that a preparation wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from icae.config import Config, ConfigError

INFO_NAME = "icae_prepare_info.json"
DATASET_FILES = ("dataset_info.json", "state.json")  # what save_to_disk writes beside its arrow files
PREPARE = "python -m icae.data.prepare_data_for_pretraining --config_path <this config>"


def is_prepared_split(path: str | Path) -> bool:
    """A directory written by data preparation (its info file and the dataset's own files)."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in (INFO_NAME, *DATASET_FILES))


def check_split_outputs(config: Config) -> None:
    """Refuse output paths that preparation would have to delete to write: an existing path that is not an earlier
    preparation's split, and one path given for both splits (the train split would be replaced by the eval one)."""
    problems = []
    pre = config.pretrain
    paths = {key: getattr(pre, key) for key in ("train_output_file", "eval_output_file")}
    train, held = (os.path.realpath(Path(p).expanduser()) for p in paths.values())
    if train == held:
        problems.append(f"train_output_file and eval_output_file are the same path ({paths['train_output_file']}): the "
                        "held-out split would replace the training split; give each split its own path")
    for key, value in paths.items():
        path = Path(value).expanduser()
        if (path.exists() or path.is_symlink()) and not is_prepared_split(path):
            kind = "a directory" if path.is_dir() else "a file"
            problems.append(f"{key}: {value} is {kind} that data preparation did not write (no {INFO_NAME}); it is "
                            "never replaced: choose a new path, or move it away")
    if problems:
        raise ConfigError(problems, "data preparation config")


def check_prepared_inputs(config: Config) -> None:
    """Both splits of a pretraining config exist and were written by data preparation."""
    problems = []
    for key in ("train_output_file", "eval_output_file"):
        path = getattr(config.pretrain, key)
        if not path or not Path(path).is_dir():
            problems.append(f"{key}: no prepared split at {path!r}; run `{PREPARE}` first")
        elif not is_prepared_split(path):
            problems.append(f"{key}: {path} is not a split written by data preparation (no {INFO_NAME} or dataset "
                            f"files): point it at the prepared split, or run `{PREPARE}`")
    if problems:
        raise ConfigError(problems, "pretraining config")


def load_split(path: str | Path):
    """A prepared split as a ``datasets.Dataset``; an empty one (``eval_size: 0``) too, which ``load_from_disk``
    cannot read back (it was saved with no shard)."""
    import json

    from datasets import Dataset, load_from_disk

    try:
        info = json.loads((Path(path) / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError([f"{path}: unreadable {INFO_NAME} ({e}); run `{PREPARE}` again"], "pretraining config") from None
    count = info.get(f"{info.get('split')}_samples") if isinstance(info, dict) else None
    if count == 0:
        return Dataset.from_dict({"sample_id": [], "input_ids": [], "continuation_ids": []})
    return load_from_disk(str(path))
