"""How well a language model copies a span it read earlier: the skill an agent's actions need (a path, a line, a
`def` line, a summary), measured apart from any task.

    python docs/results/copy_probe.py tiny-qwen2-lm [--lora DIR] [--distances 64 512 1024] [--span 24]

Each probe row is ``[span ; filler of D tokens ; span]`` (icae.metrics.copying), cut from held-out code (standard-
library modules n-z, which no base, compressor or agent here read). Reported per distance D: the share of the second
span's tokens (after its first) that the model predicts right (argmax, teacher-forced), against the same span's tokens
read the first time (what the model predicts without anything to copy), and the share of spans whose every token is
right, the all-or-nothing outcome an edit needs. ``--lora``: a SimpleLLM checkpoint
(``restore_from``-style directory) whose adapter is applied on the base, to probe an agent's or the control's copying.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from icae.data.corpus import top_level_modules  # noqa: E402
from icae.metrics.copying import copy_score  # noqa: E402
from icae.models.loading import load_base_model  # noqa: E402


def held_out_ids(tokenizer, n_tokens: int) -> list[int]:
    ids: list[int] = []
    for path in top_level_modules("n", "z"):
        ids += tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            break
    return ids[:n_tokens]


def load(base: str, lora: str | None):
    model, tokenizer = load_base_model(base)
    if lora:
        from icae.models.auto import load_checkpoint

        model = load_checkpoint(lora).model  # SimpleLLM: the base with its LoRA (a causal LM taking input_ids)
    return model.eval(), tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--lora", help="a SimpleLLM checkpoint directory whose adapter to apply")
    p.add_argument("--distances", type=int, nargs="+", default=[64, 512, 1024])
    p.add_argument("--span", type=int, default=24)
    p.add_argument("--rows", type=int, default=40)
    a = p.parse_args()
    problems = [m for bad, m in ((a.span < 2, f"--span must be 2 or more, got {a.span}"),
                                 (a.rows < 1, f"--rows must be 1 or more, got {a.rows}"),
                                 (min(a.distances) < 0, f"--distances must be 0 or more, got {a.distances}"),
                                 (2 * a.span + max(a.distances) > 8192,
                                  f"a row of 2 x span + distance ({2 * a.span + max(a.distances)}) is past the "
                                  "tiny bases' 8,192 positions")) if bad]
    if problems:
        p.error("; ".join(problems))
    model, tokenizer = load(a.base, a.lora)
    ids = held_out_ids(tokenizer, a.rows * (a.span + max(a.distances)))
    for d in a.distances:
        score = copy_score(model, ids, d, a.span, a.rows)
        print(json.dumps({"base": a.base, "lora": a.lora, **score.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
