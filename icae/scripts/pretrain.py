"""Pretrain an ICAE with the autoencoding and language-modelling objectives.

    python -m icae.data.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml
    python -m icae.scripts.pretrain --config_path icae/configs/pretrain_tiny_qwen2.yaml
    accelerate launch --config_file icae/configs/accelerate/ddp.yaml -m icae.scripts.pretrain --config_path ...

Load config -> build the model -> load the prepared splits -> train with PretrainingTrainer (AE/LM mixed by
``lm_ratio`` or weighted by ``lambda``; checkpoints every ``save_steps``; ``resume_from_checkpoint: true`` continues
from the latest one) -> evaluate on the held-out split -> save the final trained tensors and the metrics JSON.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from icae.config import Config, ConfigError, config_from_cli
from icae.data.collators import PretrainingCollator
from icae.models import build_model
from icae.training import PretrainingTrainer
from icae.training.trainer import resolve_resume
from icae.utils.io import atomic_write_json

METRICS_DIR = Path(__file__).resolve().parents[1] / "data" / "metrics"


def load_splits(config: Config):
    from datasets import load_from_disk

    problems = []
    for key in ("train_output_file", "eval_output_file"):
        path = getattr(config.task, key)
        if not path or not Path(path).is_dir():
            problems.append(
                f"{key}: no prepared split at {path!r}; run `python -m icae.data.prepare_data_for_pretraining "
                "--config_path <this config>` first"
            )
    if problems:
        raise ConfigError(problems, "pretraining config")
    train = load_from_disk(config.task.train_output_file)
    held = load_from_disk(config.task.eval_output_file)
    if config.task.max_train_samples:
        train = train.select(range(min(config.task.max_train_samples, len(train))))
    if config.task.max_eval_samples:
        held = held.select(range(min(config.task.max_eval_samples, len(held))))
    return train, held


def make_collator(config: Config, tokenizer) -> PretrainingCollator:
    task = config.task
    return PretrainingCollator(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        lm_ratio=task.lm_ratio,
        lm_lambda=task.lm_lambda,
        min_tokens_for_lm=task.min_tokens_for_lm,
        leave_tokens_for_lm=task.leave_tokens_for_lm,
        seed=config.training.get("seed", 42),
    )


def build_trainer(config: Config, callbacks=None) -> PretrainingTrainer:
    if config.model.model_type != "icae":
        raise ConfigError(["model_type: pretraining trains a compressor; set model_type: icae"], "pretraining config")
    if "wandb" in str(config.training.get("report_to", "")):
        os.environ.setdefault("WANDB_MODE", "offline")  # never require an account or a network
    torch.manual_seed(config.training.get("seed", 42))
    model = build_model(config)
    train, held = load_splits(config)
    args = config.training_arguments(
        remove_unused_columns=False,  # the collator needs continuation_ids and sample_id
        ddp_find_unused_parameters=config.training.get("ddp_find_unused_parameters", True),  # FT token is unused
    )
    return PretrainingTrainer(
        model=model.train(),
        args=args,
        train_dataset=train,
        eval_dataset=held,
        data_collator=make_collator(config, model.tokenizer),
        icae_config=config,
        callbacks=callbacks,
    )


def main(argv: list[str] | None = None, callbacks=None) -> dict:
    config = config_from_cli(sys.argv[1:] if argv is None else argv, description=__doc__)
    trainer = build_trainer(config, callbacks)
    trainer.train(resume_from_checkpoint=resolve_resume(config.training.get("resume_from_checkpoint"),
                                                        trainer.args.output_dir))
    metrics = trainer.evaluate()
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))  # on every rank: it synchronises under FSDP/DeepSpeed and writes on rank 0 only
    if trainer.is_world_process_zero():
        out_dir = Path(config.task.output_path or METRICS_DIR)
        name = Path(config.model.model_name_or_path).name
        atomic_write_json(
            out_dir / f"pretrain_{name}.json",
            {"config": config.to_dict(), "eval": metrics, "log_history": trainer.state.log_history, "checkpoint": str(final)},
        )
        print(f"final checkpoint: {final}\nmetrics: {out_dir / f'pretrain_{name}.json'}")
    return metrics


if __name__ == "__main__":
    main()
