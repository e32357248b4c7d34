"""Quality of every method at the same budget: the teacher-forced token accuracy and loss of a held-out continuation
read after the (compressed) context, on the shipped tiny LM (see :mod:`icae.scripts.bench_peers`)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from icae.benchmarks.peers import portable_model_dir, run_peer
from icae.data.prepare_data_for_pretraining import windows
from icae.models import load_checkpoint
from icae.models.layouts import IGNORE
from icae.models.loading import load_base_model, load_tokenizer, resolve_model_path


# ---------------------------------------------------------------------------------------------- quality
@torch.no_grad()
def continuation_scores(model, context: list[int], continuation: list[int]) -> tuple[float, float]:
    """Teacher-forced (token accuracy, loss) of ``continuation`` after a non-empty ``context`` for a causal LM."""
    ids = torch.tensor([context + continuation])
    logits = model(ids).logits[0, len(context) - 1 : -1].float()  # logits[i] predicts continuation[i]
    target = torch.tensor(continuation)
    return float((logits.argmax(-1) == target).float().mean()), float(F.cross_entropy(logits, target))


@torch.no_grad()
def icae_scores(model, context: list[int], continuation: list[int], memory=True) -> tuple[float, float]:
    mem = model.compress([context])
    if not memory:
        mem = mem.without_slots()
    out = model(memory=mem, mode="lm", target_ids=[continuation])
    logits, labels = out.logits[0, :-1].float(), out.labels[0, 1:]
    keep = labels != IGNORE
    return (float((logits.argmax(-1)[keep] == labels[keep]).float().mean()),
            float(F.cross_entropy(logits[keep], labels[keep])))


def mean_scores(pairs) -> dict:
    pairs = list(pairs)
    return {"token_accuracy": statistics.fmean(a for a, _ in pairs), "loss": statistics.fmean(b for _, b in pairs)}


def quality(config, budgets: list[int]) -> tuple[list[dict], dict]:
    """Every method at each budget, on held-out contexts as long as that budget's shipped compressor's segment (k x
    rate tokens: 32 for 4x, 64 for 8x; the compressors were trained on one segment), so that ICAE is measured where
    it was trained and every other method on the same texts. Without that compressor, ``bench_context_lengths[0]``."""
    b = config.bench
    tokenizer = load_tokenizer(config.model.model_name_or_path)
    base, _ = load_base_model(config.model.model_name_or_path)
    base.eval()
    rows, notes, lengths = [], {}, {}
    for r in budgets:
        name = f"tiny-icae-{r}x"
        try:
            model = load_checkpoint(name, train=False).eval()
        except Exception as e:  # a missing asset is reported, not fatal to the other rows
            model, notes[name] = None, str(e)
        length = model.args.fixed_mem_size * r if model is not None else b.bench_context_lengths[0]
        lengths[r] = length
        held = windows(config, tokenizer, config.data.eval_dataset_repo, b.bench_quality_samples, length,
                       b.bench_new_tokens[0])
        samples = [(s["input_ids"], s["continuation_ids"]) for s in held]
        rows += [{**row, "context_tokens": length} for row in budget_rows(config, tokenizer, base, model, name, r,
                                                                            samples, notes)]
    return rows, {"samples": b.bench_quality_samples, "context_tokens": lengths,
                  "continuation_tokens": b.bench_new_tokens[0], "not_run": notes}


def budget_rows(config, tokenizer, base, model, name: str, r: int, samples: list, notes: dict) -> list[dict]:
    start = [tokenizer.eos_token_id]  # no context: the document-start token the LM was trained with
    keep = lambda c: max(1, len(c) // r)  # noqa: E731
    rows = [{"method": "full context", "budget": 1, "context_kept": 1.0,
             **mean_scores(continuation_scores(base, c, k) for c, k in samples)},
            {"method": "no context", "budget": 0, "context_kept": 0.0,
             **mean_scores(continuation_scores(base, start, k) for _, k in samples)},
            {"method": "truncate (keep last)", "budget": r, "context_kept": 1 / r,
             **mean_scores(continuation_scores(base, c[-keep(c):], k) for c, k in samples)},
            {"method": "truncate (keep first)", "budget": r, "context_kept": 1 / r,
             **mean_scores(continuation_scores(base, c[: keep(c)], k) for c, k in samples)}]
    if model is not None:
        rows.append({"method": f"ICAE ({name})", "budget": r, "context_kept": 1 / r,
                     **mean_scores(icae_scores(model, c, k) for c, k in samples)})
        rows.append({"method": f"ICAE ({name}), slots removed", "budget": r, "context_kept": 0.0,
                     **mean_scores(icae_scores(model, c, k, memory=False) for c, k in samples)})
    texts = [tokenizer.decode(c) for c, _ in samples]
    with tempfile.TemporaryDirectory() as tmp:
        portable = portable_model_dir(resolve_model_path(config.model.model_name_or_path), Path(tmp) / "scorer")
        out, why = run_peer("llmlingua", {"model_dir": str(portable), "texts": texts, "rates": [1 / r],
                                          "threads": torch.get_num_threads()})
    if out is None:
        notes["llmlingua"] = why
    for block in out or []:
        compressed = [tokenizer(row["compressed"], add_special_tokens=False)["input_ids"] or start
                      for row in block["rows"]]
        kept = sum(len(c) for c in compressed) / max(sum(len(c) for c, _ in samples), 1)
        rows.append({"method": "LLMLingua", "budget": r, "context_kept": kept,
                     **mean_scores(continuation_scores(base, c, k) for c, (_, k) in zip(compressed, samples))})
    job = {"model_dir": str(resolve_model_path(config.model.model_name_or_path)), "presses": config.bench.bench_presses,
           "ratios": [1 - 1 / r], "threads": torch.get_num_threads(),
           "samples": [{"context": c, "continuation": k} for c, k in samples], "speed": None}
    out, why = run_peer("kvpress", job)
    if out is None:
        notes["kvpress"] = why
    for row in out or []:  # "full (kvpress env)": the full-context row again, in kvpress's transformers release
        full = row["press"] == "full"
        rows.append({"method": row["method"], "budget": 1 if full else r, "context_kept": 1 - row["ratio"],
                     "token_accuracy": row["token_accuracy"], "loss": row["loss"]})
    return rows
