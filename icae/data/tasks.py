"""The one shape of every task's data: typed samples in a train/test :class:`Split`.

Each task module has one loader, ``load_<task>(config, ...) -> Split`` (``load_squad_task(config, layout)``,
``load_repoqa_task(config, layout)``, ``load_trajectory_task(config)``, ``load_pretraining(config)``). A loader reads
the config's data keys and, where samples depend on the model, its layout (:mod:`icae.models.framing`: the tokenizer,
prompt and answer frames; ``icae.models.auto.layout_for`` builds it before the model is loaded); never the model, never
``config.model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Split(Generic[T]):
    """Training and test samples, and what the loader decided on the way (skipped samples, sources)."""

    train: list[T]
    test: list[T]
    info: dict = field(default_factory=dict)


@dataclass
class AnswerSample:
    """Compress ``input_ids``; read ``prompt_ids`` after the memory; learn or score ``target_ids`` (the FT layout)."""

    input_ids: list[int]
    prompt_ids: list[int]
    target_ids: list[int]
    prefix_ids: list[int] = field(default_factory=list)  # original layout: read before the memory, in its user turn

    def features(self) -> dict[str, list[int]]:
        """What :class:`~icae.data.collators.FinetuneCollator` reads."""
        out = {"input_ids": self.input_ids, "prompt_ids": self.prompt_ids, "target_ids": self.target_ids}
        return {**out, "prefix_ids": self.prefix_ids} if self.prefix_ids else out


def limit(samples: list[T], n: int | None) -> list[T]:
    """The first ``n`` samples (all when ``n`` is None)."""
    return samples if n is None else samples[:n]
