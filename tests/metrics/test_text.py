import math

import pytest

from icae.metrics import bleu1, exact_match, positional_match


def test_bleu1_hand_computed():
    # Identical: precision 1, no brevity penalty.
    assert bleu1("the cat sat", "the cat sat") == pytest.approx(1.0)
    # Hypothesis 4 tokens, 3 match the reference (clipped: "the" appears once in ref): p = 3/4; same length -> BP 1.
    assert bleu1("the cat sat down", "the the cat sat") == pytest.approx(3 / 4)
    # Short hypothesis: 2 tokens, both match; ref length 4 -> BP = exp(1 - 4/2) = e^-1.
    assert bleu1("a b c d", "a b") == pytest.approx(math.exp(-1))
    # Longer hypothesis: 6 tokens, 3 match; no BP -> 0.5.
    assert bleu1("x y z", "x y z p q r") == pytest.approx(0.5)
    assert bleu1("a b", "c d") == 0.0
    assert bleu1("a b", "") == 0.0 and bleu1("", "") == 1.0


def test_exact_match_and_positional_match():
    assert exact_match(" a b ", "a b") == 1.0 and exact_match("a b", "a c") == 0.0
    assert positional_match([1, 2, 3, 4], [1, 2, 9]) == pytest.approx(0.5)
    assert positional_match([1, 2], [1, 2, 3]) == 1.0
    assert positional_match([], []) == 1.0
