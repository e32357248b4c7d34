"""Pretrain an ICAE with the autoencoding and language-modelling objectives.

    python -m icae.scripts.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml
    python -m icae.scripts.pretrain --config_path icae/configs/pretrain_tiny_qwen2.yaml
    accelerate launch --config_file icae/configs/accelerate/ddp.yaml -m icae.scripts.pretrain --config_path ...

Load config -> build the model -> load the prepared splits -> train with PretrainingTrainer (AE/LM mixed by
``lm_ratio`` or weighted by ``lambda``; checkpoints every ``save_steps``; an interrupted run resumes from its latest
checkpoint) -> evaluate on the held-out split -> save the final trained tensors and the metrics JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from icae.config import Config, ConfigError, config_from_cli
from icae.data.collators import PretrainingCollator
from icae.data.prepare_data_for_pretraining import load_pretraining
from icae.models import build_model
from icae.models.framing import Layout
from icae.scripts import entry
from icae.training import PretrainingTrainer
from icae.training.results import free_path, results_dir
from icae.training.trainer import resolve_resume
from icae.utils.io import atomic_write_json, ensure_writable


def make_collator(config: Config, layout: Layout) -> PretrainingCollator:
    pre, tokenizer = config.pretrain, layout.tokenizer
    return PretrainingCollator(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                               lm_ratio=pre.lm_ratio, lm_lambda=pre.lm_lambda, min_tokens_for_lm=pre.min_tokens_for_lm,
                               leave_tokens_for_lm=pre.leave_tokens_for_lm, seed=config.seed,
                               ae_end=tuple(layout.ae_end))


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


def main(argv: list[str] | None = None, callbacks=None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    trainer = build_trainer(config, callbacks)
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))  # on every rank: it synchronises under FSDP/DeepSpeed and writes on rank 0 only
    if trainer.is_world_process_zero():
        path = free_path(results_dir(config), f"pretrain_{Path(config.model.model_name_or_path).name}")
        atomic_write_json(path, {"config": config.to_dict(), "eval": metrics, "log_history": trainer.state.log_history,
                                 "checkpoint": str(final)})
        print(f"final checkpoint: {final}\nmetrics: {path}")
    return metrics


if __name__ == "__main__":
    entry(main)
