"""RepoQA scoring: the retrieved code, its similarity to every needle of the repo, and pass@threshold.

Similarity is RepoQA's: sentence-level BLEU-4 (NLTK ``sentence_bleu``) with Chen and Cherry's smoothing method 4, on
tokens ``re.split(r"\\s+", text.strip())``. The best-matching needle is the one with strictly the highest similarity
(the first in repo order on a tie; none when every similarity is 0). A task passes at threshold t when its best
needle is the needle asked for and that similarity is at least t.

Code extraction: the first fenced code block that contains a function definition, else the first fenced block, else
the whole output. RepoQA detects functions with tree-sitter; here a definition is a line starting a Python
``def``/``async def`` or a C-like ``name(...) {`` header. An opening fence with no closing one (generation stopped at
its length limit) yields the text after it.
"""

from __future__ import annotations

from icae.metrics.text import bleu1
import re
import warnings

THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))
FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n?```|\Z)", re.DOTALL)
DEFINITION = re.compile(r"^\s*(?:async\s+def|def)\s+\w+\s*\(|^[^\n;]*\w+\s*\([^\n;]*\)[^\n;]*\{", re.MULTILINE)


def extract_code(output: str) -> str:
    blocks = FENCE.findall(output)
    for block in blocks:
        if DEFINITION.search(block):
            return block
    return blocks[0] if blocks else output


def similarity(reference: str, candidate: str) -> float:
    """RepoQA's code similarity in [0, 1]."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ref, cand = re.split(r"\s+", reference.strip()), re.split(r"\s+", candidate.strip())
    if not candidate.strip() or not reference.strip():
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref], cand, smoothing_function=SmoothingFunction().method4))


def best_needle(similarities: list[float]) -> int | None:
    best, best_sim = None, 0.0
    for i, s in enumerate(similarities):
        if s > best_sim:
            best, best_sim = i, s
    return best


def score_output(output: str, needles: list[str], target: int) -> dict:
    """Score one model output against the repo's ``needles`` when ``needles[target]`` was asked for."""
    code = extract_code(output)
    sims = [similarity(needle, code) for needle in needles]
    best = best_needle(sims)
    return {
        "code": code,
        "similarity": sims[target],
        "best_needle": best,
        "best_similarity": sims[best] if best is not None else 0.0,
        "retrieved": best == target,
        "bleu1": bleu1(needles[target], code),
    }


def passes(score: dict, threshold: float) -> bool:
    return score["retrieved"] and score["similarity"] >= threshold


def pass_at(scores: list[dict], thresholds=THRESHOLDS) -> dict[str, float]:
    """``{"pass@0.0": rate, ..., "pass@1.0": rate}`` over tasks."""
    n = max(len(scores), 1)
    return {f"pass@{t:.1f}": sum(passes(s, t) for s in scores) / n for t in thresholds}
