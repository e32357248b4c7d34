"""SimpleLLM: the baseline that answers from the full, uncompressed context with the same base model.

Its memory is the context's own token embeddings, so it shares ICAE's decoder layouts, loss, generation and
checkpoint format. With ``use_lora`` it fine-tunes a LoRA adapter (active when decoding: it is the decoder's adapter,
whatever ``freeze_decoder`` says, as in the original tool); without, the base weights themselves are trained (or,
with ``train: false``, it is the zero-shot base model).
"""

from __future__ import annotations

import torch

from icae.config import ModelArguments
from icae.models import arguments, lora
from icae.models.base import CompressorBase
from icae.models.checkpoint import CheckpointError
from icae.models.icae import LORA_PREFIX
from icae.models.memory import Memory

BASE_PREFIX = "base."


class SimpleLLM(CompressorBase):
    """Full-context baseline with the same interface as :class:`~icae.models.icae.ICAE` (``compress`` returns token
    embeddings)."""

    model_type = "llm"
    meaning_keys = ("model_type", "layout", "use_lora", "lora_r", "lora_alpha", "lora_target_modules")  # its adapter's
    answers_in_turn = True  # the original layout: the original's SimpleLLM ends an answer with the chat turn's end

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        super().__init__(args, base_model, tokenizer)
        if args.use_lora:
            self.model = lora.add_lora(base_model, args)
        if not args.train:
            self.freeze_for_inference()

    def compress_ids(self, rows: list[torch.Tensor], compression_rate: int | None = None) -> Memory:
        arguments.check_id_rows(rows, self.vocab_size)
        arguments.check_compression_rate(compression_rate)
        return self.token_memory(rows)  # the full context: nothing to compress

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
        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"checkpoint does not match this SimpleLLM (use_lora={self.args.use_lora}): missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, shapes differ for {sorted(shapes)[:5]} (lora_r, lora_target_modules or "
                "the base model differs)")
        if self.args.use_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, {k[len(LORA_PREFIX) :]: v for k, v in state.items()})
        else:
            # strict=False: the keys left out are the tied duplicates, restored by the tie itself.
            self.model.load_state_dict({k[len(BASE_PREFIX) :]: v for k, v in state.items()}, strict=False)
