"""SQuAD at the same budget: the fine-tuned SimpleLLM reading its context truncated, LLMLingua-compressed or with its
KV cache pruned by kvpress, beside the fine-tuned ICAE reading slots (see :mod:`icae.scripts.bench_peers`).

Every method answers the same dev questions greedily; EM and F1 are the official SQuAD script's.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from icae.benchmarks.peers import portable_model_dir, run_peer
from icae.data.squad import load_squad_task
from icae.metrics import context_value_kept, squad_scores
from icae.models import SimpleLLM, load_checkpoint
from icae.models.auto import layout_for
from icae.models.loading import load_base_model
from icae.training.evaluation import context_memory


@torch.no_grad()
def answers(model, contexts: list[list[int]], samples, max_new: int, memory: str = "slots") -> list[dict]:
    """EM/F1 of greedy answers read after ``contexts`` (one per sample, in the model's memory layout; an empty one
    reads the end-of-text token alone). ``memory``: ``"slots"`` (what ``compress`` gives: SimpleLLM's tokens), or for
    ICAE's decoder ``"none"`` (slots removed) and ``"tokens"`` (the context's tokens where the slots go)."""
    out = []
    for context, sample in zip(contexts, samples):
        memory_ = context_memory(model, [context or [model.tokenizer.eos_token_id]], memory)
        ids = model.generate(memory_, [sample.prompt_ids], mode="ft", max_new_tokens=max_new)[0]
        out.append(squad_scores(model.tokenizer.decode(ids, skip_special_tokens=True).strip(), sample.answers))
    return out


def summary(method: str, budget, scores: list[dict], kept: float) -> dict:
    return {"method": method, "budget": budget, "exact_match": statistics.fmean(s["exact_match"] for s in scores),
            "f1": statistics.fmean(s["f1"] for s in scores), "context_kept": kept}


def value_kept(rows: list[dict]) -> list[dict]:
    """``context_value_kept`` on F1 (:func:`icae.metrics.context_value_kept`), each row against the ends measured
    on its own decoder: SimpleLLM's full and no context, or ICAE's decoder reading the context as tokens and with
    its slots removed (``context_value_ends``: [no context, full context]); None for the ends themselves."""
    f1 = {r["method"]: r["f1"] for r in rows}
    family_ends = {"SimpleLLM": (f1.get("SimpleLLM, no context"), f1.get("SimpleLLM, full context")),
                   "ICAE": (f1.get("ICAE, slots removed"), f1.get("ICAE, context as tokens"))}
    out = []
    for row in rows:
        family = row["method"].split(" ", 1)[0].rstrip(",")
        none, full = family_ends[family]
        endpoint = row["method"] in ("SimpleLLM, no context", "SimpleLLM, full context", "ICAE, slots removed",
                                     "ICAE, context as tokens")
        ends = None if endpoint or none is None or full is None else [none, full]
        kept = None if ends is None else context_value_kept(row["f1"], *ends)
        out.append({**row, "context_value_kept": kept, "context_value_ends": ends})
    return out


def merged_model_dir(model: SimpleLLM, out: Path) -> Path:
    """SimpleLLM's LoRA merged into a copy of its base, saved as a plain model directory that a peer loads."""
    base, tokenizer = load_base_model(model.args.model_name_or_path, model.args.torch_dtype)
    fresh = SimpleLLM(model.args, base, tokenizer)
    fresh.load_trainable_state_dict(model.trainable_state_dict())
    merged = fresh.model.merge_and_unload() if model.args.use_lora else fresh.model
    merged.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    return out


def qa(config, budgets: list[int]) -> tuple[list[dict], dict]:
    b, info = config.bench, {"not_run": {}}
    if not (b.bench_squad_llm and b.bench_squad_icae and b.bench_squad_dev):
        return [], {"not_run": {"squad": "set bench_squad_llm and bench_squad_icae (fine-tuned checkpoints) and "
                                         "bench_squad_dev (their questions)"}}
    missing = [p for p in (b.bench_squad_llm, b.bench_squad_icae) if not Path(p).is_dir()]
    if missing:
        return [], {"not_run": {"squad": f"no checkpoint at {missing}: run the SQuAD recipes first (docs/squad.md)"}}
    llm = load_checkpoint(b.bench_squad_llm, train=False).eval()
    icae = load_checkpoint(b.bench_squad_icae, train=False).eval()
    squad = config.replace(model_name_or_path=llm.args.model_name_or_path, task="qa", dataset_repo=b.bench_squad_dev,
                           eval_dataset_repo=b.bench_squad_dev)
    samples = load_squad_task(squad, layout_for(squad.model, llm.tokenizer), train=False).test
    contexts = [s.input_ids for s in samples]
    max_new = config.inference.max_out_length
    rows = [summary("SimpleLLM, full context", 1, answers(llm, contexts, samples, max_new), 1.0),
            summary("SimpleLLM, no context", 0, answers(llm, [[] for _ in contexts], samples, max_new), 0.0)]
    icae_rate = icae.args.mean_compression_rate
    rows.append(summary(f"ICAE ({icae_rate}x slots)", icae_rate, answers(icae, contexts, samples, max_new),
                        1 / icae_rate))
    rows.append(summary("ICAE, slots removed", 0, answers(icae, contexts, samples, max_new, "none"), 0.0))
    rows.append(summary("ICAE, context as tokens", 1, answers(icae, contexts, samples, max_new, "tokens"), 1.0))
    for r in budgets:
        for side, cut in (("last", lambda c: c[-max(1, len(c) // r):]), ("first", lambda c: c[: max(1, len(c) // r)])):
            rows.append(summary(f"SimpleLLM, truncated (keep {side})", r,
                                answers(llm, [cut(c) for c in contexts], samples, max_new), 1 / r))
    with tempfile.TemporaryDirectory() as tmp:
        merged = merged_model_dir(llm, Path(tmp) / "merged")
        portable = portable_model_dir(merged, Path(tmp) / "portable")
        texts = [llm.tokenizer.decode(c) for c in contexts]
        out, why = run_peer("llmlingua", {"model_dir": str(portable), "texts": texts, "rates": [1 / r for r in budgets],
                                          "threads": torch.get_num_threads()})
        if out is None:
            info["not_run"]["llmlingua"] = why
        for block, r in zip(out or [], budgets):
            compressed = [llm.tokenize([row["compressed"]])[0].tolist() for row in block["rows"]]
            kept = sum(len(c) for c in compressed) / max(sum(len(c) for c in contexts), 1)
            rows.append(summary("SimpleLLM + LLMLingua", r, answers(llm, compressed, samples, max_new), kept))
        job = {"model_dir": str(merged), "presses": b.bench_presses, "ratios": [1 - 1 / r for r in budgets],
               "threads": torch.get_num_threads(), "samples": [], "speed": None,
               "qa": {"samples": [{"context": c, "prompt": s.prompt_ids} for c, s in zip(contexts, samples)],
                      "max_new_tokens": max_new, "stop": [llm.tokenizer.eos_token_id]}}
        out, why = run_peer("kvpress", job)
    if out is None:
        info["not_run"]["kvpress"] = why
    for row in out or []:
        if row["press"] == "full":
            continue
        decoded = [llm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in row["qa_answers"]]
        scores = [squad_scores(text, s.answers) for text, s in zip(decoded, samples)]
        rows.append(summary(f"SimpleLLM + kvpress-{row['press']}", round(1 / (1 - row["ratio"])), scores,
                            1 - row["ratio"]))
    info.update(questions=len(samples), llm=str(b.bench_squad_llm), icae=str(b.bench_squad_icae))
    return value_kept(rows), info
