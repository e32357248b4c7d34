"""Language-model training of a SimpleLLM's LoRA: the equal-compute control's continued pretraining
(``icae.scripts.build_simple_llm``). The next-token objective on plain text windows, through the base model the LoRA
wraps; checkpoints, resume and the record are the compressors' (:class:`ICAETrainer`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icae.models.simple_llm import SimpleLLM
from icae.training.trainer import ICAETrainer

IGNORE = -100


@dataclass
class LMCollator:
    """Prepared pretraining samples (``input_ids`` + ``continuation_ids``) -> right-padded language-model batches: each
    sample's whole text is the window, every token after its first is a target, padding is no target."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        rows = [list(f["input_ids"]) + list(f.get("continuation_ids") or []) for f in features]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)  # (batch, width)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, IGNORE)  # the model shifts them: position t predicts token t + 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LMTrainer(ICAETrainer):
    """Trains a :class:`SimpleLLM` (with ``use_lora``) as a language model: mean cross-entropy over every target token
    of the batch, through the LoRA-wrapped base (the adapter SimpleLLM decodes with)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        simple = self.accelerator.unwrap_model(model)
        if not isinstance(simple, SimpleLLM) or not simple.args.use_lora:
            raise TypeError("LMTrainer trains a SimpleLLM's LoRA (model_type: llm, use_lora: true)")
        out = simple.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                          labels=inputs["labels"], use_cache=False)
        return (out.loss, out) if return_outputs else out.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Held-out loss only (the model's own forward takes no ``labels``: evaluation goes through ``compute_loss``)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
