import pytest
import torch

from icae.data.collators import PretrainingCollator
from tests.conftest import make_model

PAD, EOS = 1, 0


def features():
    return [
        {"sample_id": 0, "input_ids": [10, 11, 12, 13], "continuation_ids": [20, 21, 22, 23, 24]},
        {"sample_id": 1, "input_ids": [14, 15], "continuation_ids": [25, 26]},  # too short for LM
    ]


def test_ae_only():
    batch = PretrainingCollator(PAD, EOS, lm_ratio=0.0)(features())
    assert batch["mode"] == ["ae", "ae"] and batch["context_index"] == [0, 1]
    assert batch["target_ids"][0].tolist() == [10, 11, 12, 13, EOS]  # context then EOS
    assert batch["target_ids"][1][batch["target_attention_mask"][1].bool()].tolist() == [14, 15, EOS]
    assert batch["prompt_ids"] is None


def test_lm_rows_feed_the_first_tokens_without_loss():
    batch = PretrainingCollator(PAD, EOS, lm_ratio=1.0, min_tokens_for_lm=3, leave_tokens_for_lm=2)(features())
    assert batch["mode"] == ["lm", "ae"]  # the second continuation is shorter than min_tokens_for_lm
    assert batch["prompt_ids"][0][batch["prompt_attention_mask"][0].bool()].tolist() == [20, 21]
    assert batch["target_ids"][0][batch["target_attention_mask"][0].bool()].tolist() == [22, 23, 24]


def test_lambda_trains_both_objectives_on_one_context():
    batch = PretrainingCollator(PAD, EOS, lm_lambda=0.3, min_tokens_for_lm=3)(features())
    assert batch["mode"] == ["ae", "lm", "ae"] and batch["context_index"] == [0, 0, 1]
    assert batch["mode_weights"] == {"ae": pytest.approx(0.7), "lm": pytest.approx(0.3)}
    assert batch["input_ids"].shape[0] == 2  # each context is compressed once


def test_objective_choice_is_reproducible_and_follows_the_ratio():
    c = PretrainingCollator(PAD, EOS, lm_ratio=0.3, seed=7)
    choices = [c.uses_lm(i) for i in range(2000)]
    assert choices == [PretrainingCollator(PAD, EOS, lm_ratio=0.3, seed=7).uses_lm(i) for i in range(2000)]
    assert 0.25 < sum(choices) / 2000 < 0.35


def test_mixed_batch_matches_separate_calls_and_carries_loss_on_targets_only(family):
    model = make_model(family, use_position_identifiers=True)
    collate = PretrainingCollator(model.tokenizer.pad_token_id, model.tokenizer.eos_token_id, lm_lambda=0.5,
                                  min_tokens_for_lm=3, leave_tokens_for_lm=2)
    batch = collate(features())
    out = model(**batch)
    ae = model([[10, 11, 12, 13], [14, 15]], mode="ae")
    lm = model([[10, 11, 12, 13]], mode="lm", prompt_ids=[[20, 21]], target_ids=[[22, 23, 24]])
    torch.testing.assert_close(out.mode_losses["ae"], ae.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mode_losses["lm"], lm.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, 0.5 * ae.loss + 0.5 * lm.loss, atol=1e-5, rtol=1e-5)
    # Labels: the LM row scores 22, 23, 24 only (its prompt 20, 21 is input without loss).
    lm_labels = out.labels[1][out.labels[1] != -100].tolist()
    assert lm_labels == [22, 23, 24]


def test_position_ids_of_both_layouts_with_identifiers():
    model = make_model(use_position_identifiers=True)
    memory = model.compress([[10, 11, 12, 13, 14, 15]])  # L = 6 -> one segment, 4 slots
    rows = memory.select([0, 0])
    inputs = model.decoder_inputs(rows, ["ae", "lm"], [torch.tensor([]).long(), torch.tensor([20, 21])],
                                  [torch.tensor([10, 11]), torch.tensor([22])])
    slots = memory.position_ids[0].tolist()
    ae_pos = inputs["position_ids"][0][inputs["attention_mask"][0].bool()].tolist()
    lm_pos = inputs["position_ids"][1][inputs["attention_mask"][1].bool()].tolist()
    assert ae_pos == slots + [0, 1, 2]  # AE token at 0, reconstruction at the original positions 1..
    assert lm_pos == slots + [7, 8, 9]  # after the slots, the continuation goes on from L + 1 = 7 (no LM token)
