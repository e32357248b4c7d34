"""The copy probe against fake models whose right answers are known by construction."""

from types import SimpleNamespace

import pytest
import torch

from icae.metrics.copying import copy_rows, copy_score

VOCAB = 50


class Copier:
    """Predicts, at each position, the token ``lag - 1`` positions back (the token to come if the text repeats with
    period ``lag``), and token 0 where there is nothing that far back."""

    def __init__(self, lag: int):
        self.lag = lag

    def __call__(self, input_ids):
        b, t = input_ids.shape
        pred = torch.zeros(b, t, dtype=torch.long)
        pred[:, self.lag - 1:] = input_ids[:, : t - self.lag + 1]
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, VOCAB).float())


class Constant:
    def __call__(self, input_ids):
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits[..., 7] = 1.0
        return SimpleNamespace(logits=logits)


def test_rows_repeat_the_span_after_the_filler():
    ids = list(range(1, 31))
    rows = copy_rows(ids, distance=3, span=2, rows=2)
    assert rows.tolist() == [[1, 2, 3, 4, 5, 1, 2], [6, 7, 8, 9, 10, 6, 7]]


def test_a_perfect_copier_scores_one_on_the_copy_and_what_it_guesses_on_the_first_reading():
    ids = list(range(1, 41))  # no 0: the copier's "nothing to copy" guess is always wrong
    s = copy_score(Copier(lag=4 + 6), ids, distance=6, span=4, rows=3, batch=2)
    assert (s.first_read, s.copy, s.copy_whole_span) == (0.0, 1.0, 1.0)
    far = copy_score(Copier(lag=4 + 7), ids, distance=6, span=4, rows=3)  # copies from one token too far back
    assert far.copy == 0.0 and far.copy_whole_span == 0.0


def test_a_constant_model_scores_the_share_of_its_token_in_each_reading():
    # span 4, distance 2: row [a0 a1 a2 a3 f f a0 a1 a2 a3]; tokens 1..3 of each reading are a1, a2, a3
    ids = [1, 7, 2, 7, 9, 9, 1, 7, 7, 7, 9, 9]
    s = copy_score(Constant(), ids, distance=2, span=4, rows=2)
    assert s.first_read == pytest.approx(5 / 6) and s.copy == pytest.approx(5 / 6)  # (2 + 3) of 6 tokens are 7
    assert s.copy_whole_span == 0.5  # the second row's a1..a3 are all 7


def test_too_little_text_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="3 rows of span 4 and distance 6 need 30 tokens, got 20"):
        copy_score(Constant(), list(range(20)), distance=6, span=4, rows=3)
    with pytest.raises(ValueError, match="need span >= 2"):
        copy_score(Constant(), list(range(20)), distance=6, span=1, rows=3)
