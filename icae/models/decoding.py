"""Decoding from a prefilled decoder batch: sampling parameters, the next-token choice, and the KV-cache loop.

Free functions over a :class:`~icae.models.base.CompressorBase`, whose ``decoder_context`` puts its base model in the
decoder's adapter state. The memory (and prompt) is prefilled once; each generated token then costs one step that
reads the cached keys/values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

if TYPE_CHECKING:
    from icae.models.base import CompressorBase


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens: greedy by default; ``do_sample`` draws from the (temperature, top-k, top-p) distribution."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    stop_token_ids: Optional[tuple[int, ...]] = None  # None: the tokenizer's EOS; () never stops early

    def __post_init__(self):
        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            problems.append(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise ValueError("; ".join(problems))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @classmethod
    def of(cls, max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, stop_token_ids: Sequence[int] | None = None) -> "SamplingParams":
        return cls(max_new_tokens, do_sample, temperature, top_k, top_p,
                   None if stop_token_ids is None else tuple(stop_token_ids))


def pick_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row, ``(batch,)``, from last-position logits ``(batch, vocab)``."""
    if not params.do_sample:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > params.top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(model: "CompressorBase", inputs: dict[str, torch.Tensor], params: SamplingParams,
           generator: torch.Generator | None = None, cache=None) -> list[list[int]]:
    """The KV-cache loop over a left-padded decoder batch (inputs_embeds, attention_mask, position_ids).

    Returns each row's new ids, the stop token excluded. ``cache``: keys/values of positions before ``inputs`` (whose
    attention mask then covers them too); it is extended in place.
    """
    from transformers import DynamicCache

    stops = set(params.stop_token_ids) if params.stop_token_ids is not None else {model.tokenizer.eos_token_id}
    batch = inputs["inputs_embeds"].shape[0]
    mask, next_pos = inputs["attention_mask"], inputs["position_ids"][:, -1] + 1  # (batch, T), (batch,)
    out: list[list[int]] = [[] for _ in range(batch)]
    # Generating token k feeds tokens 1..k-1 back: the window of model_max_length positions bounds the new tokens.
    allowed = min(params.max_new_tokens, model.args.model_max_length - int(mask.sum(dim=1).max()) + 1)
    if allowed <= 0:
        return out
    done = [False] * batch
    with model.decoder_context():
        cache = cache if cache is not None else DynamicCache(config=model.base_config)
        step = model.model(**inputs, cache=cache, use_cache=True, logits_to_keep=1)
        for produced in range(1, allowed + 1):
            token = pick_tokens(step.logits[:, -1].float(), params, generator)  # (batch,)
            for i, t in enumerate(token.tolist()):
                if not done[i]:
                    if t in stops:
                        done[i] = True
                    else:
                        out[i].append(t)
            if all(done) or produced == allowed:
                break  # no forward pass for a token that will not be used
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            step = model.model(inputs_embeds=model.embed(token[:, None]), attention_mask=mask,
                               position_ids=next_pos[:, None], cache=step.cache, use_cache=True)
            next_pos = next_pos + 1
    return out
