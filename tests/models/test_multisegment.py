"""Contexts of many segments, decoded whole from all their slots (the long-memory AE objective)."""

import pytest
import torch

from icae.data.collators import PretrainingCollator
from tests.conftest import make_model

# With fixed_mem_size 4 at 4x a segment is 16 tokens: these contexts span 4, 3 and 5 segments (the last ones partial).
LENGTHS = [50, 37, 70]


def contexts(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, model.vocab_size - 10, (n,), generator=g).tolist() for n in LENGTHS]


def test_multi_segment_memory_has_the_slots_of_every_segment():
    model = make_model(use_position_identifiers=True)
    mem = model.compress([torch.tensor(c) for c in contexts(model)])
    assert mem.num_slots.tolist() == [4 * 4, 3 * 4, 5 * 4]  # ceil(n / 16) segments of 4 slots each


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_ae_target_of_a_multi_segment_sample_is_the_whole_text(family):
    model = make_model(family, use_position_identifiers=True)
    rows = contexts(model)
    eos = model.tokenizer.eos_token_id
    batch = PretrainingCollator(pad_token_id=model.tokenizer.pad_token_id, eos_token_id=eos)(
        [{"sample_id": i, "input_ids": r, "continuation_ids": []} for i, r in enumerate(rows)])
    assert batch["mode"] == ["ae"] * 3
    out = model(**{k: v for k, v in batch.items()})
    for i, row in enumerate(rows):
        labels = out.labels[i][out.labels[i] != -100].tolist()
        assert labels == row + [eos]  # every token of every segment, then EOS: not one segment's window
    # Position identifiers: the reconstruction continues at 1..n after the AE token (id 0), whatever the segment count.
    widest = max(LENGTHS)
    row = LENGTHS.index(widest)
    inputs = model.decoder_inputs(model.compress([torch.tensor(rows[row])]), "ae",
                                  targets=[torch.tensor(rows[row] + [eos])])
    tail = inputs["position_ids"][0, -(widest + 2):].tolist()
    assert tail == list(range(0, widest + 2))


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_multi_segment_ae_batch_equals_the_samples_one_at_a_time(family):
    model = make_model(family, use_position_identifiers=True)
    rows = contexts(model, seed=1)
    collate = PretrainingCollator(pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id)
    batch = model(**collate([{"sample_id": i, "input_ids": r} for i, r in enumerate(rows)]))
    losses = []
    for i, r in enumerate(rows):
        alone = model(**collate([{"sample_id": i, "input_ids": r}]))
        k = alone.logits.shape[1]
        torch.testing.assert_close(batch.logits[i, -k:], alone.logits[0], atol=1e-4, rtol=1e-4)
        losses.append((alone.loss.item(), len(r) + 1))
    # The batch loss is the token-weighted mean of the samples' losses (every target token counts once).
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert batch.loss.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_loss_per_sample_weighs_each_sample_the_same_whatever_its_length(family):
    """A one-segment window beside long contexts: by token it weighs its 17 targets of the batch's; per sample, a third."""
    model = make_model(family, use_position_identifiers=True)
    rows = contexts(model, seed=2)[:2] + [contexts(model, seed=3)[1][:16]]  # 50 and 37 tokens, then one 16-token segment
    feats = [{"sample_id": i, "input_ids": r, "continuation_ids": list(range(20, 40))} for i, r in enumerate(rows)]
    by_token = PretrainingCollator(pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id,
                                   lm_lambda=0.25, min_tokens_for_lm=8, leave_tokens_for_lm=4)
    by_sample = PretrainingCollator(**{**by_token.__dict__, "loss_per_sample": True})
    assert "loss_per_sample" not in by_token(feats) and by_sample(feats)["loss_per_sample"] is True
    ae_alone, lm_alone = [], []
    for f in feats:
        out = model(**by_token([f]))
        ae_alone.append(out.mode_losses["ae"].item())
        lm_alone.append(out.mode_losses["lm"].item())
    sample = model(**by_sample(feats))
    assert sample.mode_losses["ae"].item() == pytest.approx(sum(ae_alone) / 3, rel=1e-4)
    assert sample.mode_losses["lm"].item() == pytest.approx(sum(lm_alone) / 3, rel=1e-4)
    assert sample.loss.item() == pytest.approx(0.75 * sum(ae_alone) / 3 + 0.25 * sum(lm_alone) / 3, rel=1e-4)
    token = model(**by_token(feats))
    ae_targets = [len(r) + 1 for r in rows]  # every context token, then EOS
    assert token.mode_losses["ae"].item() == pytest.approx(
        sum(loss * n for loss, n in zip(ae_alone, ae_targets)) / sum(ae_targets), rel=1e-4)
    assert sample.num_target_tokens == token.num_target_tokens  # throughput still counts tokens
