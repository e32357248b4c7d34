"""Evaluate an ICAE or the SimpleLLM baseline on RepoQA Search Needle Function.

    python -m icae.scripts.inference_repoqa --config_path icae/configs/repoqa_icae.yaml \
        restore_from=outputs/repoqa_icae/final train=false

Load config -> build the model (``restore_from``: a finetune_repoqa checkpoint) -> the held-out tasks of the same
seeded split as fine-tuning (``test_fraction``; with ``test_fraction: 0``, every task: a zero-shot run) -> batched
compress + generate -> score -> metrics JSON and predictions JSONL (``output_path``, else the run's
``output_dir/results``), written atomically, never over earlier results.

Metrics: pass@t for t = 0.0, 0.1, ..., 1.0 and Pass@0.8 (the best-matching needle of the repo is the one asked for,
with similarity >= t), mean similarity to the asked needle, BLEU-1, retrieval accuracy, the same by needle position
ratio, teacher-forced token accuracy and loss of the fenced needle with and without the memory (the no-memory
baseline: the slots, or SimpleLLM's context, removed), plus compression rates and timing as for SQuAD.
"""

from __future__ import annotations

import torch

from icae.config import config_from_cli
from icae.data.repoqa import load_repoqa_task
from icae.data.tasks import limit
from icae.metrics.repoqa import pass_at, passes, score_output
from icae.models import build_model
from icae.scripts import entry
from icae.training.evaluation import teacher_forced_scores
from icae.training.generation import generate_batched
from icae.training.results import mean, report, results_dir


def aggregate(scores: list[dict]) -> dict:
    return {
        "pass@0.8": mean(passes(s, 0.8) for s in scores),
        "mean_similarity": mean(s["similarity"] for s in scores),
        "bleu1": mean(s["bleu1"] for s in scores),
        "retrieval_accuracy": mean(s["retrieved"] for s in scores),
        **{k: mean(s[k] for s in scores) for k in ("token_accuracy", "token_accuracy_no_memory", "loss",
                                                   "loss_no_memory")},
        "count": len(scores),
    }


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    results_dir(config)  # an unwritable output path fails before the model is loaded
    torch.manual_seed(config.seed)  # new tensors (untrained memory tokens) reproducible
    model = build_model(config)
    model.freeze_for_inference()
    split = load_repoqa_task(config, model.layout)
    tasks = limit(split.test, config.inference.num_samples)
    batch_size = config.training.per_device_eval_batch_size
    rows, summary = generate_batched(model, tasks, "ft", batch_size, config.inference.max_out_length, desc="retrieving")
    forced = teacher_forced_scores(model, tasks, "ft", batch_size)
    blind = teacher_forced_scores(model, tasks, "ft", batch_size, no_memory=True)
    predictions, scores = [], []
    for task, row, tf, nm in zip(tasks, rows, forced, blind):
        output = model.tokenizer.decode(row.pop("generated_ids"), skip_special_tokens=True)
        score = score_output(output, task.needles, task.needle_index)
        score.update({"token_accuracy": tf["token_accuracy"], "loss": tf["loss"],
                      "token_accuracy_no_memory": nm["token_accuracy"], "loss_no_memory": nm["loss"]})
        scores.append(score)
        predictions.append({"task_id": task.task_id, "language": task.language, "repo": task.repo, "name": task.name,
                            "position_ratio": task.position_ratio, "needle_start": task.needle_start,
                            "output": output, **score, "gold": task.needles[task.needle_index], **row})
    by_ratio = {str(r): aggregate([s for s, t in zip(scores, tasks) if t.position_ratio == r])
                for r in sorted({t.position_ratio for t in tasks})}
    result = {"task": "repoqa", "model_type": config.model.model_type, "checkpoint": config.model.restore_from,
              "code_context_size": config.repoqa.code_context_size, "skipped_needles": split.info["skipped_needles"],
              **aggregate(scores), "pass_at": pass_at(scores), "by_position_ratio": by_ratio, **summary,
              # The original tool's names.
              "model_name_or_path": config.model.model_name_or_path, "restore_from": config.model.restore_from}
    result.update({"mean_bleu": result["bleu1"], "pass_at_threshold_0.8": result["pass@0.8"]})
    return report(config, "repoqa", result, predictions,
                  f"RepoQA ({config.model.model_type}) on {len(tasks)} needles: Pass@0.8 {result['pass@0.8']:.3f}, "
                  f"mean similarity {result['mean_similarity']:.3f}, BLEU-1 {result['bleu1']:.3f}, teacher-forced token "
                  f"accuracy {result['token_accuracy']:.3f} ({result['token_accuracy_no_memory']:.3f} without memory); "
                  f"compression {summary['compression_rate_total']:.2f}x, {summary['samples_per_second']:.2f} samples/s")


if __name__ == "__main__":
    entry(main)
