import math

import pytest

from icae.metrics.repoqa import THRESHOLDS, best_needle, extract_code, pass_at, score_output, similarity

A = "def add(a, b):\n    return a + b"
B = "def mul(a, b):\n    total = a * b\n    return total"


def test_extract_code_prefers_a_block_with_a_function():
    text = f"Here:\n```text\nnot code\n```\nand\n```python\n{A}\n```\n```python\n{B}\n```"
    assert extract_code(text) == A
    assert extract_code("```\nonly block\n```") == "only block"
    assert extract_code(f"```python\n{A}") == A  # generation cut before the closing fence
    assert extract_code("no fence at all") == "no fence at all"
    assert extract_code("```c\nint f(int x) {\n  return x;\n}\n```") == "int f(int x) {\n  return x;\n}"


def test_similarity_against_hand_computed_bleu4_with_method4():
    assert similarity(A, A) == pytest.approx(1.0)
    assert similarity(A, "") == 0.0
    # ref "a b c d", hyp "a b x d": p1 = 3/4, p2 = 1/3; p3 (0/2) and p4 (0/1) smoothed by method 4 (k = 5):
    # p_n = 1 / (2**i * k / ln(len(hyp))) / denominator, i = 1, 2 for the first, second zero.
    p3 = 1 / (2 * 5 / math.log(4)) / 2
    p4 = 1 / (4 * 5 / math.log(4)) / 1
    expected = math.exp(0.25 * (math.log(3 / 4) + math.log(1 / 3) + math.log(p3) + math.log(p4)))
    assert similarity("a b c d", "a  b\nx d ") == pytest.approx(expected)  # whitespace-split tokens


def test_right_needle_passes_and_wrong_needle_does_not():
    right = score_output(f"```python\n{A}\n```", [A, B], target=0)
    assert right["retrieved"] and right["similarity"] == pytest.approx(1.0) and right["bleu1"] == pytest.approx(1.0)
    wrong = score_output(f"```python\n{B}\n```", [A, B], target=0)
    assert wrong["best_needle"] == 1 and not wrong["retrieved"]
    assert wrong["best_similarity"] == pytest.approx(1.0) and wrong["code"] == B  # B itself: BLEU 1
    assert wrong["similarity"] > 0  # similar to the asked needle too, but the other one matches better
    rates = pass_at([right, wrong])
    assert list(rates) == [f"pass@{t:.1f}" for t in THRESHOLDS]
    assert rates["pass@0.0"] == rates["pass@0.8"] == rates["pass@1.0"] == 0.5


def test_threshold_and_best_needle_rules():
    partial = score_output("def add(a, b):\n    return a - b", [A, B], target=0)
    assert partial["retrieved"] and 0.3 < partial["similarity"] < 0.8
    rates = pass_at([partial])
    assert rates["pass@0.3"] == 1.0 and rates["pass@0.8"] == 0.0
    assert best_needle([0.0, 0.0]) is None  # nothing matched: no best needle, no pass even at 0.0
    assert best_needle([0.4, 0.4, 0.2]) == 0  # a tie keeps the first
    empty = score_output("", [A, B], 0)
    assert empty["best_needle"] is None and empty["best_similarity"] == 0.0 and empty["similarity"] == 0.0
    assert pass_at([empty])["pass@0.0"] == 0.0
