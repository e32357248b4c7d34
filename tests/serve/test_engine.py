"""The serving engine's worker side: the prefix tree of KV states, continuous batching (a short request is not held
behind a long one), cancellation at the next step, and prefix reuse equal to recomputing."""

import queue
import time

import httpx
import pytest
import torch

from icae.models import DecoderState, Span, build_model, kv
from icae.models.decoding import SamplingParams
from icae.serve.caches import PrefixCache, elements
from icae.serve.engine import Engine, Job
from tests.conftest import small_config


# ---------------------------------------------------------------------------------------------- prefix tree
def fake_layers(values, layers=2):
    """One row of keys/values whose position p holds ``values[p]`` (to see which positions a match returns)."""
    t = torch.tensor(values, dtype=torch.float).view(1, 1, -1, 1)
    return [(t.clone(), -t.clone()) for _ in range(layers)]


def positions_of(hit):
    return hit.layers[0][0].view(-1).tolist() if hit.layers else []


SLOTS = ("slots", "obs", 3, 12)  # a compressed span: 3 decoder positions standing for 12 tokens


def test_the_longest_cached_prefix_serves_any_request():
    tree = PrefixCache(1.0)
    tree.insert([1, 2, 3, 4, 5], fake_layers([10, 20, 30, 40, 50]))
    hit = tree.match([1, 2, 3, 9], 4)  # branches off after three tokens
    assert (hit.elements, hit.length, hit.virtual, positions_of(hit)) == (3, 3, 3, [10, 20, 30])
    assert positions_of(tree.match([1, 2], 2)) == [10, 20]  # a longer cached sequence serves an earlier prefix
    assert tree.match([7, 1, 2], 3).length == 0 and tree.hits == 2 and tree.reused == 5
    tree.insert([1, 2, 7, 8], fake_layers([10, 20, 70, 80]))  # splits the first edge after [1, 2]
    assert positions_of(tree.match([1, 2, 7, 8, 9], 5)) == [10, 20, 70, 80]
    assert positions_of(tree.match([1, 2, 3, 4, 5], 5)) == [10, 20, 30, 40, 50]  # the first branch intact
    assert positions_of(tree.match([1, 2, 3, 4, 5], 4)) == [10, 20, 30, 40]  # limit: leave one to prefill
    assert len(tree) == 2


def test_a_compressed_span_counts_its_slots_and_is_reused_whole():
    tree = PrefixCache(1.0)
    tree.insert([1, SLOTS, 2, 3], fake_layers([10, 11, 12, 13, 20, 30]))
    hit = tree.match([1, SLOTS, 2, 9], 4)
    assert (hit.elements, hit.length, hit.virtual, positions_of(hit)) == (3, 5, 14, [10, 11, 12, 13, 20])
    other = ("slots", "other", 3, 12)
    assert positions_of(tree.match([1, other, 2], 3)) == [10]  # another observation: only the token before it
    assert elements([Span([5, 6]), Span(list(range(12)), compress=True)], lambda n: n // 4)[2][2:] == (3, 12)


def test_least_recently_used_leaves_are_evicted_by_bytes():
    one = kv.nbytes(fake_layers([0] * 10))  # a 10-position sequence
    tree = PrefixCache(2.5 * one / 2**20)  # room for two and a half
    tree.insert(list(range(100, 110)), fake_layers(list(range(10))))
    tree.insert(list(range(200, 210)), fake_layers(list(range(10))))
    tree.match(list(range(100, 110)), 10)  # the first is now the more recent
    tree.insert(list(range(300, 310)), fake_layers(list(range(10))))
    assert tree.bytes <= tree.max_bytes and tree.bytes == 2 * one
    assert tree.match(list(range(200, 210)), 10).length == 0  # the least recently used went
    assert tree.match(list(range(100, 110)), 10).length == 10 and tree.match(list(range(300, 310)), 10).length == 10
    shared = PrefixCache(1.3 * one / 2**20)
    shared.insert(list(range(10)), fake_layers(list(range(10))))
    shared.insert(list(range(5)) + [50, 51], fake_layers(list(range(7))))  # shares 5 positions: 12 kept in all
    assert shared.match(list(range(5)), 5).length == 5 and shared.bytes == kv.nbytes(fake_layers([0] * 12))
    off = PrefixCache(0.0)  # max_conversations: 0
    off.insert([1, 2, 3], fake_layers([1, 2, 3]))
    assert off.match([1, 2, 3], 3).length == 0 and off.bytes == 0 and len(off) == 0


# ---------------------------------------------------------------------------------------------- reuse = recompute
OBS = list(range(100, 140))  # 40 tokens: compressed to 12 slots (k=4, rate 4)


def history(*tail):
    return [Span([1, 2, 3, 4]), Span(OBS, compress=True), Span([5, 6]), *[Span(t) for t in tail]]


def model_of(name, **overrides):
    torch.manual_seed(0)
    model = build_model(small_config(name, use_position_identifiers=True, min_tokens_to_compress=16, train=False,
                                     model_max_length=2048, **overrides))
    with torch.no_grad():  # a non-trivial adapter, as a trained one would be
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("name, window, layout", [("tiny-qwen2", None, "native"), ("tiny-mistral", 8, "native"),
                                                  ("tiny-qwen2", None, "original")])
def test_a_cached_prefix_gives_what_a_fresh_prefill_gives(name, window, layout):
    model = model_of(name, layout=layout)
    model.base_config.sliding_window = window
    tree, slots = PrefixCache(64.0), {}
    first = history([7, 8, 9], [10, 11])  # a conversation that ends with an assistant reply
    _, state, _ = model.prefill_incremental(None, first, slots)
    tree.insert(elements(first, model.memory_length), kv.tensors(state.cache))
    branch = history([7, 8, 9], [12, 13, 14])  # the reply dropped, another turn appended
    items = elements(branch, model.memory_length)
    hit = tree.match(items, len(items) - 1)
    assert hit.length == 4 + model.memory_length(40) + 2 + 3 and hit.virtual == 4 + 40 + 2 + 3
    reused = DecoderState(kv.from_tensors(hit.layers), hit.length, hit.virtual)
    think = [Span([20, 21, 22])] if layout == "original" else []  # the original layout's think block: read, not kept
    group, kept, _ = model.prefill_incremental(reused, [Span([12, 13, 14])], slots, think)
    fresh, fresh_kept, _ = model.prefill_incremental(None, branch, slots, think)
    assert kept.length == fresh_kept.length == kv.length(kept.cache) == hit.length + 3
    assert (group.logits - fresh.logits).abs().max() < 1e-4, (group.logits - fresh.logits).abs().max()
    for (k, v), (k2, v2) in zip(kv.tensors(kept.cache), kv.tensors(fresh_kept.cache)):
        assert torch.allclose(k, k2, atol=1e-5) and torch.allclose(v, v2, atol=1e-5)
    assert group.next_pos.tolist() == fresh.next_pos.tolist()


# ---------------------------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def engine():
    model = model_of("tiny-qwen2")
    return Engine(model, small_config("tiny-qwen2"), 4, 16.0, 8, 16, prefix_cache_mb=16.0)


def make_job(engine, spans, max_tokens, emit=None, temperature=0.0, seed=None) -> Job:
    params = SamplingParams(max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
                            stop_token_ids=())
    events: queue.Queue = queue.Queue()
    positions = sum(engine.model.memory_length(s.ids.numel()) if s.compress else s.ids.numel() for s in spans)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    job = Job(spans, [], params, [], generator, events.put, sum(s.ids.numel() for s in spans), positions)
    if emit is not None:
        job.emit = lambda e: (emit(e), events.put(e))
    job.events = events
    return job


def served(engine, job):
    engine.submit(job)
    return finish(job)


def finish(job, timeout=120):
    while True:
        event = job.events.get(timeout=timeout)
        if event is None:
            return job
        assert "error" not in event, event


def test_a_short_request_finishes_while_a_long_one_started_earlier_runs(engine):
    long = make_job(engine, history([7]), 400)
    started = []
    seen = {}

    def on_long(event):
        if event and len(long.ids) == 3 and not started:  # on the worker: the long row has 3 tokens
            started.append(1)
            engine.submit(short)

    def on_short(event):
        if event is None:
            seen["long tokens"] = len(long.ids)

    short = make_job(engine, history([8, 9]), 2, emit=on_short)
    long.emit = lambda e: (on_long(e), long.events.put(e))
    steps = engine.metrics.counters["decode_steps_total"]
    engine.submit(long)
    finish(short)
    finish(long)
    # The short request joined at the next step and took 2 tokens: the long one made 3 more meanwhile at most
    # (it waited for all 400 before continuous batching).
    assert len(short.ids) == 2 and 3 <= seen["long tokens"] <= 6
    assert len(long.ids) == 400 and long.finish == "length"
    assert engine.metrics.counters["decode_steps_total"] - steps == 400  # one per token of the long: the short rode along


def test_a_cancelled_request_stops_at_the_next_step(engine):
    at = {}

    def cancel(event):
        if event and len(job.ids) >= 5 and not job.cancelled.is_set():
            job.cancelled.set()  # on the worker thread, between two steps
            at["tokens"] = len(job.ids)

    job = make_job(engine, history([7]), 400, emit=cancel)
    before = engine.metrics.counters["cancelled_total"]
    engine.submit(job)
    finish(job)
    assert job.finish == "cancelled" and len(job.ids) == at["tokens"]  # not one token more
    assert engine.metrics.counters["cancelled_total"] == before + 1
    waiting = make_job(engine, history([7]), 5)
    waiting.cancelled.set()  # a client gone before its turn: never run, never answered
    after = make_job(engine, history([8]), 3)
    engine.submit(waiting)
    engine.submit(after)
    finish(after)
    assert waiting.events.empty() and not waiting.ids
    assert engine.metrics.counters["cancelled_total"] == before + 2


def test_an_agent_that_drops_a_reply_reuses_the_shared_prefix_and_gets_the_same_tokens(engine):
    first = served(engine, make_job(engine, history([7, 8, 9], [10, 11]), 6))
    hits = engine.metrics.counters["prefix_cache_hits_total"]
    branch = served(engine, make_job(engine, history([7, 8, 9], [12, 13, 14]), 6))
    n = 4 + engine.model.memory_length(40) + 2 + 3
    assert branch.stats["reused_positions"] == n and branch.stats["prefix_cache_hit"]
    assert branch.stats["prefilled_positions"] == 3 and first.stats["decoder_positions"] == n + 2
    assert engine.metrics.counters["prefix_cache_hits_total"] == hits + 1
    expected, _ = engine.model.generate_spans([history([7, 8, 9], [12, 13, 14])], max_new_tokens=6,
                                              stop_token_ids=[])
    assert branch.ids == expected[0]
    again = served(engine, make_job(engine, history([7, 8, 9], [12, 13, 14]), 6))  # the same request: all but one reused
    assert again.stats["prefilled_positions"] == 1 and again.ids == branch.ids


def test_temperature_changes_what_a_seeded_request_gets(engine):
    greedy = served(engine, make_job(engine, history([7]), 12))
    hot = [served(engine, make_job(engine, history([7]), 12, temperature=1.5, seed=s)).ids for s in (3, 3, 4)]
    assert hot[0] == hot[1] and hot[0] != greedy.ids and hot[0] != hot[2]


def test_temperature_through_the_server():
    """Through HTTP: a server that ignored ``temperature`` would answer greedily both times."""
    from tests.serve.test_server import CONVERSATION, Server

    server = Server()
    try:
        def ask(**kw):
            r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
                "model": "tiny", "messages": CONVERSATION[:2], "max_tokens": 16, **kw})
            return r.json()["choices"][0]["message"]["content"]

        greedy = ask(temperature=0)
        assert ask(temperature=1.5, seed=5) == ask(temperature=1.5, seed=5) != greedy
    finally:
        server.stop()


def test_a_non_streaming_client_that_leaves_stops_its_request():
    """A non-streaming client that times out: its row leaves the batch within a step or so of the server noticing,
    while tokens keep arriving (#22.6: it used to run to max_tokens)."""
    from tests.serve.test_server import CONVERSATION, Server

    server = Server()
    try:
        before = dict(server.engine.metrics.counters)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.url + "/v1/chat/completions", timeout=0.3, json={
                "model": "tiny", "messages": CONVERSATION[:2], "max_tokens": 1900, "temperature": 0,
                "stop": ["\u2603"]})
        for _ in range(600):
            if server.engine.metrics.counters["requests_total"] > before["requests_total"]:
                break
            time.sleep(0.1)
        after = server.engine.metrics.counters
        assert after["cancelled_total"] == before["cancelled_total"] + 1, (before, after)
        assert after["completion_tokens_total"] - before["completion_tokens_total"] < 1900
    finally:
        server.stop()


def test_a_request_with_nothing_to_generate_is_answered(engine):
    """max_tokens 0 (or a prompt that fills the window): the row ends as it joins, and the client still gets its end."""
    job = served(engine, make_job(engine, history([7]), 0))
    assert job.ids == [] and job.finish == "length" and job.stats["prefilled_positions"] > 0
