"""Supervised fine-tuning shared by the SQuAD, RepoQA and trajectory recipes."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from icae.config import Config
from icae.data.collators import FinetuneCollator
from icae.models.base import CompressorBase
from icae.training.trainer import ICAETrainer, resolve_resume


def finetune(config: Config, model: CompressorBase, samples: list[dict] | Dataset, callbacks=None,
             collator=None) -> Path:
    """Train ``model`` on ``samples`` (a list of dicts or a ``datasets.Dataset``); save and return
    ``output_dir/final``.

    The collator defaults to :class:`FinetuneCollator` (``{input_ids, prompt_ids, target_ids}`` samples).

    Resumes from ``resume_from_checkpoint`` (true: the latest checkpoint in output_dir).
    """
    trainer = ICAETrainer(
        model=model.train(),
        args=config.training_arguments(
            remove_unused_columns=False,
            ddp_find_unused_parameters=config.training.get("ddp_find_unused_parameters", True),
        ),
        train_dataset=samples if isinstance(samples, Dataset) else Dataset.from_list(samples),
        data_collator=collator or FinetuneCollator(model.tokenizer.pad_token_id),
        icae_config=config,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resolve_resume(config.training.get("resume_from_checkpoint"),
                                                        trainer.args.output_dir))
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))
    return final
