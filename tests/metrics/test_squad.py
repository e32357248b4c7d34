import pytest

from icae.metrics.squad import (
    exact_match_score,
    f1_score,
    normalize_answer,
    squad_scores,
)


def test_normalisation_matches_the_official_script():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Théâtre") == "théâtre"  # non-ASCII letters are kept
    assert normalize_answer("theatre") == "theatre"  # "the" only as a whole word


def test_exact_match_and_f1_hand_computed():
    assert exact_match_score("the Eiffel tower.", "Eiffel Tower") == 1.0
    # prediction [eiffel, tower, in, paris] vs gold [eiffel, tower]: P = 2/4, R = 1 -> F1 = 2/3
    assert f1_score("Eiffel Tower in Paris", "the Eiffel Tower") == pytest.approx(2 / 3)
    # Multisets: prediction "a a b" -> [b] after removing articles "a"; gold "b b" -> P = 1, R = 1/2 -> F1 = 2/3
    assert f1_score("a a b", "b b") == pytest.approx(2 / 3)
    assert f1_score("x y", "z") == 0.0


def test_best_gold_and_no_answer():
    scores = squad_scores("1742", ["in 1742", "the year 1742", "1742"])
    assert scores == {"exact_match": 1.0, "f1": 1.0}
    assert squad_scores("in 1742 or so", ["1742", "in 1742"])["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # SQuAD 2.0 unanswerable: gold "" -> only the empty prediction scores
    assert squad_scores("", []) == {"exact_match": 1.0, "f1": 1.0}
    assert squad_scores("Paris", []) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_scores("", ["Paris"]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_scores("the", ["a"]) == {"exact_match": 1.0, "f1": 1.0}  # both normalise to no answer
