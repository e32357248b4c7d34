"""Quality of every method at the same budget: the teacher-forced token accuracy and loss of a held-out continuation
read after the (compressed) context, on the shipped tiny LM or a SimpleLLM's merged LoRA (``bench_reader``), and how
much of the full context's value each keeps (see :mod:`icae.scripts.bench_peers`)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from icae.benchmarks.peers import portable_model_dir, run_peer
from icae.data.prepare_data_for_pretraining import windows
from icae.errors import UserError
from icae.metrics import context_value_kept
from icae.models import load_checkpoint
from icae.models.layouts import IGNORE
from icae.training.evaluation import context_memory
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
def icae_scores(model, context: list[int], continuation: list[int], memory: str = "slots") -> tuple[float, float]:
    """ICAE's decoder reading ``memory``: its slots, none (``"none"``), or the context's own tokens where the slots
    go (``"tokens"``)."""
    mem = context_memory(model, [context], memory)
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
    it was trained and every other method on the same texts. Without that compressor, ``bench_context_lengths[0]``.
    Every method but ICAE reads with ``bench_reader`` (the base LM, or a SimpleLLM's LoRA merged into it)."""
    b = config.bench
    tokenizer = load_tokenizer(config.model.model_name_or_path)
    rows, notes, lengths = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        reader = reader_dir(config, Path(tmp) / "reader")
        base, _ = load_base_model(str(reader))
        base.eval()
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
            rows += [{**row, "context_tokens": length}
                     for row in value_kept(budget_rows(config, tokenizer, base, reader, model, name, r, samples, notes))]
    return rows, {"samples": b.bench_quality_samples, "context_tokens": lengths,
                  "continuation_tokens": b.bench_new_tokens[0], "not_run": notes,
                  "reader": b.bench_reader or config.model.model_name_or_path}


def reader_dir(config, out: Path) -> Path:
    """The model directory the peers read with: the base's own, or ``bench_reader``'s LoRA merged into the base."""
    if not config.bench.bench_reader:
        return resolve_model_path(config.model.model_name_or_path)
    from icae.benchmarks.qa import merged_model_dir
    from icae.models.checkpoint import checkpoint_config

    saved = checkpoint_config(config.bench.bench_reader).model  # what it is, before any weight is read
    if saved.model_type != "llm" or saved.model_name_or_path != config.model.model_name_or_path:
        raise UserError(f"bench_reader={config.bench.bench_reader} must be a SimpleLLM checkpoint on "
                        f"{config.model.model_name_or_path} (model_name_or_path), got model_type {saved.model_type} "
                        f"on {saved.model_name_or_path}")
    return merged_model_dir(load_checkpoint(config.bench.bench_reader, train=False), out)


def value_kept(rows: list[dict]) -> list[dict]:
    """``context_value_kept`` of each row (:func:`icae.metrics.context_value_kept`, on token accuracy), each against
    the ends measured on its own decoder: the reader's full and no context, or ICAE's decoder reading the context as
    tokens and with its slots removed (``context_value_ends``: [no context, full context]). The ends themselves get
    None for both."""
    by = {r["method"]: r["token_accuracy"] for r in rows}
    out = []
    for row in rows:
        method, ends = row["method"], None
        if method.startswith("ICAE") and not method.endswith(("slots removed", "context as tokens")):
            ends = (by.get(f"{method}, slots removed"), by.get(f"{method}, context as tokens"))
        elif not method.startswith("ICAE") and method not in ("full context", "no context", "full (kvpress env)"):
            ends = (by["no context"], by["full context"])
        ends = None if ends is None or None in ends else list(ends)
        kept = None if ends is None else context_value_kept(row["token_accuracy"], *ends)
        out.append({**row, "context_value_kept": kept, "context_value_ends": ends})
    return out


def budget_rows(config, tokenizer, base, reader: Path, model, name: str, r: int, samples: list,
                notes: dict) -> list[dict]:
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
                     **mean_scores(icae_scores(model, c, k, memory="none") for c, k in samples)})
        rows.append({"method": f"ICAE ({name}), context as tokens", "budget": 1, "context_kept": 1.0,
                     **mean_scores(icae_scores(model, c, k, memory="tokens") for c, k in samples)})
    texts = [tokenizer.decode(c) for c, _ in samples]
    with tempfile.TemporaryDirectory() as tmp:
        portable = portable_model_dir(reader, Path(tmp) / "scorer")
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
    job = {"model_dir": str(reader), "presses": config.bench.bench_presses,
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
