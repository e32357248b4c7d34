"""The one decode loop: token choice on hand-made logits, and the running batch (rows joining mid-way, leaving early,
each with its own parameters) against each row decoded alone."""

import math

import pytest
import torch

from icae.models import Span, kv
from icae.models.decoding import Batch, Row, SamplingParams, pick_tokens, prefill, sampling_probs
from tests.conftest import make_model

# probabilities 1/2, 1/4, 1/8, 1/8: cumulative sums are exact in float32
HALVES = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))


def sample(**kw) -> SamplingParams:
    return SamplingParams(do_sample=True, **kw)


@pytest.mark.parametrize("top_p, support", [(0.5, [0]), (0.75, [0, 1]), (0.7500001, [0, 1, 2]), (0.74, [0, 1]),
                                            (0.875, [0, 1, 2]), (0.9, [0, 1, 2, 3]), (0.1, [0])])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, support):
    """The tokens before token i reach 0.5 at i=1 and 0.75 at i=2: a set that already reaches top_p takes no more."""
    probs = sampling_probs(HALVES, sample(top_p=top_p))[0]
    assert (probs > 0).nonzero().squeeze(-1).tolist() == support
    expected = torch.tensor([0.5, 0.25, 0.125, 0.125])[support]
    assert torch.allclose(probs[support], expected / expected.sum())


def test_top_p_one_cuts_nothing_even_where_float_sums_reach_one():
    """exp(-30) ~ 9.4e-14 is below float32's resolution at 1.0: the cumulative sum before each small token is exactly
    1.0, so a nucleus cut at p = 1.0 would drop them; top_p 1.0 means no cut, and every token keeps its probability."""
    logits = torch.tensor([[0.0, -30.0, -30.0]])
    probs = sampling_probs(logits, sample(top_p=1.0))[0]
    assert (probs > 0).all()
    assert torch.equal(probs, logits.softmax(dim=-1)[0])


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[1.0, 3.0, 1.0, 1.0, 0.0]])
    assert sampling_probs(logits, sample(top_k=1))[0].tolist() == [0, 1, 0, 0, 0]
    probs = sampling_probs(logits, sample(top_k=2))[0]  # 3.0, then three tokens tied at 1.0
    assert (probs > 0).tolist() == [True, True, True, True, False]
    e = math.exp(2.0)
    assert torch.allclose(probs, torch.tensor([1, e, 1, 1, 0]) / (e + 3))


@pytest.mark.parametrize("temperature, expected", [(1.0, [0.25, 0.75]), (0.5, [0.1, 0.9]),
                                                   (2.0, [1 / (1 + 3 ** 0.5), 3 ** 0.5 / (1 + 3 ** 0.5)])])
def test_temperature_divides_the_logits(temperature, expected):
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4 at temperature 1
    assert torch.allclose(sampling_probs(logits, sample(temperature=temperature))[0], torch.tensor(expected))


def test_pick_tokens_draws_from_that_distribution_and_greedy_takes_the_argmax():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    params = sample(temperature=0.7, top_k=10, top_p=0.8)
    got = pick_tokens(logits, params, torch.Generator().manual_seed(3))
    want = torch.multinomial(sampling_probs(logits, params), 1, generator=torch.Generator().manual_seed(3))[:, 0]
    assert torch.equal(got, want)
    assert torch.equal(pick_tokens(logits, SamplingParams()), logits.argmax(dim=-1))
    hot = pick_tokens(logits.repeat(40, 1), sample(temperature=5.0), torch.Generator().manual_seed(1))
    assert not torch.equal(hot, logits.argmax(dim=-1).repeat(40))  # temperature > 0 is not greedy


# ---------------------------------------------------------------------------------------------- the running batch
def rows_of_spans():
    return [[Span([1, 2, 3]), Span(list(range(10, 50)), compress=True), Span([4, 5, 6])],
            [Span([7, 8]), Span([9, 10, 11, 12, 13])],
            [Span(list(range(60, 80)), compress=True), Span([14])]]


def prefilled(model, spans):
    group, _, _ = model.prefill_incremental(None, spans, {})
    return group


def alone(model, spans, **sampling):
    ids, _ = model.generate_spans([spans], **sampling)
    return ids[0]


def teacher_forced(model, spans, ids) -> torch.Tensor:
    """Independent of the KV-cache loop: log-probabilities ``(len(ids), vocab)`` of one forward pass (no cache) over
    the history and the generated ids, at the positions that predict each generated id."""
    out = model.forward_spans([list(spans) + [Span(ids, loss=True)]], {})
    assert out.targets[0].tolist() == ids
    return out.logits[0].float().log_softmax(dim=-1)


def is_greedy(model, spans, ids) -> bool:
    """Each generated id is the argmax of the teacher-forced pass."""
    return teacher_forced(model, spans, ids).argmax(dim=-1).tolist() == ids


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_rows_joining_mid_way_get_what_they_get_alone(name):
    model = make_model(name, use_position_identifiers=True)
    spans = rows_of_spans()
    limits = [9, 4, 7]
    params = [SamplingParams(max_new_tokens=n, stop_token_ids=()) for n in limits]
    rows = [Row(p, logprobs=2) for p in params]
    seen = [[] for _ in rows]
    for i, row in enumerate(rows):
        row.on_token = lambda t, lp, i=i: seen[i].append(lp) and False
    batch = Batch(model)
    batch.join(prefilled(model, spans[0]), [rows[0]])
    for _ in range(3):
        batch.step()
    batch.join(prefilled(model, spans[1]), [rows[1]])  # a shorter history joins a longer running row
    batch.step()
    batch.join(prefilled(model, spans[2]), [rows[2]])
    ended = []
    while batch:
        ended += batch.step()
    for i, row in enumerate(rows):
        assert row.ids == alone(model, spans[i], max_new_tokens=limits[i], stop_token_ids=[])
        assert is_greedy(model, spans[i], row.ids)
        assert len(row.ids) == limits[i] and row.finish == "length"
        assert [lp.token for lp in seen[i]] == row.ids and all(len(lp.top) == 2 for lp in seen[i])
        logp = teacher_forced(model, spans[i], row.ids)
        got = torch.tensor([lp.logprob for lp in seen[i]])
        assert torch.allclose(got, logp[torch.arange(len(row.ids)), row.ids], atol=1e-4)
        top = logp.topk(2, dim=-1)
        assert [[t for t, _ in lp.top] for lp in seen[i]] == top.indices.tolist()  # greedy: the chosen one first
        assert torch.allclose(torch.tensor([[p for _, p in lp.top] for lp in seen[i]]), top.values, atol=1e-4)
    assert ended == [rows[1], rows[0], rows[2]]  # the order they ran out: 4 new tokens from step 4, 9 from 0, ...


def test_a_row_leaves_as_soon_as_it_stops_and_the_batch_shrinks():
    model = make_model("tiny-qwen2")
    spans = rows_of_spans()
    long, short = (Row(SamplingParams(max_new_tokens=n, stop_token_ids=())) for n in (30, 2))
    batch = Batch(model)
    batch.join(prefilled(model, spans[0]), [long])
    batch.step()
    batch.join(prefilled(model, spans[1]), [short])
    steps = 0
    while short.finish is None:
        batch.step()
        steps += 1
    assert steps == 2 and len(long.ids) == 3 and long.finish is None  # the short row did not wait for the long
    assert len(batch) == 1 and batch.mask.shape[0] == 1
    assert batch.mask[0].all()  # columns only the short row's padding used are trimmed away
    while batch:
        batch.step()
    assert long.ids == alone(model, spans[0], max_new_tokens=30, stop_token_ids=[])


def test_a_callback_stops_its_row_at_that_token():
    model = make_model("tiny-qwen2")
    spans = rows_of_spans()
    stop_at = 3
    row = Row(SamplingParams(max_new_tokens=20, stop_token_ids=()), on_token=lambda t, lp: len(row.ids) >= stop_at)
    other = Row(SamplingParams(max_new_tokens=6, stop_token_ids=()))
    batch = Batch(model)
    batch.join(prefilled(model, spans[0]), [row])
    batch.join(prefilled(model, spans[1]), [other])
    while batch:
        batch.step()
    assert len(row.ids) == stop_at and row.finish == "stop" and len(other.ids) == 6
    assert other.ids == alone(model, spans[1], max_new_tokens=6, stop_token_ids=[])


def test_each_row_samples_with_its_own_parameters_and_generator():
    model = make_model("tiny-qwen2")
    spans = rows_of_spans()
    hot = dict(max_new_tokens=8, do_sample=True, temperature=1.5, stop_token_ids=[])
    greedy = Row(SamplingParams(max_new_tokens=8, stop_token_ids=()))
    seeded = Row(SamplingParams.of(**hot), torch.Generator().manual_seed(11))
    batch = Batch(model)
    batch.join(prefilled(model, spans[0]), [greedy])
    batch.join(prefilled(model, spans[0]), [seeded])
    while batch:
        batch.step()
    assert greedy.ids == alone(model, spans[0], max_new_tokens=8, stop_token_ids=[])
    assert seeded.ids == alone(model, spans[0], generator=torch.Generator().manual_seed(11), **hot)
    assert seeded.ids != greedy.ids


def test_sliding_window_attention_stays_exact_in_the_batch():
    """A Mistral base with an 8-position window: batched rows of different lengths and a kept history give what
    each row gives alone with a fresh prefill (and the window does change the result)."""
    model = make_model("tiny-mistral")
    spans = rows_of_spans()
    full = alone(model, spans[0], max_new_tokens=12, stop_token_ids=[])
    model.base_config.sliding_window = 8
    try:
        windowed = [alone(model, s, max_new_tokens=12, stop_token_ids=[]) for s in spans]
        assert windowed[0] != full
        rows = [Row(SamplingParams(max_new_tokens=12, stop_token_ids=())) for _ in spans]
        batch = Batch(model)
        for s, row in zip(spans, rows):
            batch.join(prefilled(model, s), [row])
            batch.step()
        while batch:
            batch.step()
        assert [r.ids for r in rows] == windowed
        assert all(is_greedy(model, s, ids) for s, ids in zip(spans, windowed))
        _, state, _ = model.generate_incremental(None, spans[0][:2], {}, max_new_tokens=1)
        ids, _, _ = model.generate_incremental(state, spans[0][2:], {}, max_new_tokens=12, stop_token_ids=[])
        assert ids == windowed[0]
    finally:
        model.base_config.sliding_window = None


def test_kv_helpers_pad_and_cut_rows():
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float).view(2, 1, 3, 2)
    padded = kv.left_pad(k, 5)
    assert padded.shape == (2, 1, 5, 2) and padded[:, :, :2].abs().sum() == 0 and torch.equal(padded[:, :, 2:], k)
    cut = kv.row_prefix([(k, k + 1)], 1, 1, 2)
    assert torch.equal(cut[0][0], k[1:2, :, 1:3]) and kv.nbytes(cut) == 2 * 4 * 4
    cache = kv.from_tensors([(k, k)])
    assert kv.length(cache) == 3 and torch.equal(kv.tensors(cache)[0][0], k)
