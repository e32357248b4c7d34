"""Evaluate an ICAE or the SimpleLLM baseline on SQuAD: reconstruct contexts (``task: ae``) or answer (``task: qa``).

    python -m icae.scripts.inference_SQuAD --config_path icae/configs/inference_config.yaml restore_from=CHECKPOINT

Load config -> build the model (``restore_from``: a checkpoint from finetune_SQuAD or pretraining) -> evaluation
records (``eval_dataset_repo`` or ``dataset_repo``, split ``eval_split``) -> batched compress + generate ->
score -> write the metrics JSON (all metrics, sample count, compression rates, timing, the resolved config) and
the predictions JSONL, each atomically, to ``output_path`` or the run's ``output_dir/results`` (never over earlier
results).
qa: EM and F1 as the official SQuAD script defines them (best gold answer; v2.0 no-answer = empty prediction), and
BLEU-1 against the best gold answer, and the teacher-forced token accuracy of the first gold answer with and without
the memory (the no-memory baseline: slots, or SimpleLLM's context, removed); for ICAE also with its decoder reading
the context as tokens where the slots go (``token_accuracy_full_context``) and ``context_value_kept``: (with slots -
without) / (full context - without), all on its decoder. ae: BLEU-1 and exact match of each
distinct context's reconstruction.
Scores are fractions in [0, 1] (the official script prints percentages).
"""

from __future__ import annotations

import torch

from icae.config import ConfigError, config_from_cli
from icae.data.squad import load_squad_task
from icae.data.tasks import AnswerSample
from icae.metrics import bleu1, context_value_kept, exact_match, squad_scores
from icae.models import ICAE, build_model
from icae.scripts import entry
from icae.training.evaluation import teacher_forced_scores
from icae.training.generation import generate_batched
from icae.training.results import mean, report, results_dir

# SimpleLLM has no learned AE token: it is asked to repeat its context in words.
LLM_AE_PROMPT = "\nRepeat the text above exactly:\n"


def qa_rows(model, samples, config, batch_size):
    rows, summary = generate_batched(model, samples, "ft", batch_size, config.inference.max_out_length,
                                     desc="answering")
    forced = teacher_forced_scores(model, samples, "ft", batch_size)
    blind = teacher_forced_scores(model, samples, "ft", batch_size, no_memory=True)
    # ICAE's decoder also reads the context as tokens where its slots go: the full-context end of "context value
    # kept" on the same decoder (SimpleLLM's memory is the full context already).
    full = teacher_forced_scores(model, samples, "ft", batch_size, as_tokens=True) if isinstance(model, ICAE) else None
    predictions = []
    for i, (sample, row, tf, nm) in enumerate(zip(samples, rows, forced, blind)):
        text = model.tokenizer.decode(row.pop("generated_ids"), skip_special_tokens=True).strip()
        scores = squad_scores(text, sample.answers)
        scores["bleu1"] = max((bleu1(g, text) for g in sample.answers), default=float(not text))
        scores.update({"token_accuracy": tf["token_accuracy"], "token_accuracy_no_memory": nm["token_accuracy"]})
        if full is not None:
            scores["token_accuracy_full_context"] = full[i]["token_accuracy"]
        predictions.append({"id": sample.id, "question": sample.question, "gold": sample.answers, "prediction": text,
                            **scores, **row})
    metrics = {k: mean(p[k] for p in predictions)
               for k in ("exact_match", "f1", "bleu1", "token_accuracy", "token_accuracy_no_memory")}
    if full is not None:  # over the samples whose context fits the window as tokens
        fit = [p for p in predictions if p["token_accuracy_full_context"] is not None]
        metrics["full_context_samples"] = len(fit)
        if fit:
            metrics["token_accuracy_full_context"] = mean(p["token_accuracy_full_context"] for p in fit)
            metrics["context_value_kept"] = context_value_kept(
                mean(p["token_accuracy"] for p in fit), mean(p["token_accuracy_no_memory"] for p in fit),
                metrics["token_accuracy_full_context"])
    for name, keep in (("has_answer", lambda p: p["gold"]), ("no_answer", lambda p: not p["gold"])):
        subset = [p for p in predictions if keep(p)]
        if subset and len(subset) < len(predictions):  # SQuAD 2.0: report both halves as the official script does
            metrics.update({f"{name}_{k}": mean(p[k] for p in subset) for k in ("exact_match", "f1")})
            metrics[f"{name}_count"] = len(subset)
    return metrics, predictions, summary


def ae_rows(model, records, config, batch_size):
    contexts = list(dict.fromkeys(r.context for r in records))  # each distinct context once, in order
    prompt = [] if isinstance(model, ICAE) else model.tokenizer(LLM_AE_PROMPT, add_special_tokens=False)["input_ids"]
    samples = [AnswerSample(model.tokenizer(c, add_special_tokens=False)["input_ids"], prompt, []) for c in contexts]
    longest = max(len(s.input_ids) for s in samples)
    rows, summary = generate_batched(model, samples, "ae", batch_size, longest + 8, desc="reconstructing")
    predictions = []
    for i, (context, row) in enumerate(zip(contexts, rows)):
        text = model.tokenizer.decode(row.pop("generated_ids"), skip_special_tokens=True)
        predictions.append({"id": str(i), "gold": context, "prediction": text, "bleu1": bleu1(context, text),
                            "exact_match": exact_match(context, text), **row})
    metrics = {k: mean(p[k] for p in predictions) for k in ("bleu1", "exact_match")}
    return metrics, predictions, summary


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    if config.data.task not in ("ae", "qa"):
        raise ConfigError([f"task: inference_SQuAD runs 'ae' or 'qa', got {config.data.task!r}"], "inference config")
    results_dir(config)  # an unwritable output path fails before the model is loaded
    torch.manual_seed(config.seed)  # new tensors (untrained memory tokens) reproducible
    model = build_model(config)
    model.freeze_for_inference()
    samples = load_squad_task(config, model.layout, train=False).test
    batch_size = config.training.per_device_eval_batch_size
    run = qa_rows if config.data.task == "qa" else ae_rows
    metrics, predictions, summary = run(model, samples, config, batch_size)
    result = {"recipe_task": config.data.task, "model_type": config.model.model_type,
              "source": config.data.eval_dataset_repo or config.data.dataset_repo,
              "checkpoint": config.model.restore_from, **metrics, **summary,
              # The original tool's names: its QA task is "lm"; mean_* are its scores.
              "task": "lm" if config.data.task == "qa" else "ae", "model_name_or_path": config.model.model_name_or_path,
              "restore_from": config.model.restore_from, "mean_bleu": metrics["bleu1"],
              **({"mean_em": metrics["exact_match"], "mean_f1": metrics["f1"]} if config.data.task == "qa" else {})}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    return report(config, "squad", result, predictions,
                  f"SQuAD {config.data.task} ({config.model.model_type}) on {summary['num_samples']} samples: {shown}; "
                  f"compression {summary['compression_rate_total']:.2f}x, {summary['samples_per_second']:.2f} "
                  "samples/s")


if __name__ == "__main__":
    entry(main)
