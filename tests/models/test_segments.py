import pytest
import torch

from icae.models.segments import memory_position_ids, num_segments, segment_lengths


@pytest.mark.parametrize(
    "length,k,rate,expected",
    [(1, 4, 4, 1), (16, 4, 4, 1), (17, 4, 4, 2), (32, 4, 4, 2), (33, 4, 4, 3), (1024, 256, 4, 1), (1025, 256, 4, 2)],
)
def test_num_segments_is_ceil_of_length_over_capacity(length, k, rate, expected):
    assert num_segments(length, k, rate) == expected


def test_segment_lengths_are_balanced_and_cover_the_context():
    # 33 tokens, capacity 16 -> 3 segments: 11 + 11 + 11
    assert segment_lengths(33, 4, 4) == [11, 11, 11]
    # 34 tokens -> 12 + 11 + 11 (the extra token goes to the first segment)
    assert segment_lengths(34, 4, 4) == [12, 11, 11]
    for length in range(1, 200):
        lens = segment_lengths(length, 4, 4)
        assert sum(lens) == length
        assert max(lens) - min(lens) <= 1
        assert max(lens) <= 16


def test_empty_context_is_an_error():
    with pytest.raises(ValueError, match="positive"):
        num_segments(0, 4, 4)


def test_position_ids_hand_worked_cases():
    # The example: 6 tokens at 1..6, k=2 -> r=3, centres 2 and 5.
    assert memory_position_ids(1, 6, 2).tolist() == [2, 5]
    # 8 tokens at 1..8, k=4 -> r=2, linspace(1.5, 7.5, 4) = 1.5, 3.5, 5.5, 7.5 -> half-up 2, 4, 6, 8.
    assert memory_position_ids(1, 8, 4).tolist() == [2, 4, 6, 8]
    # One token per slot: ids are the tokens' own positions.
    assert memory_position_ids(5, 8, 4).tolist() == [5, 6, 7, 8]
    # Second segment of a context: tokens at 17..32, k=4 -> r=4, centres 18.5, 22.5, 26.5, 30.5 -> 19, 23, 27, 31.
    assert memory_position_ids(17, 32, 4).tolist() == [19, 23, 27, 31]
    # 10 tokens at 1..10, k=4 -> r=2.5, linspace(1.75, 9.25, 4) = 1.75, 4.25, 6.75, 9.25 -> 2, 4, 7, 9.
    assert memory_position_ids(1, 10, 4).tolist() == [2, 4, 7, 9]


def test_position_ids_of_short_segment_stay_inside_span_start():
    ids = memory_position_ids(1, 2, 4)  # 2 tokens, 4 slots: r = 0.5, centres before the start are clamped
    assert ids.min() >= 1 and ids.max() <= 2
    assert torch.all(ids[1:] >= ids[:-1])
