"""How much of a long tool output comes back from its slots: whole text, segment by segment, and with no memory.

    python -m icae.scripts.fidelity                                    # the shipped tiny-icae-4x and tiny-icae-8x
    python -m icae.scripts.fidelity --checkpoint runs/x/final --lengths 128 256 --samples 8 --out outputs/fid

Held-out text: tool outputs that ``python -m icae.scripts.write_tool_outputs --split heldout`` generates by running
commands over trees no compressor trains on (written once under ``--out`` when ``--tool_outputs`` is not given).
For each compressor, greedy reconstruction (BLEU-1 on whitespace tokens, exact match) and teacher-forced token
accuracy of:

- **tool outputs** whose length lies in ``--range`` (128-1,024 tokens by default), each read whole;
- **windows of each of ``--lengths`` tokens** cut from the held-out tool outputs (joined in a seeded order), to show
  how fidelity falls with length.

Each is decoded three ways: the **whole** text from all its slots at once (how the server and every downstream task
read a compressed context), **per segment** (each segment from its own slots, the pieces joined), and with **no
memory** (the same decoder with the slots removed: its language-model prior alone). Writes ``fidelity.json``,
``fidelity.md`` (the tables) and ``fidelity.png`` (BLEU-1 against length) under ``--out``, never over an earlier run.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from icae.data.tool_outputs import write_tool_outputs
from icae.errors import UserError
from icae.models import ICAE, load_checkpoint
from icae.scripts import entry
from icae.training.evaluation import evaluate_pretraining
from icae.training.results import free_path
from icae.utils.io import atomic_write_json, atomic_write_text
from icae.utils.plotting import pyplot, save_png

WAYS = ("whole", "per_segment", "no_memory")
# The held-out commands run here: a fixed path, since tracebacks and pytest print it (the same text on every machine).
SANDBOX = Path(tempfile.gettempdir()) / "icae-fidelity-sandbox"


def load_texts(path: Path) -> list[str]:
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                texts.append(record["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{n}: not a JSON record with a 'text' field ({e})")
    if not texts:
        raise UserError(f"{path}: no tool output in it")
    return texts


def whole_outputs(ids: list[list[int]], low: int, high: int, count: int, seed: int) -> list[list[int]]:
    """Up to ``count`` tool outputs of ``low``..``high`` tokens, drawn with the seed."""
    chosen = [x for x in ids if low <= len(x) <= high]
    random.Random(seed).shuffle(chosen)
    return chosen[:count]


def windows(ids: list[list[int]], length: int, count: int, seed: int, newline: list[int]) -> list[list[int]]:
    """``count`` consecutive windows of exactly ``length`` tokens of the outputs joined (newline between) in a seeded
    order; fewer when the text runs out."""
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    stream = [t for i in order for t in ids[i] + newline]
    return [stream[s : s + length] for s in range(0, len(stream) - length + 1, length)][:count]


def segments(row: list[int], size: int) -> list[list[int]]:
    return [row[i : i + size] for i in range(0, len(row), size)]


@torch.no_grad()
def score(model: ICAE, rows: list[list[int]], batch_size: int) -> dict:
    """The three readings of ``rows`` (each a token list): whole, per segment and without memory."""
    samples = [{"input_ids": r} for r in rows]
    out = {}
    for way in ("whole", "no_memory"):
        m = evaluate_pretraining(model, samples, batch_size=batch_size, num_generate=len(rows),
                                 no_memory=way == "no_memory", return_texts=True)
        out[way] = {"bleu1": m["ae_bleu1"], "exact_match": m["ae_exact_match"], "token_accuracy": m["ae_token_accuracy"]}
        if way == "whole":
            out["examples"] = m["texts"][:2]
    size = model.args.fixed_mem_size * model.args.mean_compression_rate
    pieces = [s for r in rows for s in segments(r, size)]
    m = evaluate_pretraining(model, [{"input_ids": p} for p in pieces], batch_size=max(batch_size, 16),
                             num_generate=len(pieces), return_texts=True)
    from icae.metrics import bleu1, exact_match

    joined, at = [], 0
    for r in rows:  # each row's segment reconstructions, joined, against the row's text
        n = len(segments(r, size))
        parts = m["texts"][at : at + n]
        joined.append(("".join(t for t, _ in parts), "".join(o for _, o in parts)))
        at += n
    out["per_segment"] = {"bleu1": sum(bleu1(t, o) for t, o in joined) / len(joined),
                          "exact_match": sum(exact_match(t, o) for t, o in joined) / len(joined),
                          "token_accuracy": m["ae_token_accuracy"]}
    return out


def table(results: dict) -> str:
    lines = []
    for name, r in results["compressors"].items():
        lines.append(f"\n### {name} ({r['rate']}x)\n")
        lines.append("| held-out text | samples | whole: BLEU-1 / EM / token acc | per segment: BLEU-1 / EM / token acc "
                     "| no memory: BLEU-1 / token acc |")
        lines.append("|---|---|---|---|---|")
        for label, row in r["rows"].items():
            w, p, n = row["whole"], row["per_segment"], row["no_memory"]
            lines.append(f"| {label} | {row['samples']} | {w['bleu1']:.3f} / {w['exact_match']:.3f} / "
                         f"{w['token_accuracy']:.3f} | {p['bleu1']:.3f} / {p['exact_match']:.3f} / "
                         f"{p['token_accuracy']:.3f} | {n['bleu1']:.3f} / {n['token_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["compressors"].items():
        rows = [(int(k.split("-")[0]), v) for k, v in r["rows"].items() if k.endswith("-token windows")]
        xs = [x for x, _ in rows]
        for way, style in (("whole", "-o"), ("per_segment", "--s"), ("no_memory", ":^")):
            ax.plot(xs, [v[way]["bleu1"] for _, v in rows], style, label=f"{name}: {way.replace('_', ' ')}")
    ax.set(xscale="log", xlabel="tokens in the text (log)", ylabel="BLEU-1 (greedy)", ylim=(0, 1),
           title="Held-out tool outputs reconstructed from their slots")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()  # the log scale's own minor labels (2x10^2, ...) would overlap the lengths
    ax.legend(fontsize=7)
    save_png(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="icae fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", help="compressor(s) (default: tiny-icae-4x, tiny-icae-8x)")
    parser.add_argument("--tool_outputs", default=None, help="held-out tool outputs (JSONL records with 'text')")
    parser.add_argument("--range", type=int, nargs=2, default=[128, 1024], metavar=("LOW", "HIGH"))
    parser.add_argument("--lengths", type=int, nargs="*", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--samples", type=int, default=16, help="texts per row of the tables")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/fidelity")
    args = parser.parse_args(argv)
    problems = [f"--{k} must be >= 1, got {v}" for k, v in (("samples", args.samples), ("batch_size", args.batch_size))
                if v < 1]
    problems += [f"--lengths must be >= 1, got {x}" for x in args.lengths if x < 1]
    if not 1 <= args.range[0] <= args.range[1]:
        problems.append(f"--range LOW HIGH must satisfy 1 <= LOW <= HIGH, got {args.range}")
    if problems:
        raise UserError("; ".join(problems))
    out = Path(args.out)
    source = Path(args.tool_outputs) if args.tool_outputs else out / "tool_outputs_heldout.jsonl"
    if not source.is_file():
        if args.tool_outputs:
            raise UserError(f"--tool_outputs {source}: no such file")
        write_tool_outputs("heldout", source, 300, args.seed, work_dir=SANDBOX)
    texts = load_texts(source)
    results = {"tool_outputs": str(source), "seed": args.seed, "compressors": {}}
    for checkpoint in args.checkpoint or ["tiny-icae-4x", "tiny-icae-8x"]:
        model = load_checkpoint(checkpoint, train=False)
        if not isinstance(model, ICAE):
            raise UserError(f"{checkpoint} holds a SimpleLLM: fidelity needs a compressor (model_type icae)")
        model.eval()
        ids = [t.tolist() for t in model.tokenize(texts)]
        newline = model.tokenizer("\n", add_special_tokens=False)["input_ids"]
        sets = {f"tool outputs of {args.range[0]}-{args.range[1]} tokens, whole":
                whole_outputs(ids, *args.range, args.samples, args.seed)}
        sets.update({f"{n} -token windows".replace(" -", "-"): windows(ids, n, args.samples, args.seed, newline)
                     for n in args.lengths})
        rows, started = {}, time.perf_counter()
        for label, rowset in sets.items():
            if rowset:
                rows[label] = {"samples": len(rowset), **score(model, rowset, args.batch_size)}
                w = rows[label]["whole"]
                print(f"{checkpoint} | {label}: whole BLEU-1 {w['bleu1']:.3f}, per segment "
                      f"{rows[label]['per_segment']['bleu1']:.3f}, no memory {rows[label]['no_memory']['bleu1']:.3f}",
                      flush=True)
        name = Path(checkpoint).name if Path(checkpoint).exists() else checkpoint
        results["compressors"][name] = {"checkpoint": checkpoint, "rate": model.args.mean_compression_rate,
                                        "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    path = free_path(out, "fidelity")
    atomic_write_json(path, results)
    atomic_write_text(path.with_suffix(".md"), table(results))
    plot(results, path.with_suffix(".png"))
    print(table(results) + f"\nwritten: {path} (.md, .png)")
    return results


if __name__ == "__main__":
    entry(main)
