"""A curriculum over context lengths: stages of multi-segment pretraining, each starting from the previous one.

A compressor trained on one segment at a time cannot read many segments' slots together: its decoder has never seen
more than one segment's slots. Each stage trains on contexts of ``curriculum_lengths[i]`` tokens (so of
``length / (fixed_mem_size * mean_compression_rate)`` segments), the AE target being the whole context decoded from
all its slots; the decoder learns to read twice as many segments per stage (a later stage may also go back to a
shorter length to consolidate, e.g. with more one-segment samples: ``curriculum_segment_sample_ratios``). A stage is one ordinary pretraining run
(its own prepared data, checkpoints and resume) whose ``restore_from`` is the previous stage's final weights; the
first stage starts from the config's ``restore_from``. Stages before ``curriculum_mix_from`` read ``dataset_repo`` alone;
the later ones add ``extra_dataset_repos`` (generated tool outputs) and one-segment windows (``segment_sample_ratio``).

Stage directories under the work directory: ``stage<i>-<length>/{data/train, data/eval, run, final}``. A stage whose
``final`` directory exists is done; running the build again skips it and resumes the first unfinished stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from icae.config import Config


@dataclass(frozen=True)
class Stage:
    index: int
    context_length: int
    max_steps: int
    batch_size: int
    directory: Path
    segment_sample_ratio: float | None = None  # None: the config's segment_sample_ratio
    extra_dataset_share: float | None = None  # None: the config's extra_dataset_share

    @property
    def final(self) -> Path:
        return self.directory / "final"

    @property
    def done(self) -> bool:
        return self.final.is_dir()


def plan(config: Config, work: str | Path) -> list[Stage]:
    """The stages the config asks for; without ``curriculum_lengths``, one stage at the config's context length."""
    pre, work = config.pretrain, Path(work)
    lengths = pre.curriculum_lengths or [pre.context_length or
                                         config.model.fixed_mem_size * config.model.mean_compression_rate]
    steps = pre.curriculum_steps or [config.training.steps]
    sizes = pre.curriculum_batch_sizes or [config.training.per_device_train_batch_size] * len(lengths)
    ratios = pre.curriculum_segment_sample_ratios or [None] * len(lengths)
    shares = pre.curriculum_extra_dataset_shares or [None] * len(lengths)
    return [Stage(i, length, n, size, work / f"stage{i}-{length}", ratio, share)
            for i, (length, n, size, ratio, share) in enumerate(zip(lengths, steps, sizes, ratios, shares))]


def stage_config(config: Config, stage: Stage, restore_from: str | None) -> Config:
    """The pretraining config of one stage: its context length, steps, batch size, data and run directories."""
    mixed = stage.index >= config.pretrain.curriculum_mix_from
    ratio = config.pretrain.segment_sample_ratio if stage.segment_sample_ratio is None else stage.segment_sample_ratio
    share = config.pretrain.extra_dataset_share if stage.extra_dataset_share is None else stage.extra_dataset_share
    return config.replace(
        extra_dataset_repos=config.pretrain.extra_dataset_repos if mixed else [],
        segment_sample_ratio=ratio if mixed else 0.0, extra_dataset_share=share,
        context_length=stage.context_length, max_steps=stage.max_steps, per_device_train_batch_size=stage.batch_size,
        train_output_file=str(stage.directory / "data" / "train"), eval_output_file=str(stage.directory / "data" / "eval"),
        output_dir=str(stage.directory / "run"), restore_from=restore_from,
        curriculum_lengths=[], curriculum_steps=[], curriculum_batch_sizes=[], curriculum_segment_sample_ratios=[],
        curriculum_extra_dataset_shares=[],
        curriculum_mix_from=0)
