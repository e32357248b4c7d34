"""SQuAD exact match and F1, as the official v1.1 / v2.0 evaluation scripts define them.

Answers are normalised: lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed.
EM is 1 when the normalised strings are equal; F1 is the harmonic mean of precision and recall over the multisets of
normalised tokens. Both take the maximum over all gold answers. SQuAD 2.0: an unanswerable question has the gold
answer "" (empty), which only an empty prediction matches (EM and F1 are then 1).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # v2.0: no-answer matches only no-answer
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(metric, prediction: str, golds: Sequence[str]) -> float:
    """The official scripts score a prediction against its best gold answer; no gold answer means ""."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(metric(prediction, g) for g in golds)


def squad_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    return {"exact_match": max_over_golds(exact_match_score, prediction, golds),
            "f1": max_over_golds(f1_score, prediction, golds)}
