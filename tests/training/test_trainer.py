import json

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from icae.data.collators import AutoencodingCollator
from icae.training import ICAETrainer
from tests.conftest import TEXTS, make_model, small_config


def _trainer(model, tmp_path, steps, **extra):
    config = small_config(fixed_mem_size=8, output_dir=str(tmp_path / "run"), learning_rate=1e-2, max_steps=steps,
                          per_device_train_batch_size=3, report_to="none", use_cpu=True, save_strategy="no",
                          lr_scheduler_type="constant", disable_tqdm=True, **extra)
    rows = [r.tolist() for r in model.tokenize(TEXTS)]
    return ICAETrainer(model=model.train(), args=config.training_arguments(), icae_config=config,
                       train_dataset=Dataset.from_dict({"input_ids": rows}),
                       data_collator=AutoencodingCollator(model.tokenizer.pad_token_id))


def test_trainer_lowers_the_loss_and_keeps_the_base_frozen(family, tmp_path):
    model = make_model(family, fixed_mem_size=8)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    rows = model.tokenize(TEXTS)
    with torch.no_grad():
        start = model(rows, mode="ae").loss.item()
    _trainer(model, tmp_path, steps=30).train()
    with torch.no_grad():
        end = model.eval()(rows, mode="ae").loss.item()
    assert end < 0.7 * start
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_trainer_checkpoint_holds_only_trained_tensors_and_resumes(tmp_path):
    model = make_model(fixed_mem_size=8)
    trainer = _trainer(model, tmp_path, steps=4)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())
    assert json.loads((tmp_path / "saved" / "icae_meta.json").read_text())["model_type"] == "icae"
    fresh = make_model(fixed_mem_size=8, seed=7)
    _trainer(fresh, tmp_path, steps=4)._load_from_checkpoint(str(tmp_path / "saved"))
    assert torch.equal(fresh.memory_embeddings, model.memory_embeddings)


def test_trainer_with_gradient_checkpointing_matches_without(tmp_path):
    losses = []
    for checkpointing in (False, True):
        model = make_model(fixed_mem_size=8)
        trainer = _trainer(model, tmp_path / str(checkpointing), steps=3, gradient_checkpointing=checkpointing)
        losses.append(trainer.train().training_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
