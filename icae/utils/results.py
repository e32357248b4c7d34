"""Where inference recipes write their metrics JSON and predictions JSONL, and writing both atomically."""

from __future__ import annotations

import statistics
from pathlib import Path

from icae.config import Config
from icae.utils.io import atomic_write_json, atomic_write_jsonl

PACKAGE = Path(__file__).resolve().parents[1]


def output_paths(config: Config, recipe: str) -> tuple[Path, Path]:
    """``output_path/{stem}_metrics.json`` and ``{stem}_predictions.jsonl``, else icae/data/metrics and predictions.

    The stem names the recipe, the task, the model type and the base model, so runs side by side do not collide.
    """
    task, model = config.task.task, config.model
    name = recipe if task == recipe else f"{recipe}_{task}"  # squad_qa_..., repoqa_..., trajectories_...
    stem = f"{name}_{model.model_type}_{Path(model.model_name_or_path).name}"
    if config.task.output_path:
        base = Path(config.task.output_path)
        return base / f"{stem}_metrics.json", base / f"{stem}_predictions.jsonl"
    return PACKAGE / "data" / "metrics" / f"{stem}.json", PACKAGE / "data" / "predictions" / f"{stem}.jsonl"


def write_results(config: Config, recipe: str, result: dict, predictions: list[dict]) -> tuple[Path, Path]:
    """Write the predictions, then the metrics (with the resolved config), each atomically; return both paths."""
    metrics_path, predictions_path = output_paths(config, recipe)
    atomic_write_jsonl(predictions_path, predictions)
    atomic_write_json(metrics_path, {**result, "config": config.to_dict()})
    return metrics_path, predictions_path


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else 0.0
