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


def test_context_value_kept_against_hand_computed_cases():
    from icae.metrics import context_value_kept

    assert context_value_kept(0.7, 0.5, 0.9) == pytest.approx(0.5)  # half of the 0.4 the context adds
    assert context_value_kept(0.9, 0.6, 0.8) == pytest.approx(1.5)  # better than the full context
    assert context_value_kept(0.4, 0.5, 0.9) == pytest.approx(-0.25)  # worse than no context
    assert context_value_kept(0.5, 0.5, 0.9) == 0.0 and context_value_kept(0.9, 0.5, 0.9) == 1.0
    assert context_value_kept(0.7, 0.6, 0.6) is None  # the full context adds nothing: undefined
    assert context_value_kept(0.97, 0.65, 0.57) is None  # ... or reads worse than none: no value to keep
