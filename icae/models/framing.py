"""A compressor's layout as an object: everything that differs between this project's layout and the original tool's.

``layout:`` (a config key) names one of two layouts, and this module is the one place that tells them apart:

- :class:`NativeLayout` (``native``): balanced segments, memory ids at the centres of the blocks they summarise, the
  learned AE/LM/FT tokens after the slots, slot position ids kept by the decoder (with ``use_position_identifiers``),
  agent turns in ChatML.
- :class:`OriginalLayout` (``original``; ``seed`` is its earlier name): exactly the original tool's (see
  :mod:`icae.models.original`): the base model's chat template around every encoder input and decoder prompt,
  segments of ``ceil(L/n)`` tokens, memory ids ``linspace(1, len, k)`` truncated, contiguous decoder positions.

A layout is built from the model config and the tokenizer by the model class (:meth:`CompressorBase.make_layout`,
which says whether the class compresses and how its answers end) and kept as ``model.layout``; data loaders receive it
(:func:`icae.models.auto.layout_for` builds one before the model is loaded). It owns: segmenting and the encoder's
position ids (:meth:`Layout.segments`), the compress threshold and the memory length, the decoder's row frame
(:meth:`Layout.frame_row`), the AE and answer end tokens, stop ids, agent turns' headers and footers, the QA template.
A new layout is one subclass here and one entry in :data:`LAYOUTS`.
"""

from __future__ import annotations

import abc
import functools
from typing import ClassVar

import torch

from icae.config.layout_names import canonical_layout
from icae.config.sections import SquadArguments
from icae.errors import UserError
from icae.models.original import CONTENT, ChatFrame, chat_frame, original_memory_positions, original_segments
from icae.models.segments import memory_position_ids, num_segments, segment_lengths

TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"  # ChatML, the native layout's agent turns
NATIVE_QA_TEMPLATE = SquadArguments().qa_prompt_template
ORIGINAL_QA_TEMPLATE = ("Based on the context, answer the following question in 5 words or less without formatting: "
                        "{question}")


def token_ids(tokenizer, text: str) -> list[int]:
    """A text's token ids as the layouts and data loaders encode every piece: no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


class Layout(abc.ABC):
    """What one layout computes for a model of config ``args`` (:class:`~icae.config.ModelArguments`) and its tokenizer.

    ``compressor``: the model class turns contexts into slots (ICAE), or reads them as tokens (SimpleLLM).
    ``answer_in_turn``: in the original layout, the class's answers end with the chat turn's end (SimpleLLM), not EOS.
    The tokenizer may be None where only config-level answers are asked (:attr:`decoder_keeps_positions`).
    """

    name: ClassVar[str]
    takes_prefix: ClassVar[bool] = False  # decoder rows may read tokens before the memory (RepoQA's instruction)

    def __init__(self, args, tokenizer, compressor: bool = True, answer_in_turn: bool = False):
        self.args, self.tokenizer = args, tokenizer
        self.compressor, self.answer_in_turn = compressor, answer_in_turn

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.args.fixed_mem_size}, rate={self.args.mean_compression_rate})"

    def encode(self, text: str) -> list[int]:
        return token_ids(self.tokenizer, text)

    # ------------------------------------------------------------------------------------------- encoder
    @property
    @abc.abstractmethod
    def compress_threshold(self) -> int:
        """The fewest tokens a context has for it to be compressed (shorter ones stay tokens)."""

    def compresses(self, num_tokens: int) -> bool:
        """Whether a context of ``num_tokens`` tokens becomes slots: a compressor with ``do_compress`` on, and at
        least :attr:`compress_threshold` tokens."""
        return self.compressor and self.args.do_compress and num_tokens >= self.compress_threshold

    def memory_length(self, num_tokens: int) -> int:
        """Decoder positions an unframed context of ``num_tokens`` tokens occupies once it is memory: ``n_segments *
        k`` slots when it is compressed, the tokens themselves otherwise. Both layouts cut ``ceil(L / (k * rate))``
        segments."""
        if not self.compresses(num_tokens):
            return num_tokens
        k = self.args.fixed_mem_size
        return num_segments(num_tokens, k, self.args.mean_compression_rate) * k

    @abc.abstractmethod
    def segments(self, row: torch.Tensor, rate: int, framed: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One context ``(L,)`` -> its segments, each ``(token ids (n,), position ids (n + k,))`` of ``[tokens; k memory
        tokens]``. ``framed`` False: agent observations, compressed as they are in both layouts."""

    # ------------------------------------------------------------------------------------------- decoder
    @property
    @abc.abstractmethod
    def decoder_keeps_positions(self) -> bool:
        """Whether the decoder reads slots at their own position ids (else every decoder position is contiguous)."""

    @abc.abstractmethod
    def frame_row(self, mode: str, prompt: list[int], prefix: list[int]) -> tuple[list[int], bool, list[int]]:
        """One decoder row around its slots: ``(ids before the slots, whether the mode's special token follows the
        slots, ids after them)``; the target follows. ``prefix``: ids before the slots (only where
        :attr:`takes_prefix`)."""

    @property
    @abc.abstractmethod
    def ae_end(self) -> list[int]:
        """What ends an autoencoding target after the context."""

    @property
    @abc.abstractmethod
    def answer_end(self) -> list[int] | None:
        """What ends a QA/RepoQA answer; None: EOS after the answer encoded with its leading space (native)."""

    @abc.abstractmethod
    def qa_template(self, configured: str) -> str:
        """The QA prompt, given the configured ``qa_prompt_template``."""

    @property
    @abc.abstractmethod
    def stop_ids(self) -> list[int] | None:
        """Ids that end a generated answer by default; None: the decoding loop's own (EOS)."""

    @property
    def turn_stop_ids(self) -> list[int]:
        """Ids that end a generated agent turn: ``<|im_end|>`` when it is one token, EOS, and the layout's own."""
        ids = self.encode(TURN_END)
        return sorted({self.tokenizer.eos_token_id, *(ids if len(ids) == 1 else []), *(self.stop_ids or [])})

    # ------------------------------------------------------------------------------------------- agent turns
    @abc.abstractmethod
    def turn_header(self, role: str) -> tuple[list[int], list[int]]:
        """``(header, think)`` of a turn of ``role``: the ids before its content, and the think block read only while
        the turn is being made (empty but for an assistant header whose template opens one)."""

    @property
    @abc.abstractmethod
    def turn_footer(self) -> list[int]:
        """The ids after a turn's content."""


class NativeLayout(Layout):
    """This project's layout (the module's docstring)."""

    name = "native"

    @property
    def compress_threshold(self) -> int:
        return self.args.min_tokens_to_compress

    def segments(self, row, rate, framed=True):
        k, out, start = self.args.fixed_mem_size, [], 0
        for n in segment_lengths(row.numel(), k, rate):
            if self.args.use_position_identifiers:
                # Global 1-based positions: id 0 is left to the AE token that starts a reconstruction.
                pos = torch.cat([torch.arange(start + 1, start + n + 1), memory_position_ids(start + 1, start + n, k)])
            else:
                pos = torch.arange(n + k)
            out.append((row[start : start + n], pos))
            start += n
        return out

    @property
    def decoder_keeps_positions(self) -> bool:
        return self.compressor and self.args.use_position_identifiers and self.args.do_compress

    def frame_row(self, mode, prompt, prefix):
        return [], True, list(prompt)

    @property
    def ae_end(self) -> list[int]:
        return [self.tokenizer.eos_token_id]

    @property
    def answer_end(self) -> list[int] | None:
        return None

    def qa_template(self, configured: str) -> str:
        return configured

    @property
    def stop_ids(self) -> list[int] | None:
        return None

    def turn_header(self, role: str) -> tuple[list[int], list[int]]:
        return self.encode(f"{TURN_START}{role}\n"), []

    @property
    def turn_footer(self) -> list[int]:
        return self.encode(TURN_END + "\n")


class OriginalLayout(Layout):
    """The original tool's layout (the module's docstring; :mod:`icae.models.original` for its arithmetic)."""

    name = "original"
    takes_prefix = True

    @functools.cached_property
    def frame(self) -> ChatFrame:
        """The chat template's frame of one user turn (a UserError when the tokenizer has no template)."""
        return chat_frame(self.tokenizer)

    @property
    def compress_threshold(self) -> int:
        return self.args.fixed_mem_size  # the original compresses a context of at least k tokens

    def segments(self, row, rate, framed=True):
        k, out = self.args.fixed_mem_size, []
        ids = torch.tensor(self.frame.wrap(row.tolist()), dtype=torch.long) if framed else row
        for a, b in original_segments(ids.numel(), k, rate):
            n = b - a
            pos = (torch.cat([torch.arange(1, n + 1), original_memory_positions(n, k)])
                   if self.args.use_position_identifiers else torch.arange(n + k))
            out.append((ids[a:b], pos))
        return out

    @property
    def decoder_keeps_positions(self) -> bool:
        return False

    def frame_row(self, mode, prompt, prefix):
        # user_prefix prefix [slots] prompt suffix assistant_prefix: an FT prompt (a question) sits in the user turn;
        # an LM prompt starts the continuation, after the assistant header.
        f = self.frame
        inside, outside = ([], list(prompt)) if mode == "lm" else (list(prompt), [])
        return [*f.user_prefix, *prefix], False, [*inside, *f.suffix, *f.assistant_prefix, *outside]

    @property
    def ae_end(self) -> list[int]:
        return list(self.frame.suffix)  # the chat template's end of turn, as the original's create_answer_with_suffix

    @property
    def answer_end(self) -> list[int] | None:
        return list(self.frame.suffix) if self.answer_in_turn else [self.tokenizer.eos_token_id]

    def qa_template(self, configured: str) -> str:
        return ORIGINAL_QA_TEMPLATE if configured == NATIVE_QA_TEMPLATE else configured  # unless one was configured

    @property
    def stop_ids(self) -> list[int] | None:
        """A turn ends at EOS or at the chat template's end-of-turn token."""
        end = [t for t in self.frame.suffix if t in self.tokenizer.all_special_ids][:1]
        return sorted({self.tokenizer.eos_token_id, *end})

    def turn_header(self, role: str) -> tuple[list[int], list[int]]:
        f = self.frame
        if role == "assistant":
            cut = len(f.assistant_prefix) - f.think
            return list(f.assistant_prefix[:cut]), list(f.assistant_prefix[cut:])
        if role == "system":
            return system_header(self.tokenizer), []
        return list(f.user_prefix), []  # users and observations: user turns

    @property
    def turn_footer(self) -> list[int]:
        return list(self.frame.suffix)


def system_header(tokenizer) -> list[int]:
    """The tokens the chat template puts before a system message's content."""
    text = tokenizer.apply_chat_template([{"role": "system", "content": CONTENT}], tokenize=False)
    return tokenizer(text.split(CONTENT)[0], add_special_tokens=False)["input_ids"]


LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (NativeLayout, OriginalLayout)}


def layout_class(name: str) -> type[Layout]:
    """The class of layout ``name`` (its earlier name accepted)."""
    cls = LAYOUTS.get(canonical_layout(name))
    if cls is None:
        raise UserError(f"layout must be one of {sorted(LAYOUTS)}, got {name!r}")
    return cls


def build_layout(args, tokenizer, compressor: bool = True, answer_in_turn: bool = False) -> Layout:
    """The layout ``args.layout`` names, for a model of config ``args`` and ``tokenizer``."""
    return layout_class(args.layout)(args, tokenizer, compressor, answer_in_turn)
