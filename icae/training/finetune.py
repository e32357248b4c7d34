"""Supervised fine-tuning shared by the SQuAD, RepoQA and trajectory recipes."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from icae.config import Config
from icae.data.collators import FinetuneCollator
from icae.data.tasks import AnswerSample
from icae.models.base import CompressorBase
from icae.training.trainer import ICAETrainer, resolve_resume
from icae.utils.io import ensure_writable


def finetune(config: Config, model: CompressorBase, samples: list[AnswerSample] | Dataset, callbacks=None,
             collator=None) -> Path:
    """Train ``model`` on ``samples`` (:class:`AnswerSample` list, or a ``datasets.Dataset`` for ``collator``); save
    and return ``output_dir/final``.

    The collator defaults to :class:`FinetuneCollator` (the FT layout). Resumes from ``resume_from_checkpoint`` (true:
    the latest checkpoint in output_dir), after checking that the run's recipe did not change.
    """
    ensure_writable(config.training.output_dir or "trainer_output", "output_dir")
    if not isinstance(samples, Dataset):
        samples = Dataset.from_list([s.features() for s in samples])
    trainer = ICAETrainer(
        model=model.train(),
        args=config.training_arguments(remove_unused_columns=False),
        train_dataset=samples,
        data_collator=collator or FinetuneCollator(model.tokenizer.pad_token_id),
        icae_config=config,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    final = Path(trainer.args.output_dir) / "final"
    trainer.save_model(str(final))
    return final
