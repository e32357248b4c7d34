"""The equal-compute control's language-model training (icae/training/lm.py): its loss is the base model's own
next-token loss through the LoRA, on every window token and no padding."""

import math

import pytest
import torch
import torch.nn.functional as F

from icae.training.lm import LMCollator, LMTrainer
from tests.conftest import make_model


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-mistral"])
def test_the_lm_loss_is_next_token_cross_entropy_over_the_real_tokens(family, tmp_path):
    from icae.config import load_config

    model = make_model(family, model_type="llm", use_lora=True)
    rows = [{"input_ids": [5, 6, 7, 8], "continuation_ids": [9, 10]}, {"input_ids": [11, 12, 13], "continuation_ids": []}]
    batch = LMCollator(pad_token_id=model.tokenizer.pad_token_id)(rows)
    config = load_config(None, {"model_name_or_path": family, "model_type": "llm", "use_lora": True,
                                "output_dir": str(tmp_path), "use_cpu": True, "report_to": "none"})
    trainer = LMTrainer(model=model, args=config.training_arguments(remove_unused_columns=False), icae_config=config)
    loss = trainer.compute_loss(model, batch).item()
    # By hand: each row alone, position t predicting token t + 1, summed over the 5 + 2 predicted tokens.
    total, count = 0.0, 0
    for r in rows:
        ids = torch.tensor([r["input_ids"] + r["continuation_ids"]])
        with torch.no_grad():
            logits = model.model(input_ids=ids).logits[0]
        total += F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    assert math.isclose(loss, total / count, rel_tol=1e-4)


def test_the_lm_trainer_refuses_a_compressor(tmp_path):
    from icae.config import load_config

    model = make_model()
    config = load_config(None, {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none"})
    trainer = LMTrainer(model=model, args=config.training_arguments(remove_unused_columns=False), icae_config=config)
    with pytest.raises(TypeError, match="trains a SimpleLLM's LoRA"):
        trainer.compute_loss(model, LMCollator(pad_token_id=1)([{"input_ids": [5, 6]}]))
