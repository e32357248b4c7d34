"""Collators: lists of token ids -> the padded tensors and layout a model's ``forward`` takes."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from icae.utils.padding import pad_ids


@dataclass
class AutoencodingCollator:
    """Features ``{"input_ids": [...]}`` -> the AE layout: the model reproduces each context, then EOS."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = pad_ids([f["input_ids"] for f in features], self.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "mode": "ae"}


def rows_or_none(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Pad id lists, or (None, None) when every list is empty."""
    if not any(rows):
        return None, None
    return pad_ids(rows, pad_id)


@dataclass
class PretrainingCollator:
    """Samples ``{sample_id, input_ids, continuation_ids}`` -> one mixed AE/LM batch for a single model call.

    AE row: ``[slots][AE] context EOS``. LM row: ``[slots][LM?] continuation``, its first ``leave_tokens_for_lm`` tokens
    fed as a prompt without loss. Each sample takes the LM objective with probability ``lm_ratio``, decided by its
    ``sample_id`` and the seed (so a resumed run makes the same choices); a sample whose continuation is shorter than
    ``min_tokens_for_lm`` always autoencodes. With ``lm_lambda`` every sample trains both objectives on one compressed
    context, and the loss is ``(1 - lambda) * AE + lambda * LM``. ``ae_end``: what ends an AE target (default EOS;
    the original layout ends it with the chat template's end of turn, as the original). ``loss_per_sample``: each row
    weighs the same in its objective's loss, whatever its length (see the model's ``forward``).
    """

    pad_token_id: int
    eos_token_id: int
    lm_ratio: float = 0.0
    lm_lambda: float | None = None
    min_tokens_for_lm: int = 1
    leave_tokens_for_lm: int = 0
    seed: int = 0
    ae_end: tuple[int, ...] | None = None
    loss_per_sample: bool = False

    def uses_lm(self, sample_id: int) -> bool:
        return random.Random(self.seed * 1_000_003 + int(sample_id)).random() < self.lm_ratio

    def __call__(self, features: list[dict]) -> dict:
        modes, index, prompts, targets = [], [], [], []
        for i, f in enumerate(features):
            cont = list(f.get("continuation_ids") or [])
            can_lm = len(cont) >= max(self.min_tokens_for_lm, self.leave_tokens_for_lm + 1)
            both = self.lm_lambda is not None
            objectives = ["ae", "lm"] if both else ["lm" if self.uses_lm(f.get("sample_id", i)) else "ae"]
            for objective in objectives:
                if objective == "lm" and not can_lm:
                    if both:
                        continue
                    objective = "ae"
                modes.append(objective)
                index.append(i)
                if objective == "ae":
                    prompts.append([])
                    targets.append(list(f["input_ids"]) + list(self.ae_end or [self.eos_token_id]))
                else:
                    prompts.append(cont[: self.leave_tokens_for_lm])
                    targets.append(cont[self.leave_tokens_for_lm :])
        ids, mask = pad_ids([f["input_ids"] for f in features], self.pad_token_id)
        prompt_ids, prompt_mask = rows_or_none(prompts, self.pad_token_id)
        target_ids, target_mask = pad_ids(targets, self.pad_token_id)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "mode": modes,
            "context_index": index,
            "prompt_ids": prompt_ids,
            "prompt_attention_mask": prompt_mask,
            "target_ids": target_ids,
            "target_attention_mask": target_mask,
        }
        if self.lm_lambda is not None:
            batch["mode_weights"] = {"ae": 1.0 - self.lm_lambda, "lm": self.lm_lambda}
        if self.loss_per_sample:
            batch["loss_per_sample"] = True
        return batch


@dataclass
class FinetuneCollator:
    """Samples ``{input_ids, prompt_ids, target_ids}`` -> the FT layout ``[slots][FT] prompt target``, loss on the
    target only (SQuAD answers, RepoQA needles)."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = pad_ids([f["input_ids"] for f in features], self.pad_token_id)
        prompt_ids, prompt_mask = pad_ids([f["prompt_ids"] for f in features], self.pad_token_id)
        target_ids, target_mask = pad_ids([f["target_ids"] for f in features], self.pad_token_id)
        batch = {"input_ids": ids, "attention_mask": mask, "mode": "ft", "prompt_ids": prompt_ids,
                 "prompt_attention_mask": prompt_mask, "target_ids": target_ids, "target_attention_mask": target_mask}
        prefix_ids, prefix_mask = rows_or_none([f.get("prefix_ids") or [] for f in features], self.pad_token_id)
        if prefix_ids is not None:  # original layout: tokens before the memory (RepoQA's first instruction)
            batch.update(prefix_ids=prefix_ids, prefix_attention_mask=prefix_mask)
        return batch
