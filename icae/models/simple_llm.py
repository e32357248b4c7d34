"""SimpleLLM: the baseline that answers from the full, uncompressed context with the same base model.

Its memory is the context's own token embeddings, so it shares ICAE's decoder layouts, loss, generation and
checkpoint format. With ``use_lora`` it fine-tunes a LoRA adapter (the adapter is active when decoding); without,
the base weights themselves are trained (or, with ``train: false``, it is the zero-shot base model).
"""

from __future__ import annotations

import torch

from icae.config import ModelArguments
from icae.models.base import CompressorBase, Memory
from icae.models.icae import ICAE, LORA_PREFIX, lora_config

BASE_PREFIX = "base."


class SimpleLLM(CompressorBase):
    """Full-context baseline with the same interface as :class:`ICAE` (``compress`` returns token embeddings)."""

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        from peft import get_peft_model

        super().__init__(args, base_model, tokenizer)
        if args.use_lora:
            ICAE._check_targets(base_model, args.lora_target_modules)
            for p in base_model.parameters():
                p.requires_grad_(False)
            self.model = get_peft_model(base_model, lora_config(args))
        if not args.train:
            self.freeze_for_inference()

    def compress_ids(self, rows: list[torch.Tensor]) -> Memory:
        return self.token_memory(rows)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        if self.args.use_lora:
            from peft import get_peft_model_state_dict

            return {LORA_PREFIX + k: v for k, v in get_peft_model_state_dict(self.model).items()}
        # Full fine-tuning: every base weight, once (tied weights such as embeddings/LM head share storage).
        state, seen = {}, set()
        for k, v in self.model.state_dict().items():
            if v.data_ptr() not in seen:
                seen.add(v.data_ptr())
                state[BASE_PREFIX + k] = v
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        if expected != set(state):
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"checkpoint does not match this SimpleLLM (use_lora={self.args.use_lora}): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if self.args.use_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, {k[len(LORA_PREFIX) :]: v for k, v in state.items()})
        else:
            # strict=False: the keys left out are the tied duplicates, restored by the tie itself.
            self.model.load_state_dict({k[len(BASE_PREFIX) :]: v for k, v in state.items()}, strict=False)
