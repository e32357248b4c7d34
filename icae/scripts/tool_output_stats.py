"""Token lengths of tool-output records (``python -m icae.scripts.write_tool_outputs``), overall and per kind, with a
base model's tokenizer (default: the shipped tiny one), to size a training mix.

    python -m icae.scripts.tool_output_stats outputs/tool_outputs/train.jsonl outputs/tool_outputs/heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from icae.errors import UserError
from icae.scripts import entry

EDGES = (0, 64, 128, 256, 512, 1024, 2048, 4096)


def read_records(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (write it with python -m icae.scripts.write_tool_outputs)")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows.append((row["kind"], row["text"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path} line {i}: not a tool-output record with 'kind' and 'text'") from None
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def summary(lengths: list[int]) -> str:
    n = np.asarray(lengths)
    return (f"p5 {np.percentile(n, 5):.0f}, p25 {np.percentile(n, 25):.0f}, median {np.median(n):.0f}, "
            f"p75 {np.percentile(n, 75):.0f}, p95 {np.percentile(n, 95):.0f}, max {n.max()}, mean {n.mean():.0f}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--tokenizer", default="tiny-qwen2-lm", help="a base model name or directory")
    a = p.parse_args(argv)
    from icae.models.loading import load_tokenizer

    tokenizer = load_tokenizer(a.tokenizer)
    out = {}
    for path in a.files:
        rows = read_records(path)
        lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for _, text in rows]
        by_kind = defaultdict(list)
        for (kind, _), n in zip(rows, lengths):
            by_kind[kind].append(n)
        counts = np.histogram(lengths, bins=list(EDGES) + [max(max(lengths), EDGES[-1]) + 1])[0]
        labels = [f"{lo}-{hi - 1}" for lo, hi in zip(EDGES, EDGES[1:])] + [f">={EDGES[-1]}"]
        buckets = dict(zip(labels, map(int, counts)))
        chars = sum(len(text) for _, text in rows)
        print(f"{path}: {len(rows)} records, {sum(lengths)} tokens ({chars / max(1, sum(lengths)):.2f} chars/token); "
              f"tokens {summary(lengths)}")
        print("  buckets: " + ", ".join(f"{k}: {v}" for k, v in buckets.items()))
        for kind in sorted(by_kind):
            print(f"  {kind:<11} {len(by_kind[kind]):>5} records; {summary(by_kind[kind])}")
        out[str(path)] = {"lengths": lengths, "buckets": buckets}
    return out


if __name__ == "__main__":
    entry(main)
