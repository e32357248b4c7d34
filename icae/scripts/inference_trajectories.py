"""Evaluate an ICAE or the SimpleLLM baseline on agent trajectories, turn by turn.

    python -m icae.scripts.inference_trajectories --config_path icae/configs/trajectories_icae.yaml \
        restore_from=outputs/trajectories_icae/final train=false

Load config -> build the model -> the held-out trajectories (``eval_dataset_repo``, else the seeded split of
``dataset_repo``) -> for each assistant turn:

- teacher-forced next-turn prediction: one pass per trajectory over its history scores every assistant token
  (token accuracy: argmax equals the gold token), and the same with the compressed observations removed
  (``token_accuracy_no_memory``: what the model gets right without reading the slots), and for ICAE with every
  compressed observation read as its tokens (``token_accuracy_full_context``: the same decoder on the full history;
  ``context_value_kept`` = (with slots - without) / (full history - without));
- free generation of the turn from the true history (``teacher_forcing: false``: earlier assistant turns are the
  model's own generations; observations stay the recorded ones), stopped at ``<|im_end|>`` or ``max_out_length``.

Generation keeps each trajectory's KV cache across its turns (``reuse_kv_cache: true``, the default): a turn prefills
only what happened since the previous one, as a deployed agent does; the generated tokens are cropped from the cache
and the turn enters the history as recorded (or as generated). ``reuse_kv_cache: false`` prefills each turn's whole
history instead, batched across ``per_device_eval_batch_size`` trajectories. Observations are compressed once per
run: slots are cached by content hash, and a later lookup (a repeated observation, or, without the kept KV cache, a
later turn's history) is a cache hit. Metrics JSON and predictions JSONL (one row per assistant turn) as for SQuAD:

- BLEU-1, exact match and token accuracy per turn, then per trajectory (mean of its turns, then mean of
  trajectories);
- compression rate per turn and overall (original history tokens / tokens fed to the decoder), context tokens saved
  (counted on the recorded history, also when ``teacher_forcing: false`` feeds generated turns);
- timing: compression and generation seconds (per-turn mean/median, totals), turns and generated tokens per second,
  and the decoder positions prefilled;
- cache hits and compressions.
"""

from __future__ import annotations

import time

import torch

from icae.config import config_from_cli
from icae.data.tasks import limit
from icae.data.trajectories import fed_length, load_trajectory_task, rendered, trajectory_rows
from icae.metrics import bleu1, context_value_kept, exact_match, positional_match
from icae.models import ICAE, Span, build_model
from icae.scripts import entry
from icae.training.results import mean, report, results_dir
from icae.utils.timing import time_stats, timed


def history_spans(turns, upto: int, generated: dict[int, list[int]], think: bool = True) -> list[Span]:
    """Spans of ``turns[:upto]`` (with generated contents where given) and the header of turn ``upto`` (with its think
    block unless ``think`` is False)."""
    spans = [s for i, t in enumerate(turns[:upto]) for s in t.spans(generated.get(i))]
    return spans + [Span(turns[upto].header + (turns[upto].think if think else []))]


@torch.no_grad()
def teacher_forced(model, batch: list[list], cache: dict, drop_memory: bool = False,
                   as_tokens: bool = False) -> list[dict[int, tuple]]:
    """Per trajectory ``{turn index: (token accuracy, tokens)}`` from the gold history (one pass per trajectory, or per
    turn when turns read a think block).

    ``drop_memory``: the same pass with every compressed observation removed (its header and footer stay), the
    baseline that tells how much the model reads from the slots. ``as_tokens``: every compressed observation read as
    its tokens instead (the same decoder on the full history); a row longer than ``model_max_length`` that way is left
    out (its turns get no entry: history truncation counted slots, so the tokens can be several times longer).
    """
    rows, owners, whose = [], [], []
    for b, turns in enumerate(batch):
        for spans, owner in trajectory_rows(turns, drop_memory, as_tokens):
            if as_tokens and sum(s.ids.numel() for s in spans) > model.args.model_max_length:
                continue
            rows.append(spans)
            owners.append(owner)
            whose.append(b)
    if not rows:
        return [{} for _ in batch]
    out = model.forward_spans(rows, cache)
    predicted = out.logits.argmax(dim=-1)  # (rows, n_kept)
    hits = predicted == out.targets
    per_turn: list[dict[int, list[tuple[int, int]]]] = [{} for _ in batch]
    for r, owner in enumerate(owners):
        for hit, token, span in zip(hits[r].tolist(), predicted[r].tolist(), out.target_spans[r].tolist()):
            if span >= 0:
                per_turn[whose[r]].setdefault(owner[span], []).append((hit, token))
    return [{t: (sum(h for h, _ in v) / len(v), len(v), [tok for _, tok in v]) for t, v in turns.items()}
            for turns in per_turn]


def generate_batched_turns(model, config, present, cache, counts, stops):
    """The k-th assistant turn of every trajectory of the batch together, each history prefilled in full.

    Yields ``(trajectory in the batch, turn index, new ids, compression seconds, generation seconds, prefilled)``,
    seconds being the sample's share of the batch's time."""
    generated: list[dict[int, list[int]]] = [{} for _ in present]
    steps = max(sum(t.loss for t in turns) for _, _, turns in present)
    for k in range(steps):
        rows, where = [], []
        for r, (_, _, turns) in enumerate(present):
            index = [i for i, t in enumerate(turns) if t.loss]
            if k < len(index):
                rows.append(history_spans(turns, index[k], {} if config.inference.teacher_forcing else generated[r]))
                where.append((r, index[k]))
        (_, new), compress_s = timed(model.device, lambda: model.compress_spans(rows, cache))
        (outputs, _), generate_s = timed(model.device, lambda: model.generate_spans(
            rows, cache, max_new_tokens=config.inference.max_out_length, stop_token_ids=stops))
        for key in counts:
            counts[key] += new[key]
        for (r, i), ids, row in zip(where, outputs, rows):
            generated[r][i] = ids
            prefilled = sum(model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in row)
            yield r, i, ids, compress_s / len(rows), generate_s / len(rows), prefilled


def generate_incremental_turns(model, config, present, cache, counts, stops):
    """One trajectory at a time, its KV cache kept across turns: each turn prefills only what happened since the
    previous one (the previous assistant turn, gold or generated, and the new observations). Yields as
    :func:`generate_batched_turns`."""
    for r, (_, _, turns) in enumerate(present):
        state, consumed, generated = None, 0, {}
        for i in [i for i, t in enumerate(turns) if t.loss]:
            history = history_spans(turns, i, {} if config.inference.teacher_forcing else generated, think=False)
            new_spans, consumed = history[consumed:], len(history)
            transient = [Span(turns[i].think)] if turns[i].think else []  # read while generating, then cropped
            (_, new), compress_s = timed(model.device, lambda: model.compress_spans([new_spans], cache))
            before = state.length if state is not None else 0
            (ids, state, _), generate_s = timed(model.device, lambda: model.generate_incremental(
                state, new_spans, cache, transient=transient, max_new_tokens=config.inference.max_out_length,
                stop_token_ids=stops))
            for key in counts:
                counts[key] += new[key]
            generated[i] = ids
            yield r, i, ids, compress_s, generate_s, state.length - before


def evaluate(model, config, trajectories: list[dict], batch_size: int) -> tuple[list[dict], dict]:
    tok = model.tokenizer
    stops = model.layout.turn_stop_ids
    cache: dict = {}
    counts = {"compressed": 0, "cache_hits": 0}
    predictions, skipped_turns = [], 0
    turns_of = generate_incremental_turns if config.trajectories.reuse_kv_cache else generate_batched_turns
    started = time.perf_counter()
    for start in range(0, len(trajectories), batch_size):
        chunk = trajectories[start : start + batch_size]
        all_turns = [rendered(config, model.layout, t) for t in chunk]
        for traj, turns in zip(chunk, all_turns):
            skipped_turns += sum(m["role"] == "assistant" for m in traj["messages"]) - sum(t.loss for t in turns)
        present = [(start + j, t, turns) for j, (t, turns) in enumerate(zip(chunk, all_turns)) if turns]
        if not present:
            continue
        batch_rows: list[tuple[int, dict]] = []  # (trajectory in the batch, its prediction row)
        for r, i, ids, compress_s, generate_s, prefilled in turns_of(model, config, present, cache, counts, stops):
            position, traj, turns = present[r]
            gold_text = tok.decode(turns[i].content, skip_special_tokens=True)
            text = tok.decode(ids, skip_special_tokens=True)
            original = sum(t.num_tokens for t in turns[:i]) + len(turns[i].header)
            fed = sum(fed_length(t, model.memory_length) for t in turns[:i]) + len(turns[i].header)
            batch_rows.append((r, {
                "trajectory": position, "trajectory_id": traj["id"], "turn": i, "gold": gold_text, "prediction": text,
                "bleu1": bleu1(gold_text, text), "exact_match": exact_match(gold_text, text),
                "token_accuracy_autoregressive": positional_match(turns[i].content, ids),
                "original_tokens": original, "fed_tokens": fed, "compression_rate": original / fed,
                "tokens_saved": original - fed, "prefilled_tokens": prefilled,
                "compressed_observations": sum(t.compress for t in turns[:i]),
                "compress_seconds": compress_s, "generate_seconds": generate_s, "generated_tokens": len(ids),
            }))
        # Teacher forcing last: every observation is cached by now, so the timings above include each compression.
        gold = [turns for _, _, turns in present]
        accuracy, blind = teacher_forced(model, gold, cache), teacher_forced(model, gold, cache, drop_memory=True)
        # ICAE's decoder on the full history (observations as tokens): the other end of "context value kept".
        full = teacher_forced(model, gold, cache, as_tokens=True) if isinstance(model, ICAE) else None
        for r, row in sorted(batch_rows, key=lambda x: (x[0], x[1]["turn"])):
            row["token_accuracy"], row["scored_tokens"], guessed = accuracy[r].get(row["turn"], (0.0, 0, []))
            row["token_accuracy_no_memory"] = blind[r].get(row["turn"], (0.0, 0, []))[0]
            if full is not None:  # None: the history as tokens is longer than the window
                row["token_accuracy_full_context"] = full[r][row["turn"]][0] if row["turn"] in full[r] else None
            # The argmax at every gold position, as text (its end-of-turn token dropped): the original's teacher-forced
            # BLEU.
            row["bleu1_teacher_forced"] = bleu1(row["gold"], tok.decode(guessed[:-1], skip_special_tokens=True))
            predictions.append(row)
    wall = time.perf_counter() - started
    return predictions, summarise(predictions, counts, skipped_turns, wall)


def summarise(predictions: list[dict], counts: dict, skipped_turns: int, wall: float) -> dict:
    keys = ("bleu1", "exact_match", "token_accuracy", "token_accuracy_no_memory")
    by_trajectory: dict[int, list[dict]] = {}
    for p in predictions:
        by_trajectory.setdefault(p["trajectory"], []).append(p)
    per_trajectory = {tid: {k: mean(p[k] for p in rows) for k in keys} for tid, rows in by_trajectory.items()}
    original = sum(p["original_tokens"] for p in predictions)
    fed = sum(p["fed_tokens"] for p in predictions)
    generated = sum(p["generated_tokens"] for p in predictions)
    lookups = counts["compressed"] + counts["cache_hits"]
    turn = {k: mean(p[k] for p in predictions) for k in keys}
    if predictions and "token_accuracy_full_context" in predictions[0]:  # ICAE: its decoder on the full history too,
        fit = [p for p in predictions if p["token_accuracy_full_context"] is not None]  # where the tokens fit
        turn["full_context_turns"] = len(fit)
        if fit:
            turn["token_accuracy_full_context"] = mean(p["token_accuracy_full_context"] for p in fit)
            turn["context_value_kept"] = context_value_kept(mean(p["token_accuracy"] for p in fit),
                                                            mean(p["token_accuracy_no_memory"] for p in fit),
                                                            turn["token_accuracy_full_context"])
    return {
        "num_trajectories": len(by_trajectory),
        "num_turns": len(predictions),
        "skipped_turns": skipped_turns,
        "turn": turn,
        "trajectory": {
            **{k: mean(t[k] for t in per_trajectory.values()) for k in keys},
            "all_turns_exact": mean(all(p["exact_match"] for p in rows) for rows in by_trajectory.values()),
        },
        "compression_rate_mean": mean(p["compression_rate"] for p in predictions),
        "compression_rate_total": original / max(fed, 1),
        "original_tokens": original,
        "fed_tokens": fed,
        "tokens_saved": original - fed,
        "tokens_saved_per_turn": (original - fed) / max(len(predictions), 1),
        "prefilled_tokens": sum(p["prefilled_tokens"] for p in predictions),
        "observations_compressed": counts["compressed"],
        "cache_hits": counts["cache_hits"],
        "cache_hit_rate": counts["cache_hits"] / lookups if lookups else 0.0,
        "compression_seconds": time_stats([p["compress_seconds"] for p in predictions]),
        "generation_seconds": time_stats([p["generate_seconds"] for p in predictions]),
        "per_turn_seconds": time_stats([p["compress_seconds"] + p["generate_seconds"] for p in predictions]),
        "wall_seconds": wall,
        "turns_per_second": len(predictions) / wall if wall > 0 else 0.0,
        "generated_tokens_per_second": generated / wall if wall > 0 else 0.0,
    }


def original_keys(config, summary: dict, predictions: list[dict]) -> dict:
    """The original tool's metric names: ``per_turn``, ``per_trajectory`` and ``overall`` blocks (teacher-forced
    scores as ``mean_bleu``/``mean_accuracy``, free generation as ``*_autoregressive``)."""
    def block(rows):
        return {"mean_bleu": mean(r["bleu1_teacher_forced"] for r in rows),
                "mean_accuracy": mean(r["token_accuracy"] for r in rows),
                "mean_exact_match": mean(r["exact_match"] for r in rows),
                "mean_bleu_autoregressive": mean(r["bleu1"] for r in rows),
                "mean_accuracy_autoregressive": mean(r["token_accuracy_autoregressive"] for r in rows),
                "mean_exact_match_autoregressive": mean(r["exact_match"] for r in rows)}

    by_trajectory: dict[int, list[dict]] = {}
    for p in predictions:
        by_trajectory.setdefault(p["trajectory"], []).append(p)
    trajectories = [block(rows) | {"mean_compression_time_s": sum(r["compress_seconds"] for r in rows),
                                   "mean_forward_pass_time_s": sum(r["generate_seconds"] for r in rows),
                                   "mean_compression_rate": mean(r["compression_rate"] for r in rows)}
                    for rows in by_trajectory.values()]
    return {
        "model_name_or_path": config.model.model_name_or_path, "restore_from": config.model.restore_from,
        "dataset_path": config.data.eval_dataset_repo or config.data.dataset_repo,
        "per_turn": {**block(predictions), "num_turns": len(predictions)},
        "per_trajectory": {k: mean(t[k] for t in trajectories) for k in (trajectories[0] if trajectories else {})},
        "overall": {"num_trajectories": summary["num_trajectories"], "num_turns": summary["num_turns"],
                    "total_original_tokens": summary["original_tokens"], "total_compressed_tokens": summary["fed_tokens"],
                    "overall_compression_ratio": summary["compression_rate_total"],
                    "tokens_saved": summary["tokens_saved"]},
    }


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    test = limit(load_trajectory_task(config).test, config.inference.num_samples)  # data problems before the model
    results_dir(config)  # an unwritable output path fails before the model is loaded
    torch.manual_seed(config.seed)  # new tensors (untrained memory tokens) reproducible
    model = build_model(config)
    model.freeze_for_inference()
    batch_size = config.training.per_device_eval_batch_size
    predictions, summary = evaluate(model, config, test, batch_size)
    result = {"task": "trajectories", "model_type": config.model.model_type, "checkpoint": config.model.restore_from,
              "teacher_forcing": config.inference.teacher_forcing,
              "reuse_kv_cache": config.trajectories.reuse_kv_cache, "batch_size": batch_size, **summary,
              **original_keys(config, summary, predictions)}
    turn, traj = summary["turn"], summary["trajectory"]
    return report(config, "trajectories", result, predictions,
                  f"trajectories ({config.model.model_type}): {summary['num_turns']} turns of "
                  f"{summary['num_trajectories']} trajectories; per turn BLEU-1 {turn['bleu1']:.3f}, EM "
                  f"{turn['exact_match']:.3f}, token acc {turn['token_accuracy']:.3f} "
                  f"({turn['token_accuracy_no_memory']:.3f} without memory"
                  + (f", {turn['token_accuracy_full_context']:.3f} on the full history: context value kept "
                     f"{turn['context_value_kept']:.3f}" if turn.get("context_value_kept") is not None else "")
                  + "); per trajectory EM "
                  f"{traj['exact_match']:.3f}; compression {summary['compression_rate_total']:.2f}x "
                  f"({summary['tokens_saved']} tokens saved), {summary['cache_hits']} cache hits")


if __name__ == "__main__":
    entry(main)
