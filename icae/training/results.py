"""Where inference recipes write their metrics JSON and predictions JSONL, and writing both atomically.

Results go to ``output_path`` when set, else to ``output_dir/results`` (the run's directory), else to
``./runs/results``: never inside the installed package. File names carry the recipe, the task, the model type, the base
model and the checkpoint evaluated, so runs side by side do not collide; a file that exists already is never
replaced: the new results go to the next free name (``..._2_metrics.json``) and the report says so.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from icae.config import Config
from icae.utils.io import atomic_write_json, atomic_write_jsonl, ensure_writable

DEFAULT_RESULTS = Path("runs") / "results"


def results_dir(config: Config) -> Path:
    """Where results go; created, and checked to be writable (before any model is loaded)."""
    if config.inference.output_path:
        return ensure_writable(config.inference.output_path, "output_path")
    if config.training.output_dir:
        return ensure_writable(Path(config.training.output_dir) / "results", "output_dir")
    return ensure_writable(DEFAULT_RESULTS, "output_path")


def _tag(path: str | None) -> str:
    """A short name for the evaluated checkpoint: its last two path parts (``run/final``), or ``untrained``."""
    if not path:
        return "untrained"
    parts = Path(path.rstrip("/")).parts[-2:]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-") or "checkpoint"


def result_stem(config: Config, recipe: str) -> str:
    task, model = config.data.task, config.model
    name = recipe if task == recipe else f"{recipe}_{task}"  # squad_qa_..., repoqa_..., trajectories_...
    return f"{name}_{model.model_type}_{Path(model.model_name_or_path).name}_{_tag(model.restore_from)}"


def free_stem(directory: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, ...: the first for which no ``directory / (stem + suffix)`` exists, so that
    a run never replaces the files of an earlier one."""
    for n in range(1, 10_000):
        candidate = stem if n == 1 else f"{stem}_{n}"
        if not any((directory / f"{candidate}{suffix}").exists() for suffix in suffixes):
            return candidate
    raise FileExistsError(f"{directory}: 10000 result files named {stem}; set output_path")


def free_path(directory: Path, stem: str, suffix: str = ".json") -> Path:
    """``directory / (stem + suffix)`` at the first free stem (:func:`free_stem`): a recipe's results file that never
    replaces an earlier run's."""
    return directory / f"{free_stem(directory, stem, (suffix,))}{suffix}"


def output_paths(config: Config, recipe: str) -> tuple[Path, Path]:
    """``{stem}_metrics.json`` and ``{stem}_predictions.jsonl`` in :func:`results_dir`, at the first free stem."""
    base = results_dir(config)
    stem = free_stem(base, result_stem(config, recipe), ("_metrics.json", "_predictions.jsonl"))
    return base / f"{stem}_metrics.json", base / f"{stem}_predictions.jsonl"


def write_results(config: Config, recipe: str, result: dict, predictions: list[dict]) -> tuple[Path, Path]:
    """Write the predictions, then the metrics (with the resolved config), each atomically; return both paths."""
    metrics_path, predictions_path = output_paths(config, recipe)
    atomic_write_jsonl(predictions_path, predictions)
    atomic_write_json(metrics_path, {**result, "config": config.to_dict()})
    return metrics_path, predictions_path


def report(config: Config, recipe: str, result: dict, predictions: list[dict], headline: str) -> dict:
    """The closing step of an inference recipe: write both files, print the headline and where they went."""
    metrics_path, predictions_path = write_results(config, recipe, result, predictions)
    print(headline)
    if metrics_path.name != f"{result_stem(config, recipe)}_metrics.json":
        print("(results of an earlier run with the same name are kept: these went to a new name)")
    print(f"metrics: {metrics_path}\npredictions: {predictions_path}")
    return {**result, "metrics_path": str(metrics_path), "predictions_path": str(predictions_path)}


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0
