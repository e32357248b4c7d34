"""What pretraining is built from: the collator and the trainer for a config (the library half of
``icae.scripts.pretrain``, which trains, evaluates and saves; ``build_compressor`` and ``demo`` build theirs here too,
so that no recipe imports another)."""

from __future__ import annotations

import os

import torch

from icae.config import Config, ConfigError
from icae.data.collators import PretrainingCollator
from icae.data.prepare_data_for_pretraining import load_pretraining
from icae.models import build_model
from icae.models.framing import Layout
from icae.training.trainer import PretrainingTrainer
from icae.utils.io import ensure_writable


def make_collator(config: Config, layout: Layout) -> PretrainingCollator:
    pre, tokenizer = config.pretrain, layout.tokenizer
    return PretrainingCollator(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                               lm_ratio=pre.lm_ratio, lm_lambda=pre.lm_lambda, min_tokens_for_lm=pre.min_tokens_for_lm,
                               leave_tokens_for_lm=pre.leave_tokens_for_lm, seed=config.seed,
                               ae_end=tuple(layout.ae_end), loss_per_sample=pre.loss_per_sample)


def build_trainer(config: Config, callbacks=None) -> PretrainingTrainer:
    if config.model.model_type != "icae":
        raise ConfigError(["model_type: pretraining trains a compressor; set model_type: icae"], "pretraining config")
    config.require("pretraining", "output_dir", "train_output_file", "eval_output_file")
    ensure_writable(config.training.output_dir, "output_dir")
    if "wandb" in str(config.training.get("report_to", "")):
        os.environ.setdefault("WANDB_MODE", "offline")  # never require an account or a network
    split = load_pretraining(config)  # data problems surface before the model is loaded
    if len(split.test) == 0 and config.training.get("eval_strategy", "no") != "no":
        raise ConfigError([f"eval_strategy: {config.training.get('eval_strategy')!r} evaluates on eval_output_file "
                           f"{config.pretrain.eval_output_file}, which holds no sample (prepared with eval_size: 0): "
                           "set eval_strategy: no, or prepare a held-out split (eval_size >= 1)"], "pretraining config")
    torch.manual_seed(config.seed)
    model = build_model(config)
    return PretrainingTrainer(
        model=model.train(),
        args=config.training_arguments(remove_unused_columns=False),  # the collator reads continuation_ids, sample_id
        train_dataset=split.train,
        eval_dataset=split.test if len(split.test) else None,  # eval_size 0: no held-out split, no evaluation
        data_collator=make_collator(config, model.layout),
        icae_config=config,
        callbacks=callbacks,
    )
