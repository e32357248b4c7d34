"""A thin ``transformers.Trainer`` subclass for ICAE and SimpleLLM.

What it changes: the loss comes from the model's own forward (it knows its layouts), and checkpoints hold only the
trained tensors plus the resolved config (``save_pretrained``), which resume loads back strictly.
"""

from __future__ import annotations

from transformers import Trainer

from icae.config import Config
from icae.models.base import CompressorOutput, load_trained_tensors


class ICAETrainer(Trainer):
    def __init__(self, *args, icae_config: Config | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.icae_config = icae_config

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out: CompressorOutput = model(**inputs)
        return (out.loss, out) if return_outputs else out.loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir, self.icae_config)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model or self.model)
        model.load_trainable_state_dict(load_trained_tensors(resume_from_checkpoint))
