"""Text metrics shared by the recipes.

BLEU-1 is NLTK's ``sentence_bleu`` with weights (1, 0, 0, 0) on whitespace tokens, as in the original tool: clipped
unigram precision times the brevity penalty, no smoothing. NLTK needs no downloaded data for this.
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence


def whitespace_tokens(text: str) -> list[str]:
    return [t for t in re.split(r"\s+", text.strip()) if t]


def bleu1(reference: str, hypothesis: str) -> float:
    """Sentence-level BLEU-1 of ``hypothesis`` against one ``reference``; 0.0 when either is empty."""
    from nltk.translate.bleu_score import sentence_bleu

    ref, hyp = whitespace_tokens(reference), whitespace_tokens(hypothesis)
    if not ref or not hyp:
        return float(ref == hyp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns when higher-order n-grams are absent; weights ignore them
        return float(sentence_bleu([ref], hyp, weights=(1.0, 0.0, 0.0, 0.0)))


def exact_match(reference: str, hypothesis: str) -> float:
    """1.0 when the texts are identical up to surrounding whitespace."""
    return float(reference.strip() == hypothesis.strip())


def positional_match(reference: Sequence[int], hypothesis: Sequence[int]) -> float:
    """Share of reference positions where a *generated* sequence has the same token (missing positions count as
    wrong). Not the teacher-forced token accuracy, which scores each position given the gold prefix."""
    if not reference:
        return float(not hypothesis)
    return sum(1 for r, h in zip(reference, hypothesis) if r == h) / len(reference)


def context_value_kept(method: float, no_context: float, full_context: float) -> float | None:
    """The share of what reading the full context adds over reading none that ``method`` keeps, all three on the same
    decoder: ``(method - no_context) / (full_context - no_context)``. 1 keeps all of it, 0 none; above 1 the method
    beats the full context, below 0 it does worse than no context. ``None`` when the full context adds nothing on
    that decoder (``full_context <= no_context``: there is no value to keep, and the ratio's sign would invert, e.g. a
    decoder fine-tuned to read slots that reads its context's plain tokens worse than none)."""
    gain = full_context - no_context
    if gain <= 1e-12:
        return None
    return (method - no_context) / gain
