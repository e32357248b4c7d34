"""Typed configuration for every `icae` recipe.

A recipe reads one flat YAML file, as the original ICAE tool does; each key belongs to exactly one typed, frozen
section of :class:`Config`:

- ``model`` (:class:`ModelArguments`): the base model, the compressor's architecture and its adapters;
- ``data`` (:class:`DataArguments`): sources, splits, sample limits and the task;
- ``pretrain`` (:class:`PretrainArguments`), ``squad``, ``repoqa``, ``trajectories``: each recipe's own keys;
- ``inference`` (:class:`InferenceArguments`): generation length and where results go;
- ``bench`` (:class:`BenchArguments`): the benchmark grid; ``serve`` (:class:`ServeArguments`): the server;
- ``training`` (:class:`TrainingKeys`): ``transformers.TrainingArguments`` keys (``seed`` and the batch sizes typed).

Each section checks its values in ``__post_init__``; ``load_config`` reports every problem of a file at once.
"""

from icae.config.loading import ALIASES, Config, config_from_cli, load_config, parse_overrides
from icae.config.sections import (
    MAX_MEMORY_SLOTS,
    SECTIONS,
    BenchArguments,
    ConfigError,
    DataArguments,
    InferenceArguments,
    ModelArguments,
    PretrainArguments,
    RepoQAArguments,
    ServeArguments,
    SquadArguments,
    TrainingKeys,
    TrajectoryArguments,
)

__all__ = [
    "ALIASES", "MAX_MEMORY_SLOTS", "SECTIONS", "Config", "ConfigError", "config_from_cli", "load_config",
    "parse_overrides", "BenchArguments", "DataArguments", "InferenceArguments", "ModelArguments", "PretrainArguments",
    "RepoQAArguments", "ServeArguments", "SquadArguments", "TrainingKeys", "TrajectoryArguments",
]
