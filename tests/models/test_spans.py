"""The interleaved (agent trajectory) layout: tokens and compressed contexts in one decoder row."""

import pytest
import torch

from icae.models import Span
from tests.conftest import make_model

OBS1 = list(range(10, 50))  # 40 tokens: 3 segments of k=4 slots at rate 4 -> 12 slots
OBS2 = list(range(60, 80))  # 20 tokens -> 2 segments -> 8 slots


def trajectory():
    return [Span([1, 2, 3]), Span(OBS1, compress=True), Span([4, 5]), Span([6, 7, 8, 9], loss=True),
            Span([4, 5]), Span(OBS2, compress=True), Span([4]), Span([11, 12, 13], loss=True)]


def test_layout_slots_tokens_and_labels(family):
    model = make_model(family)
    rows = [trajectory()]
    memories, counts = model.compress_spans(rows)
    assert counts == {"compressed": 2, "cache_hits": 0}
    inputs = model.span_inputs(rows, memories)
    sizes = [3, 12, 2, 4, 2, 8, 1, 3]
    assert inputs["inputs_embeds"].shape == (1, sum(sizes), model.hidden_size)
    assert model.memory_length(40) == 12 and model.memory_length(20) == 8
    expected_index = torch.cat([torch.full((n,), j) for j, n in enumerate(sizes)])
    assert torch.equal(inputs["span_index"][0], expected_index)
    labels = inputs["labels"][0]
    assert labels[labels != -100].tolist() == [6, 7, 8, 9, 11, 12, 13]  # loss spans only
    slot_rows = inputs["inputs_embeds"][0, 3:15]
    assert torch.allclose(slot_rows, memories[Span(OBS1).key][0].to(slot_rows.dtype))
    assert torch.equal(inputs["position_ids"][0], torch.arange(sum(sizes)))  # contiguous without identifiers


def test_position_identifiers_keep_uncompressed_positions():
    model = make_model("tiny-qwen2", use_position_identifiers=True)
    rows = [trajectory()]
    pos = model.span_inputs(rows, model.compress_spans(rows)[0])["position_ids"][0].tolist()
    assert pos[:3] == [0, 1, 2]
    # Worked by hand: OBS1's 40 tokens sit at 3..42; 3 segments of 14, 13, 13 tokens (3..16, 17..29, 30..42), 4 slots
    # each at the rounded (half up) centres of 4 equal blocks: 14/4 = 3.5 wide -> 4.25, 7.75, 11.25, 14.75; then
    # 13/4 = 3.25 wide -> 18.125, 21.375, 24.625, 27.875 and 31.125, 34.375, 37.625, 40.875.
    assert pos[3:15] == [4, 8, 11, 15, 18, 21, 25, 28, 31, 34, 38, 41]
    assert pos[15:17] == [43, 44]  # the tokens after the observation continue from 3 + 40
    # OBS2's 20 tokens sit at 51..70 (after 3 + 40 + 2 + 4 + 2): 2 segments of 10, blocks 2.5 wide: 51.75, 54.25,
    # 56.75, 59.25 and 61.75, 64.25, 66.75, 69.25; its slots follow the 3 + 12 + 2 + 4 + 2 = 23 positions before them.
    assert pos[23:31] == [52, 54, 57, 59, 62, 64, 67, 69]


def test_one_pass_equals_turn_by_turn_passes():
    """Each loss span scored in one pass equals a pass over exactly its accumulated history."""
    model = make_model("tiny-qwen2")
    full = trajectory()
    out = model.forward_spans([full])
    per_target = torch.nn.functional.cross_entropy(out.logits[0].float(), out.targets[0], reduction="none")
    first_turn = per_target[out.target_spans[0] == 3].mean()
    second_turn = per_target[out.target_spans[0] == 7].mean()
    only_first = model.forward_spans([full[:4]]).loss
    no_first_loss = full[:3] + [Span([6, 7, 8, 9])] + full[4:]
    only_second = model.forward_spans([no_first_loss]).loss
    assert torch.allclose(first_turn, only_first, atol=1e-5)
    assert torch.allclose(second_turn, only_second, atol=1e-5)
    assert torch.allclose(out.loss, per_target.mean(), atol=1e-6)
    assert int(out.num_target_tokens) == 7


def test_batch_equals_single_and_generation_padding(family):
    model = make_model(family)
    a, b = trajectory(), trajectory()[:4]
    batch = model.forward_spans([a, b])
    single = model.forward_spans([b])
    hit_b = batch.target_spans[1] >= 0
    loss_b = torch.nn.functional.cross_entropy(batch.logits[1][hit_b].float(), batch.targets[1][hit_b])
    assert torch.allclose(loss_b, single.loss, atol=1e-5)
    prefix_a, prefix_b = a[:3], b[:2] + [Span([4])]
    together, _ = model.generate_spans([prefix_a, prefix_b], max_new_tokens=5, stop_token_ids=[])
    alone, _ = model.generate_spans([prefix_b], max_new_tokens=5, stop_token_ids=[])
    assert together[1] == alone[0] and len(together[0]) == 5


def test_gradients_reach_encoder_only():
    model = make_model("tiny-qwen2").train()
    model.forward_spans([trajectory()]).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "memory_embeddings" in grads and any("lora_A" in n for n in grads)
    assert all("lora" in n or n == "memory_embeddings" for n in grads)  # the decoder's base weights stay frozen


def test_cache_compresses_each_distinct_context_once():
    model = make_model("tiny-qwen2")
    repeated = [Span(OBS1, compress=True), Span([4]), Span(OBS1, compress=True), Span([5, 6], loss=True)]
    cache = {}
    _, counts = model.compress_spans([repeated], cache)
    assert counts == {"compressed": 1, "cache_hits": 1} and len(cache) == 1
    _, again = model.compress_spans([trajectory()], cache)
    assert again == {"compressed": 1, "cache_hits": 1}  # OBS1 from the cache, OBS2 new
    with torch.no_grad():
        cached = model.forward_spans([repeated], cache).loss
        fresh = model.forward_spans([repeated]).loss
    assert torch.allclose(cached, fresh)


def test_span_errors():
    model = make_model("tiny-qwen2")
    with pytest.raises(ValueError, match="cannot carry loss"):
        Span([1, 2], compress=True, loss=True)
    with pytest.raises(ValueError, match="no span carries loss"):
        model.forward_spans([[Span([1, 2, 3])]])
    with pytest.raises(ValueError, match="exceeds model_max_length"):
        make_model("tiny-qwen2", model_max_length=16).forward_spans([trajectory()])


def test_simple_llm_reads_everything_as_tokens():
    model = make_model("tiny-qwen2", model_type="llm")
    rows = [trajectory()]
    inputs = model.span_inputs(rows, model.compress_spans(rows)[0])
    assert inputs["inputs_embeds"].shape[1] == 3 + 40 + 2 + 4 + 2 + 20 + 1 + 3
    assert model.memory_length(40) == 40
    tokens = [Span(s.ids, loss=s.loss) for s in trajectory()]  # the same row with nothing marked compressed
    assert torch.allclose(model.forward_spans(rows).loss, model.forward_spans([tokens]).loss, atol=1e-6)


@pytest.mark.parametrize("identifiers", [False, True])
@pytest.mark.parametrize("model_type", ["icae", "llm"])
def test_incremental_history_equals_reprefilling_it(family, model_type, identifiers):
    """A KV cache kept across turns (only new spans prefilled, generated tokens cropped) gives the tokens a full
    re-prefill of the history gives, turn after turn."""
    model = make_model(family, model_type=model_type, use_position_identifiers=identifiers)
    row = trajectory()
    turns = [row[:3], row[3:6], row[6:]]  # what happens between two generations
    state, cache, history = None, {}, []
    for new in turns:
        history += new
        full, _ = model.generate_spans([history], max_new_tokens=4, stop_token_ids=[])
        step, state, counts = model.generate_incremental(state, new, cache, max_new_tokens=4, stop_token_ids=[])
        assert step == full[0] and len(step) == 4
        assert state.cache.get_seq_length() == state.length  # the generated tokens were cropped away
    width = model.span_inputs([row], model.compress_spans([row])[0])["inputs_embeds"].shape[1]
    assert state.length == width and state.virtual == sum(s.ids.numel() for s in row)
