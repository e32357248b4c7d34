"""The original tool's layout (``layout: original``; ``seed`` is its earlier name), restated from its description so
that its checkpoints reproduce its outputs here. :class:`icae.models.framing.OriginalLayout` applies it.

What differs from the native layout:

- Every encoder input and every decoder prompt is framed by the base model's chat template, as one user turn
  followed by the assistant's header: ``user_prefix + content + suffix + assistant_prefix`` (thinking disabled). The
  frame is read off the tokenizer's template (:func:`chat_frame`).
- A context of L framed tokens is cut into ``n = ceil(L / (k * rate))`` segments of ``ceil(L / n)`` tokens, the last
  one shorter (:func:`original_segments`).
- With position identifiers, a segment's tokens take ids ``1..len`` and its k memory tokens ``linspace(1, len, k)``
  truncated to integers (:func:`original_memory_positions`); without, ids are contiguous from 0. The decoder always uses
  contiguous positions.
- A context is compressed when it has at least k tokens; the decoder prompts use no learned AE/LM/FT token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from icae.errors import UserError

CONTENT = "{{content}}"
ASSISTANT_MARKER = "<|im_start|>assistant\n"  # where the original splits the generation prompt (ChatML templates)


@dataclass(frozen=True)
class ChatFrame:
    """The token ids around one user turn's content, and the assistant header that follows it."""

    user_prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    assistant_prefix: tuple[int, ...]
    think: int = 0  # the assistant header's last tokens that are an (empty) think block, dropped from history turns

    def wrap(self, content: list[int]) -> list[int]:
        return [*self.user_prefix, *content, *self.suffix, *self.assistant_prefix]


def _render(tokenizer, generation_prompt: bool) -> str:
    kwargs = dict(tokenize=False, add_generation_prompt=generation_prompt)
    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": CONTENT}], enable_thinking=False, **kwargs)
    except TypeError:  # templates without the thinking switch
        return tokenizer.apply_chat_template([{"role": "user", "content": CONTENT}], **kwargs)


def chat_frame(tokenizer) -> ChatFrame:
    """The frame of one user turn in ``tokenizer``'s chat template.

    As the original: render ``[{"role": "user", "content": "{{content}}"}]`` with the generation prompt and thinking
    off, split at the placeholder, and split the rest at the assistant header (ChatML). Templates without that header
    take the generation prompt as the difference between the renderings with and without it.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"layout: original frames every input with the base model's chat template, and the tokenizer of "
                        f"{getattr(tokenizer, 'name_or_path', '?')!r} has none: use layout: native")
    full = _render(tokenizer, True)
    if full.count(CONTENT) != 1:
        raise UserError("layout: original: the chat template does not place a user message's content exactly once")
    user_prefix, rest = full.split(CONTENT)
    encode = lambda text: tuple(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    if ASSISTANT_MARKER in rest:
        suffix, think = rest.split(ASSISTANT_MARKER, 1)
        think_ids = encode(think) if think else ()
        return ChatFrame(encode(user_prefix), encode(suffix), encode(ASSISTANT_MARKER) + think_ids, len(think_ids))
    plain = _render(tokenizer, False)
    return ChatFrame(encode(user_prefix), encode(plain.split(CONTENT)[1]), encode(full[len(plain):]))


def original_segments(length: int, mem_size: int, compression_rate: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each segment: ``n = ceil(L / (k * rate))`` segments of ``ceil(L / n)`` tokens."""
    if length <= 0:
        raise ValueError(f"context length must be positive, got {length}")
    n = math.ceil(length / (mem_size * compression_rate))
    size = math.ceil(length / n)
    return [(i * size, min((i + 1) * size, length)) for i in range(n)]


def original_memory_positions(length: int, mem_size: int) -> torch.Tensor:
    """Position ids of a segment's memory tokens: ``linspace(1, length, k)`` in float32, truncated (the original's
    ``.long()``). Example: a 10-token segment with k=4 gives [1, 4, 7, 10]."""
    return torch.linspace(1, length, mem_size).long()

