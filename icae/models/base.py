"""What ICAE and SimpleLLM share: the memory container, decoder layouts, loss, generation and checkpoints.

Both models answer from a *memory*: for ICAE the compressed slots, for SimpleLLM the context's own token
embeddings. The decoder then reads ``[memory; special token?; prompt; target]`` as input embeddings, so the
two models differ only in how the memory is made and in which adapter state decodes.

Batches are lists of variable-length samples. Decoder sequences are left-padded (every sequence ends at the last
column, so generation appends one column for all rows) with explicit position ids and an attention mask: each
sample's result equals the one computed alone, whichever side the caller padded its inputs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from icae.config import Config, ModelArguments

MODES = ("ae", "lm", "ft")
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "icae_config.yaml"
META_NAME = "icae_meta.json"


@dataclass
class Memory:
    """The memory of a batch of contexts, right-padded along the slot axis."""

    slots: torch.Tensor  # (batch, max_slots, hidden)
    mask: torch.Tensor  # (batch, max_slots), 1 where a slot is real
    position_ids: torch.Tensor  # (batch, max_slots), ids used when position identifiers are on
    context_lengths: torch.Tensor  # (batch,), context tokens each memory summarises

    @property
    def num_slots(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.slots.shape[0]

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots ``(n_i, hidden)`` and position ids ``(n_i,)`` of sample ``i``, padding removed."""
        n = int(self.mask[i].sum())
        return self.slots[i, :n], self.position_ids[i, :n]

    def without_slots(self) -> "Memory":
        """The same contexts with no slot at all: the no-memory baseline (the decoder's language-model prior)."""
        batch = len(self)
        return Memory(
            self.slots[:, :0], self.mask[:, :0], self.position_ids[:, :0], self.context_lengths.clone()
        ) if batch else self

    def select(self, indices: Sequence[int]) -> "Memory":
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.slots.device)
        n = int(self.mask[idx].sum(dim=1).max()) if len(idx) else 0
        return Memory(self.slots[idx, :n], self.mask[idx, :n], self.position_ids[idx, :n], self.context_lengths[idx])

    @classmethod
    def from_list(cls, slots: list[torch.Tensor], positions: list[torch.Tensor], lengths: list[int]) -> "Memory":
        """Right-pad per-sample slots ``(n_i, hidden)`` into one batch."""
        batch, n_max, hidden = len(slots), max(s.shape[0] for s in slots), slots[0].shape[-1]
        out = slots[0].new_zeros(batch, n_max, hidden)
        mask = torch.zeros(batch, n_max, dtype=torch.long, device=out.device)
        pos = torch.zeros(batch, n_max, dtype=torch.long, device=out.device)
        for i, (s, p) in enumerate(zip(slots, positions)):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
            pos[i, : s.shape[0]] = p
        return cls(out, mask, pos, torch.tensor(lengths, dtype=torch.long, device=out.device))


@dataclass
class Span:
    """One piece of an interleaved decoder row (an agent trajectory): tokens read as they are, or a context that
    becomes memory slots (``compress``). ``loss`` marks tokens to learn (assistant turns)."""

    ids: torch.Tensor  # (n,)
    compress: bool = False
    loss: bool = False

    def __post_init__(self):
        self.ids = torch.as_tensor(self.ids, dtype=torch.long).reshape(-1)
        if self.compress and self.loss:
            raise ValueError("a compressed span cannot carry loss: its tokens are replaced by memory slots")

    @functools.cached_property
    def key(self) -> str:
        """Content hash: the same context is compressed once per call (and once per run with a cache)."""
        return hashlib.sha1(self.ids.cpu().numpy().tobytes()).hexdigest()


@dataclass
class DecoderState:
    """A decoder row's KV cache and how far it goes, to extend an agent's history turn by turn."""

    cache: object  # transformers Cache of the positions so far
    length: int = 0  # decoder positions in the cache
    virtual: int = 0  # the same history's uncompressed length (the next position id with position identifiers)


@dataclass
class CompressorOutput(ModelOutput):
    """``logits[:, i]`` predicts ``labels[:, i + 1]``; both cover the last ``logits.shape[1]`` decoder positions."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None  # (batch, n_kept, vocab)
    labels: Optional[torch.Tensor] = None  # (batch, n_kept), -100 where no loss
    mode_losses: Optional[dict] = None  # layout -> mean loss over that layout's target tokens
    num_target_tokens: Optional[torch.Tensor] = None  # scalar tensor: no host sync inside the training step
    memory: Optional[Memory] = None
    # Interleaved (span) layout only: logits[:, i] predicts targets[:, i], which lies in span target_spans[:, i].
    targets: Optional[torch.Tensor] = None  # (batch, n_kept), -100 where none
    target_spans: Optional[torch.Tensor] = None  # (batch, n_kept), -1 where none


def as_id_list(ids, attention_mask: torch.Tensor | None = None, name: str = "input") -> list[torch.Tensor]:
    """Normalise ids to a list of 1-D LongTensors without padding.

    Accepts a padded ``(batch, len)`` tensor with its attention mask (padding on either side), or a list of
    sequences. Empty samples are an error: there is nothing to compress or to answer from.
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if attention_mask is None:
            rows = list(ids)
        else:
            if attention_mask.shape != ids.shape:
                raise ValueError(f"{name}: attention_mask shape {tuple(attention_mask.shape)} != ids {tuple(ids.shape)}")
            rows = [row[m.bool()] for row, m in zip(ids, attention_mask)]
    else:
        rows = [torch.as_tensor(list(r) if not isinstance(r, torch.Tensor) else r, dtype=torch.long) for r in ids]
    return [r.long() for r in rows]


def _check_nonempty(rows: list[torch.Tensor], name: str) -> None:
    empty = [i for i, r in enumerate(rows) if r.numel() == 0]
    if not rows:
        raise ValueError(f"{name}: empty batch")
    if empty:
        raise ValueError(f"{name}: sample(s) {empty} have no tokens")


class CompressorBase(nn.Module):
    """Shared decoder machinery. Subclasses build ``self.model`` and implement ``compress_ids``."""

    special_names = ("ae", "lm", "ft")

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        super().__init__()
        self.args = args
        self.tokenizer = tokenizer
        self.base_config = base_model.config
        self.hidden_size = base_model.config.hidden_size
        # Subclasses set self.model (possibly a PeftModel wrapping base_model).
        self.model = base_model

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: Config | ModelArguments):
        """Load the base model and tokenizer named by the config, wrap them, and load ``restore_from`` if set."""
        from icae.models.loading import load_base_model

        args = config.model if isinstance(config, Config) else config
        base, tokenizer = load_base_model(args.model_name_or_path, args.torch_dtype, args.attn_implementation)
        model = cls(args, base, tokenizer)
        if args.restore_from:
            model.load_trainable_state_dict(load_trained_tensors(args.restore_from))
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides):
        """Rebuild from a checkpoint: base model by name/path from the saved config, then the trained tensors."""
        from icae.models import load_checkpoint

        model = load_checkpoint(directory, **overrides)
        if not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not {cls.__name__}: use load_checkpoint()")
        return model

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def base_causal_lm(self):
        """The Hugging Face causal LM, unwrapped from peft."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def backbone(self):
        """The transformer body (no LM head) that returns last hidden states; LoRA layers are injected in place."""
        lm = self.base_causal_lm
        return getattr(lm, lm.base_model_prefix)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Recompute activations in backward (Trainer calls this when ``gradient_checkpointing`` is set).

        Non-reentrant checkpointing by default: the frozen base's inputs need no grad for LoRA to get its gradients.
        """
        kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        lm = self.base_causal_lm
        if hasattr(lm, "activation_checkpointing_enable"):
            lm.activation_checkpointing_enable(
                activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers, offload=offload
            )
        else:  # transformers releases before the rename
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def freeze_for_inference(self) -> None:
        """``train: false``: evaluation mode, no parameter requires a gradient."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    def decoder_context(self):
        """Context manager under which ``self.model`` acts as the decoder (ICAE: adapter off)."""
        return contextlib.nullcontext()

    def special_embedding(self, mode: str) -> torch.Tensor | None:
        """Embedding ``(1, hidden)`` of the special token that starts a layout, or None (SimpleLLM)."""
        return None

    def uses_position_identifiers(self) -> bool:
        return False

    def tokenize(self, texts: Sequence[str]) -> list[torch.Tensor]:
        enc = self.tokenizer(list(texts), add_special_tokens=False)
        return [torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]]

    def _rows(self, x, mask=None, name="input") -> list[torch.Tensor]:
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
            return self.tokenize(x)
        if isinstance(x, str):
            return self.tokenize([x])
        return as_id_list(x, mask, name)

    def token_memory(self, rows: list[torch.Tensor]) -> Memory:
        """The uncompressed memory: the context's own token embeddings at positions 1..L."""
        slots = [self.embed(r) for r in rows]
        positions = [torch.arange(1, r.numel() + 1, device=self.device) for r in rows]
        return Memory.from_list(slots, positions, [r.numel() for r in rows])

    def compress(self, contexts, attention_mask: torch.Tensor | None = None) -> Memory:
        """Texts, a padded id tensor with its mask, or a list of id lists -> :class:`Memory`."""
        rows = self._rows(contexts, attention_mask, "contexts")
        _check_nonempty(rows, "contexts")
        return self.compress_ids(rows)

    def compress_ids(self, rows: list[torch.Tensor]) -> Memory:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- layouts
    def decoder_inputs(
        self,
        memory: Memory,
        mode: "str | Sequence[str]",
        prompts: list[torch.Tensor] | None = None,
        targets: list[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Build the left-padded decoder batch ``[memory; special?; prompt; target]``.

        Position ids: contiguous ``0..n-1`` by default. With position identifiers, slots keep their ids; in the AE
        layout the special token takes id 0 and the reconstruction takes the original ids 1..L; in the LM/FT layouts
        the tokens after the slots continue from L+1. ``mode`` is one layout for all rows or one per row.
        Returns inputs_embeds ``(batch, T, hidden)``, attention_mask/position_ids/labels ``(batch, T)``
        (labels: target ids, -100 elsewhere).
        """
        batch = len(memory)
        modes = [mode] * batch if isinstance(mode, str) else list(mode)
        bad = sorted({m for m in modes if m not in MODES})
        if bad or len(modes) != batch:
            raise ValueError(f"mode must be one of {MODES} (one, or one per row: {batch}), got {mode!r}")
        prompts = prompts if prompts is not None else [torch.zeros(0, dtype=torch.long)] * batch
        targets = targets if targets is not None else [torch.zeros(0, dtype=torch.long)] * batch
        if not (len(prompts) == len(targets) == batch):
            raise ValueError(f"batch sizes differ: memory {batch}, prompts {len(prompts)}, targets {len(targets)}")
        seqs, poss, labs = [], [], []
        for i in range(batch):
            special = self.special_embedding(modes[i])
            slots, slot_pos = memory.sample(i)
            text = torch.cat([prompts[i].to(self.device), targets[i].to(self.device)])
            parts = [slots.to(self.dtype)]
            if special is not None:
                parts.append(special.to(self.dtype))
            parts.append(self.embed(text))
            seq = torch.cat(parts)  # (n_i, hidden)
            n_after = seq.shape[0] - slots.shape[0]
            if self.uses_position_identifiers():
                start = 0 if modes[i] == "ae" else int(memory.context_lengths[i]) + 1
                pos = torch.cat([slot_pos, torch.arange(start, start + n_after, device=self.device)])
            else:
                pos = torch.arange(seq.shape[0], device=self.device)
            lab = torch.full((seq.shape[0],), -100, dtype=torch.long, device=self.device)
            if targets[i].numel():
                lab[-targets[i].numel() :] = targets[i].to(self.device)
            if seq.shape[0] > self.args.model_max_length:
                raise ValueError(
                    f"sample {i}: decoder input of {seq.shape[0]} positions ({slots.shape[0]} memory, "
                    f"{n_after} prompt/target) exceeds model_max_length={self.args.model_max_length}"
                )
            seqs.append(seq)
            poss.append(pos)
            labs.append(lab)
        width = max(s.shape[0] for s in seqs)
        embeds = seqs[0].new_zeros(batch, width, self.hidden_size)
        mask = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        position_ids = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        labels = torch.full((batch, width), -100, dtype=torch.long, device=self.device)
        for i, (s, p, l) in enumerate(zip(seqs, poss, labs)):
            n = s.shape[0]
            embeds[i, width - n :] = s
            mask[i, width - n :] = 1
            position_ids[i, width - n :] = p
            labels[i, width - n :] = l
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "labels": labels}

    def _targets(self, modes, context_rows, targets, target_mask) -> list[torch.Tensor]:
        if targets is not None:
            return self._rows(targets, target_mask, "targets")
        if context_rows is None or any(m != "ae" for m in modes):
            raise ValueError(f"mode {sorted(set(modes))} needs target ids (the continuation or answer to learn)")
        # Autoencoding: reproduce the context, then EOS.
        eos = torch.tensor([self.tokenizer.eos_token_id], dtype=torch.long)
        return [torch.cat([r.cpu(), eos]) for r in context_rows]

    # ----------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids=None,
        attention_mask: torch.Tensor | None = None,
        mode: "str | Sequence[str]" = "ae",
        prompt_ids=None,
        prompt_attention_mask: torch.Tensor | None = None,
        target_ids=None,
        target_attention_mask: torch.Tensor | None = None,
        memory: Memory | None = None,
        context_index: Sequence[int] | torch.Tensor | None = None,
        mode_weights: dict[str, float] | None = None,
        return_memory: bool = False,
        spans: Sequence[Sequence[Span]] | None = None,
    ) -> CompressorOutput:
        """Compress ``input_ids`` (the contexts) and score ``target_ids`` in the ``mode`` layout(s).

        ae: ``[memory][AE] context EOS`` (targets default to the context + EOS); lm: ``[memory][LM?] continuation``;
        ft: ``[memory][FT] prompt answer``. ``mode`` may differ per decoder row, and ``context_index`` maps rows to
        contexts (default: row i reads context i), so one compressed context can serve several objectives.
        The loss is the mean cross-entropy over all target tokens, or, with ``mode_weights``, the weighted sum of
        each layout's mean. A precomputed ``memory`` may replace ``input_ids``.
        ``spans`` (one list of :class:`Span` per row) selects the interleaved layout instead: see :meth:`forward_spans`.
        """
        if spans is not None:
            return self.forward_spans(spans)
        context_rows = None
        if memory is None:
            context_rows = self._rows(input_ids, attention_mask, "input_ids")
            _check_nonempty(context_rows, "input_ids")
            memory = self.compress_ids(context_rows)
        row_memory = memory
        if context_index is not None:
            index = [int(i) for i in context_index]
            row_memory = memory.select(index)
            context_rows = None if context_rows is None else [context_rows[i] for i in index]
        batch = len(row_memory)
        modes = [mode] * batch if isinstance(mode, str) else list(mode)
        targets = self._targets(modes, context_rows, target_ids, target_attention_mask)
        prompts = None if prompt_ids is None else self._rows(prompt_ids, prompt_attention_mask, "prompt_ids")
        inputs = self.decoder_inputs(row_memory, modes, prompts, targets)
        labels = inputs.pop("labels")
        # Logits needed: from the position before each target token onwards. With nothing before the targets (no slots,
        # no special token, no prompt) the first target token cannot be predicted and is not scored.
        keep = min(max(t.numel() for t in targets) + 1, inputs["inputs_embeds"].shape[1])
        with self.decoder_context():
            out = self.model(**inputs, logits_to_keep=keep, use_cache=False)
        logits = out.logits  # (batch, keep, vocab)
        labels = labels[:, -keep:]
        target = labels[:, 1:]
        token_loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
        ).view(batch, keep - 1)
        counted = target != -100  # (batch, keep - 1)
        row_sum, row_count = (token_loss * counted).sum(dim=1), counted.sum(dim=1)
        mode_losses = {}
        for m in dict.fromkeys(modes):
            rows = torch.tensor([x == m for x in modes], device=row_sum.device)
            mode_losses[m] = row_sum[rows].sum() / row_count[rows].sum().clamp(min=1)
        if mode_weights:
            loss = sum(mode_weights.get(m, 0.0) * v for m, v in mode_losses.items())
        else:
            loss = row_sum.sum() / row_count.sum().clamp(min=1)
        return CompressorOutput(
            loss=loss,
            logits=logits,
            labels=labels,
            mode_losses=mode_losses,
            num_target_tokens=row_count.sum(),
            memory=memory if return_memory else None,
        )

    # ----------------------------------------------------------------------------------------- interleaved layout
    def memory_length(self, num_tokens: int) -> int:
        """Decoder positions a context of ``num_tokens`` tokens occupies once it is memory (SimpleLLM: itself)."""
        return num_tokens

    def compress_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None) -> tuple[dict, dict]:
        """Compress every distinct ``compress`` span of the batch in one ``compress_ids`` call.

        Returns ``{span key: (slots (n, hidden), position ids (n,), context length)}`` and counts ``{"compressed",
        "cache_hits"}``. With ``cache`` (a dict kept by the caller, for inference), a span seen before is not
        compressed again; new results are added to it (detached).
        """
        memories, todo = {}, {}
        hits = 0
        for row in rows:
            for span in row:
                if not span.compress:
                    continue
                key = span.key
                if key in memories or key in todo:
                    hits += 1
                elif cache is not None and key in cache:
                    memories[key] = cache[key]
                    hits += 1
                else:
                    todo[key] = span.ids
        if todo:
            rows_ids = list(todo.values())
            _check_nonempty(rows_ids, "compressed spans")
            memory = self.compress_ids(rows_ids)
            for j, key in enumerate(todo):
                slots, pos = memory.sample(j)
                memories[key] = (slots, pos, rows_ids[j].numel())
                if cache is not None:
                    cache[key] = (slots.detach(), pos.detach(), rows_ids[j].numel())
        return memories, {"compressed": len(todo), "cache_hits": hits}

    def span_inputs(self, rows: Sequence[Sequence[Span]], memories: dict,
                    start: tuple[int, int] = (0, 0)) -> dict[str, torch.Tensor]:
        """Left-padded decoder batch of interleaved rows: token spans embedded, compressed spans replaced by slots.

        Position ids: contiguous over the decoder row by default. With position identifiers, every position keeps its
        place in the *uncompressed* row: token spans continue the count, and a compressed span of L tokens starting at
        position p gives its slots the ids spread over p..p+L-1, as in the AE layout.
        Returns inputs_embeds ``(batch, T, hidden)``, attention_mask/position_ids/labels/span_index ``(batch, T)``
        (labels: ids of ``loss`` spans, -100 elsewhere; span_index: the span each position comes from, -1 padding).
        ``start``: (decoder, uncompressed) positions already before the rows, when they extend a cached history.
        """
        identifiers = self.uses_position_identifiers()
        seqs, poss, labs, idxs = [], [], [], []
        for r, row in enumerate(rows):
            parts, pos, lab, idx = [], [], [], []
            actual, virtual = start
            for j, span in enumerate(row):
                if span.compress:
                    slots, slot_pos, length = memories[span.key]
                    parts.append(slots.to(self.dtype))
                    n = slots.shape[0]
                    pos.append(slot_pos.to(self.device) + virtual - 1 if identifiers
                               else torch.arange(actual, actual + n, device=self.device))
                    lab.append(torch.full((n,), -100, dtype=torch.long, device=self.device))
                    virtual += length
                else:
                    ids = span.ids.to(self.device)
                    n = ids.numel()
                    parts.append(self.embed(ids))
                    first = virtual if identifiers else actual
                    pos.append(torch.arange(first, first + n, device=self.device))
                    lab.append(ids if span.loss else torch.full((n,), -100, dtype=torch.long, device=self.device))
                    virtual += n
                actual += n
                idx.append(torch.full((n,), j, dtype=torch.long, device=self.device))
            if actual == start[0]:
                raise ValueError(f"row {r}: no span has any token")
            if actual > self.args.model_max_length:
                raise ValueError(f"row {r}: decoder input of {actual} positions exceeds model_max_length="
                                 f"{self.args.model_max_length} (cut the history: max_history_tokens)")
            seqs.append(torch.cat(parts))
            poss.append(torch.cat(pos))
            labs.append(torch.cat(lab))
            idxs.append(torch.cat(idx))
        batch, width = len(seqs), max(x.shape[0] for x in seqs)
        embeds = seqs[0].new_zeros(batch, width, self.hidden_size)
        mask = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        position_ids = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        labels = torch.full((batch, width), -100, dtype=torch.long, device=self.device)
        span_index = torch.full((batch, width), -1, dtype=torch.long, device=self.device)
        for i, (e, p, l, x) in enumerate(zip(seqs, poss, labs, idxs)):
            n = e.shape[0]
            embeds[i, width - n :], mask[i, width - n :], position_ids[i, width - n :] = e, 1, p
            labels[i, width - n :], span_index[i, width - n :] = l, x
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": position_ids, "labels": labels,
                "span_index": span_index}

    def forward_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None) -> CompressorOutput:
        """Score interleaved rows: mean cross-entropy over the tokens of ``loss`` spans.

        One decoder pass scores every ``loss`` span of a row given everything before it: under the causal mask this is
        exactly a turn-by-turn pass with the accumulated history, each turn computed once. Logits are computed only at
        the positions that predict a loss token (a long history costs no vocabulary-sized activations elsewhere).
        """
        memories, _ = self.compress_spans(rows, cache)
        inputs = self.span_inputs(rows, memories)
        labels, span_index = inputs.pop("labels"), inputs.pop("span_index")
        following = labels[:, 1:] != -100  # (batch, T - 1): position i predicts a loss token at i + 1
        keep = following.any(dim=0).nonzero().squeeze(-1)  # (n_kept,) columns shared by the batch
        if keep.numel() == 0:
            raise ValueError("no span carries loss: nothing to learn (mark assistant turns with loss=True)")
        with self.decoder_context():
            out = self.model(**inputs, logits_to_keep=keep, use_cache=False)
        logits = out.logits  # (batch, n_kept, vocab)
        targets, target_spans = labels[:, keep + 1], span_index[:, keep + 1]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return CompressorOutput(loss=loss, logits=logits, num_target_tokens=(targets != -100).sum(),
                                targets=targets, target_spans=target_spans.masked_fill(targets == -100, -1))

    @torch.no_grad()
    def generate_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None, **kwargs) -> tuple[list, dict]:
        """Continue each interleaved row (e.g. the history up to an assistant turn's header); returns the new ids and
        the compression counts of :meth:`compress_spans`. Keyword arguments as :meth:`generate`."""
        memories, counts = self.compress_spans(rows, cache)
        inputs = self.span_inputs(rows, memories)
        inputs.pop("labels"), inputs.pop("span_index")
        return self._decode(inputs, **kwargs), counts

    @torch.no_grad()
    def generate_incremental(self, state: "DecoderState | None", spans: Sequence[Span], cache: dict | None = None,
                             **kwargs) -> tuple[list[int], "DecoderState", dict]:
        """One row's history kept as a KV cache across calls, as a deployed agent does: prefill only ``spans`` (what
        happened since the last call), continue, and return the new ids with the state *without* them (the next call
        brings the turn as it should stay in the history: the gold one, or the generated one).

        ``state`` None starts a history. Returns (new ids, state, compression counts). Keyword arguments as
        :meth:`generate`.
        """
        from transformers import DynamicCache

        state = state or DecoderState(DynamicCache(config=self.base_config))
        memories, counts = self.compress_spans([spans], cache)
        inputs = self.span_inputs([spans], memories, start=(state.length, state.virtual))
        inputs.pop("labels"), inputs.pop("span_index")
        new = inputs["inputs_embeds"].shape[1]
        inputs["attention_mask"] = torch.ones(1, state.length + new, dtype=torch.long, device=self.device)
        ids = self._decode(inputs, cache=state.cache, **kwargs)[0]
        state.length += new
        state.virtual += sum(span.ids.numel() for span in spans)
        fed = state.cache.get_seq_length() - state.length  # generated tokens that went into the cache
        if fed:
            state.cache.crop(-fed)  # a negative count removes that many of the latest positions
        return ids, state, counts

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        memory: Memory,
        prompt_ids=None,
        prompt_attention_mask: torch.Tensor | None = None,
        mode: str = "ft",
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_token_ids: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Decode from ``memory`` (+ prompt) with a KV cache; returns each sample's new ids, stop token excluded.

        The memory is prefilled once and its keys/values are reused for every generated token.
        """
        prompts = None if prompt_ids is None else self._rows(prompt_ids, prompt_attention_mask, "prompt_ids")
        inputs = self.decoder_inputs(memory, mode, prompts, None)
        inputs.pop("labels")
        return self._decode(inputs, max_new_tokens, do_sample, temperature, top_k, top_p, stop_token_ids, generator)

    def _decode(
        self,
        inputs: dict[str, torch.Tensor],
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_token_ids: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        cache=None,
    ) -> list[list[int]]:
        """The KV-cache loop over a left-padded decoder batch (inputs_embeds, attention_mask, position_ids).

        ``cache``: keys/values of positions before ``inputs`` (whose attention mask then covers them too)."""
        from transformers import DynamicCache

        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        stops = set(stop_token_ids) if stop_token_ids is not None else {self.tokenizer.eos_token_id}
        batch = inputs["inputs_embeds"].shape[0]
        mask, next_pos = inputs["attention_mask"], inputs["position_ids"][:, -1] + 1
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        out: list[list[int]] = [[] for _ in range(batch)]
        if max_new_tokens == 0:
            return out
        with self.decoder_context():
            cache = cache if cache is not None else DynamicCache(config=self.base_config)
            step = self.model(**inputs, cache=cache, use_cache=True, logits_to_keep=1)
            for produced in range(1, max_new_tokens + 1):
                logits = step.logits[:, -1].float()  # (batch, vocab)
                token = self._pick(logits, do_sample, temperature, top_k, top_p, generator)  # (batch,)
                for i in range(batch):
                    if not done[i]:
                        t = int(token[i])
                        if t in stops:
                            done[i] = True
                        else:
                            out[i].append(t)
                if bool(done.all()) or produced == max_new_tokens:
                    break  # no forward pass for a token that will not be used
                mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=self.device)], dim=1)
                step = self.model(
                    inputs_embeds=self.embed(token[:, None]),
                    attention_mask=mask,
                    position_ids=next_pos[:, None],
                    cache=step.cache,
                    use_cache=True,
                )
                next_pos = next_pos + 1
        return out

    @staticmethod
    def _pick(logits, do_sample, temperature, top_k, top_p, generator) -> torch.Tensor:
        if not do_sample:
            return logits.argmax(dim=-1)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        logits = logits / temperature
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop = cum - sorted_logits.softmax(dim=-1) > top_p  # keep the smallest prefix reaching top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def reconstruct(self, contexts, **kwargs) -> list[str]:
        """Autoencode: compress and decode in the AE layout (default length: the longest context + 8)."""
        rows = self._rows(contexts, None, "contexts")
        kwargs.setdefault("max_new_tokens", max(r.numel() for r in rows) + 8)
        ids = self.generate(self.compress(rows), mode="ae", **kwargs)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    # ----------------------------------------------------------------------------------------- checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | Path, config: Config | None = None) -> Path:
        """Write the trained tensors (safetensors), the resolved config and metadata, each file atomically."""
        from safetensors.torch import save_file

        from icae.utils.io import atomic_path, atomic_write_json

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        config = config or Config(model=self.args)
        state = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        config.save(out / CONFIG_NAME)
        atomic_write_json(
            out / META_NAME,
            {
                "model_type": self.args.model_type,
                "base_model": self.args.model_name_or_path,
                "tensors": sorted(state),
                "num_parameters": int(sum(v.numel() for v in state.values())),
            },
        )
        return out


def load_trained_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in checkpoint directory {directory}")
    return load_file(str(path))

