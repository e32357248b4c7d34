"""What ICAE and SimpleLLM share: building, the memory interface, the loss, generation and checkpoints.

Both models answer from a *memory*: for ICAE the compressed slots, for SimpleLLM the context's own token embeddings.
The decoder then reads ``[memory; special token?; prompt; target]`` as input embeddings (``layouts``), so the two
models differ only in how the memory is made and in which adapter state decodes (``decoder_context``).
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icae.config import Config, ConfigError, ModelArguments
from icae.models import arguments, checkpoint, decoding, kv, layouts
from icae.models.loading import load_base_model
from icae.models.restore import restore_weights
from icae.models.framing import Layout, build_layout
from icae.models.decoding import SamplingParams, decode
from icae.models.memory import CompressorOutput, DecoderState, Memory, Span, as_id_list, check_nonempty


class CompressorBase(nn.Module, abc.ABC):
    """Shared decoder machinery. Subclasses build ``self.model`` and implement the abstract methods."""

    model_type: ClassVar[str]  # the config's model_type that builds this class
    special_names = ("ae", "lm", "ft")
    meaning_keys: ClassVar[tuple[str, ...]]  # config keys that change what the trained tensors mean (checkpoint.py)
    compresses_contexts: ClassVar[bool] = False  # contexts become slots (ICAE), or stay tokens (SimpleLLM)
    answers_in_turn: ClassVar[bool] = False  # original layout: answers end with the chat turn's end, not EOS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:  # a concrete class: checkpoints of its model_type check its meaning keys
            checkpoint.MEANING_KEYS[cls.model_type] = cls.meaning_keys

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        super().__init__()
        self.args = args
        self.tokenizer = tokenizer
        self.base_config = base_model.config
        self.hidden_size = base_model.config.hidden_size
        self._check_sizes(base_model.config)
        # Taken before any training: full fine-tuning changes the weights, but not which base they came from.
        self.base_fingerprint = checkpoint.base_fingerprint(base_model)
        self.model = base_model  # subclasses may wrap it (a PeftModel)
        self.layout = self.make_layout(args, tokenizer)

    @classmethod
    def make_layout(cls, args: ModelArguments, tokenizer) -> Layout:
        """The layout ``args.layout`` names, for this class (built without the model: data loaders read it first)."""
        return build_layout(args, tokenizer, cls.compresses_contexts, cls.answers_in_turn)

    # ----------------------------------------------------------------------------------------- building
    def _check_sizes(self, base_config) -> None:
        """Sizes the base model cannot hold, refused before anything is allocated."""
        limit = getattr(base_config, "max_position_embeddings", None)
        problems = []
        if limit and self.args.model_max_length > limit:
            problems.append(f"model_max_length {self.args.model_max_length} exceeds the {limit} positions of "
                            f"{self.args.model_name_or_path!r}: lower model_max_length")
        segment = self.args.fixed_mem_size * (self.args.mean_compression_rate + 1)  # tokens + memory tokens
        if limit and self.model_type == "icae" and segment > limit:
            problems.append(f"a segment reads fixed_mem_size * (mean_compression_rate + 1) = {segment} positions, beyond "
                            f"the {limit} of {self.args.model_name_or_path!r}: lower fixed_mem_size")
        if problems:
            raise ConfigError(problems, "model config")

    @classmethod
    def from_config(cls, config: Config | ModelArguments) -> "CompressorBase":
        """Load the base model and tokenizer named by the config, wrap them, and load ``restore_from`` if set."""
        args = config.model if isinstance(config, Config) else config
        base, tokenizer = load_base_model(args.model_name_or_path, args.torch_dtype, args.attn_implementation)
        model = cls(args, base, tokenizer)
        if args.restore_from:
            restore_weights(model, args.restore_from)
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> "CompressorBase":
        """Rebuild from a checkpoint: the base model named in its saved config, then the trained tensors.

        ``overrides`` change config keys that do not alter what the tensors mean (``torch_dtype``, ``train``, ...).
        """
        config = checkpoint.checkpoint_config(directory, overrides)
        if config.model.model_type != cls.model_type:
            raise TypeError(f"{directory} holds a model_type {config.model.model_type!r} checkpoint, not "
                            f"{cls.__name__}: use icae.load_checkpoint()")
        model = cls.from_config(config)
        model.load_checkpoint(directory)
        return model

    def load_checkpoint(self, directory: str | Path) -> None:
        """Load the trained tensors of a checkpoint directory, refusing a base model other than its own."""
        self.load_trainable_state_dict(checkpoint.verified_state(self, directory))

    def save_pretrained(self, save_directory: str | Path, config: Config | None = None) -> Path:
        """Write the trained tensors, the resolved config and the metadata (each file atomically)."""
        return checkpoint.save_checkpoint(self, save_directory, config or Config(model=self.args))

    @abc.abstractmethod
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trained tensor by checkpoint name (the frozen base weights excluded)."""

    @abc.abstractmethod
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors written by ``trainable_state_dict``; a clear error when they do not match this model."""

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

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
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers,
                                               offload=offload)
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
        """Context manager under which ``self.model`` acts as the decoder."""
        return contextlib.nullcontext()

    def special_embedding(self, mode: str) -> torch.Tensor | None:
        """Embedding ``(1, hidden)`` of the special token that starts a layout, or None (SimpleLLM)."""
        return None

    def uses_position_identifiers(self) -> bool:
        """Whether the *decoder* keeps the slots' position ids (the layout's choice)."""
        return self.layout.decoder_keeps_positions

    def tokenize(self, texts: Sequence[str]) -> list[torch.Tensor]:
        enc = self.tokenizer(list(texts), add_special_tokens=False)
        return [torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]]

    def _rows(self, x, mask=None, name="input") -> list[torch.Tensor]:
        """Texts, a padded id tensor with its mask, or a list of id lists -> one id tensor per sample."""
        if isinstance(x, str):
            return self.tokenize([x])
        if isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x):
            return self.tokenize(x)
        return as_id_list(x, mask, name, vocab_size=self.vocab_size)

    # ----------------------------------------------------------------------------------------- memory
    def token_memory(self, rows: list[torch.Tensor]) -> Memory:
        """The uncompressed memory: the context's own token embeddings at positions 1..L."""
        slots = [self.embed(r) for r in rows]
        positions = [torch.arange(1, r.numel() + 1, device=self.device) for r in rows]
        return Memory.from_list(slots, positions, [r.numel() for r in rows])

    def compress(self, contexts, attention_mask: torch.Tensor | None = None,
                 compression_rate: int | None = None) -> Memory:
        """Texts, a padded id tensor with its mask, or a list of id lists -> :class:`Memory`. ``compression_rate``
        overrides ``mean_compression_rate`` for this call (ICAE)."""
        arguments.check_texts(contexts)
        arguments.check_compression_rate(compression_rate)
        rows = self._rows(contexts, attention_mask, "contexts")
        check_nonempty(rows, "contexts")
        return self.compress_ids(rows, compression_rate)

    @abc.abstractmethod
    def compress_ids(self, rows: list[torch.Tensor], compression_rate: int | None = None) -> Memory:
        """One memory per context (``rows``: 1-D id tensors)."""

    def compress_for_spans(self, rows: list[torch.Tensor]) -> Memory:
        """The memory of the compressed spans of interleaved rows (agent observations)."""
        return self.compress_ids(rows)

    def memory_length(self, num_tokens: int) -> int:
        """Decoder positions a context of ``num_tokens`` tokens occupies once it is memory (SimpleLLM: itself)."""
        return self.layout.memory_length(num_tokens)

    def decoder_inputs(self, memory: Memory, mode, prompts=None, targets=None, prefixes=None) -> dict[str, torch.Tensor]:
        """What the decoder reads in the AE/LM/FT layouts: see :func:`icae.models.layouts.decoder_inputs`."""
        return layouts.decoder_inputs(self, memory, mode, prompts, targets, prefixes)

    def span_inputs(self, rows: Sequence[Sequence[Span]], memories: dict, start=(0, 0)) -> dict[str, torch.Tensor]:
        """What the decoder reads for interleaved rows: see :func:`icae.models.layouts.span_inputs`."""
        return layouts.span_inputs(self, rows, memories, start)

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
        prefix_ids=None,
        prefix_attention_mask: torch.Tensor | None = None,
        loss_per_sample: bool = False,
    ) -> CompressorOutput:
        """Compress ``input_ids`` (the contexts) and score ``target_ids`` in the ``mode`` layout(s).

        ae: ``[memory][AE] context EOS`` (targets default to the context + EOS); lm: ``[memory][LM?] continuation``;
        ft: ``[memory][FT] prompt answer``. ``mode`` may differ per row, and ``context_index`` maps rows to contexts
        (default: row i reads context i), so one compressed context can serve several objectives. The loss is the mean
        cross-entropy over all target tokens, or, with ``mode_weights``, the weighted sum of each layout's mean. A
        precomputed ``memory`` may replace ``input_ids``. ``spans`` (one list of :class:`Span` per row) selects the
        interleaved layout instead: see :meth:`forward_spans`. ``prefix_ids`` (original layout): tokens read before the
        memory, inside the framed user turn (RepoQA's first instruction).
        ``loss_per_sample``: each row's mean cross-entropy over its own target tokens, averaged over the rows (of each
        layout), instead of the mean over all target tokens, so that a short row weighs as much as a long one.
        """
        if spans is not None:
            return self.forward_spans(spans)
        modes_given = [mode] if isinstance(mode, str) or mode is None else list(mode)
        bad = sorted({str(m) for m in modes_given if m not in layouts.MODES})
        if bad:
            raise ValueError(f"mode must be one of {layouts.MODES} (or one per row), got {bad}")
        context_rows = None
        if memory is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids (the contexts to compress) or a precomputed memory")
            context_rows = self._rows(input_ids, attention_mask, "input_ids")
            check_nonempty(context_rows, "input_ids")
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
        prefixes = None if prefix_ids is None else self._rows(prefix_ids, prefix_attention_mask, "prefix_ids")
        inputs = layouts.decoder_inputs(self, row_memory, modes, prompts, targets, prefixes)
        labels = inputs.pop("labels")
        # Logits needed: from the position before each target token onwards. With nothing before the targets (no slots,
        # no special token, no prompt) the first target token cannot be predicted and is not scored.
        keep = min(max(t.numel() for t in targets) + 1, inputs["inputs_embeds"].shape[1])
        with self.decoder_context():
            logits = self.model(**inputs, logits_to_keep=keep, use_cache=False).logits  # (batch, keep, vocab)
        labels = labels[:, -keep:]
        target = labels[:, 1:]  # logits[:, i] predicts labels[:, i + 1]
        token_loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                     ignore_index=layouts.IGNORE, reduction="none").view(batch, keep - 1)
        counted = target != layouts.IGNORE  # (batch, keep - 1)
        row_sum, row_count = (token_loss * counted).sum(dim=1), counted.sum(dim=1)
        num_target_tokens = row_count.sum()
        if loss_per_sample:  # each row its own mean, then a mean over rows (a row with no target counts for nothing)
            row_sum, row_count = row_sum / row_count.clamp(min=1), (row_count > 0).to(row_sum.dtype)
        mode_losses = {}
        for m in dict.fromkeys(modes):
            rows = torch.tensor([x == m for x in modes], device=row_sum.device)
            mode_losses[m] = row_sum[rows].sum() / row_count[rows].sum().clamp(min=1)
        if mode_weights:
            loss = sum(mode_weights.get(m, 0.0) * v for m, v in mode_losses.items())
        else:
            loss = row_sum.sum() / row_count.sum().clamp(min=1)
        return CompressorOutput(loss=loss, logits=logits, labels=labels, mode_losses=mode_losses,
                                num_target_tokens=num_target_tokens, memory=memory if return_memory else None)

    def _targets(self, modes, context_rows, targets, target_mask) -> list[torch.Tensor]:
        if targets is not None:
            return self._rows(targets, target_mask, "target_ids")
        if context_rows is None or any(m != "ae" for m in modes):
            raise ValueError(f"mode {sorted(set(modes))} needs target_ids (the continuation or answer to learn); only "
                             "the ae layout has a default target (the context itself)")
        return [self.ae_target(r) for r in context_rows]

    def ae_target(self, context: torch.Tensor) -> torch.Tensor:
        """What autoencoding learns: the context, then the layout's end (EOS; the original layout: the chat template's
        end of turn, as the original)."""
        return torch.cat([torch.as_tensor(context).cpu().long(), torch.tensor(self.layout.ae_end, dtype=torch.long)])

    # ----------------------------------------------------------------------------------------- interleaved layout
    def compress_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None) -> tuple[dict, dict]:
        """Compress every distinct ``compress`` span of the batch in one ``compress_ids`` call.

        Returns ``{span key: (slots (n, hidden), position ids (n,), context length)}`` and counts ``{"compressed",
        "cache_hits"}``. With ``cache`` (a dict kept by the caller, for inference), a span seen before is not
        compressed again; new results are added to it (detached).
        """
        memories, todo, hits = {}, {}, 0
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
            check_nonempty(rows_ids, "compressed spans")
            memory = self.compress_for_spans(rows_ids)
            for j, key in enumerate(todo):
                slots, pos = memory.sample(j)
                memories[key] = (slots, pos, rows_ids[j].numel())
                if cache is not None:
                    cache[key] = (slots.detach(), pos.detach(), rows_ids[j].numel())
        return memories, {"compressed": len(todo), "cache_hits": hits}

    def forward_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None) -> CompressorOutput:
        """Score interleaved rows: mean cross-entropy over the tokens of ``loss`` spans.

        One decoder pass scores every ``loss`` span of a row given everything before it: under the causal mask this is
        exactly a turn-by-turn pass with the accumulated history, each turn computed once. Logits are computed only at
        the positions that predict a loss token (a long history costs no vocabulary-sized activations elsewhere).
        """
        memories, _ = self.compress_spans(rows, cache)
        inputs = layouts.span_inputs(self, rows, memories)
        labels, span_index = inputs.pop("labels"), inputs.pop("span_index")
        following = labels[:, 1:] != layouts.IGNORE  # (batch, T - 1): position i predicts a loss token at i + 1
        keep = following.any(dim=0).nonzero().squeeze(-1)  # (n_kept,) columns shared by the batch
        if keep.numel() == 0:
            raise ValueError("no span carries loss: nothing to learn (mark assistant turns with loss=True)")
        with self.decoder_context():
            logits = self.model(**inputs, logits_to_keep=keep, use_cache=False).logits  # (batch, n_kept, vocab)
        targets, target_spans = labels[:, keep + 1], span_index[:, keep + 1]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=layouts.IGNORE)
        return CompressorOutput(loss=loss, logits=logits, num_target_tokens=(targets != layouts.IGNORE).sum(),
                                targets=targets, target_spans=target_spans.masked_fill(targets == layouts.IGNORE, -1))

    @torch.no_grad()
    def generate_spans(self, rows: Sequence[Sequence[Span]], cache: dict | None = None,
                       generator: torch.Generator | None = None, **sampling) -> tuple[list, dict]:
        """Continue each interleaved row (e.g. the history up to an assistant turn's header); returns the new ids and
        the compression counts of :meth:`compress_spans`. ``sampling``: the fields of :class:`SamplingParams`."""
        memories, counts = self.compress_spans(rows, cache)
        inputs = layouts.span_inputs(self, rows, memories)
        inputs.pop("labels"), inputs.pop("span_index")
        return decode(self, inputs, SamplingParams.of(**sampling), generator), counts

    @torch.no_grad()
    def prefill_incremental(self, state: DecoderState | None, spans: Sequence[Span], cache: dict | None = None,
                            transient: Sequence[Span] = ()) -> tuple[decoding.Prefilled, DecoderState, dict]:
        """Extend one row's kept history by ``spans`` (then ``transient``) in one prefill: the incremental-state path
        of :meth:`generate_incremental` and of the server, each row with its own start (``state.length`` decoder
        positions, ``state.virtual`` uncompressed ones).

        Returns the prefilled group (one row: its next-token logits, and a cache holding the history, ``spans``
        and ``transient``), the new state (a copy of the history and ``spans`` only: what the next call extends),
        and the compression counts of :meth:`compress_spans`. ``state`` is not modified.
        """
        state = state or DecoderState(kv.new_cache())
        rows = [*spans, *transient]
        memories, counts = self.compress_spans([rows], cache)
        inputs = layouts.span_inputs(self, [rows], memories, start=(state.length, state.virtual))
        inputs.pop("labels"), inputs.pop("span_index")
        total = inputs["inputs_embeds"].shape[1]
        new = total - sum(span.ids.numel() for span in transient)  # token spans only: transient is never compressed
        inputs["attention_mask"] = torch.ones(1, state.length + total, dtype=torch.long, device=self.device)
        history = kv.from_tensors(kv.tensors(state.cache)) if state.length else kv.new_cache()  # state's own stays
        group = decoding.prefill(self, inputs, history)
        kept = kv.from_tensors(kv.row_prefix(kv.tensors(group.cache), 0, 0, state.length + new))
        return group, DecoderState(kept, state.length + new, state.virtual + sum(s.ids.numel() for s in spans)), counts

    @torch.no_grad()
    def generate_incremental(self, state: DecoderState | None, spans: Sequence[Span], cache: dict | None = None,
                             generator: torch.Generator | None = None, transient: Sequence[Span] = (),
                             **sampling) -> tuple[list[int], DecoderState, dict]:
        """One row's history kept as a KV cache across calls, as a deployed agent does: prefill only ``spans`` (what
        happened since the last call), continue, and return the new ids with the state *without* them (the next call
        brings the turn as it should stay in the history: the gold one, or the generated one).

        ``transient`` spans are read after ``spans`` for this generation only and left out of the state (a think
        block that the history does not keep). ``state`` None starts a history. Returns (new ids, state,
        compression counts).
        """
        group, state, counts = self.prefill_incremental(state, spans, cache, transient)
        row = decoding.Row(SamplingParams.of(**sampling), generator)
        decoding.run(self, group, [row])
        return row.ids, state, counts

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, memory: Memory, prompt_ids=None, prompt_attention_mask: torch.Tensor | None = None,
                 mode: str = "ft", generator: torch.Generator | None = None, prefix_ids=None,
                 **sampling) -> list[list[int]]:
        """Decode from ``memory`` (+ prompt) with a KV cache; returns each sample's new ids, stop token excluded.

        ``sampling``: the fields of :class:`SamplingParams` (``max_new_tokens``, ``do_sample``, ``temperature``,
        ``top_k``, ``top_p``, ``stop_token_ids``). Generation stops at ``model_max_length`` decoder positions.
        """
        if not isinstance(memory, Memory):
            raise ValueError(f"generate reads a Memory (from compress), got {type(memory).__name__}")
        arguments.check_sampling(sampling)
        prompts = None if prompt_ids is None else self._rows(prompt_ids, prompt_attention_mask, "prompt_ids")
        prefixes = None if prefix_ids is None else self._rows(prefix_ids, None, "prefix_ids")
        inputs = layouts.decoder_inputs(self, memory, mode, prompts, None, prefixes)
        inputs.pop("labels")
        if "stop_token_ids" not in sampling and self.layout.stop_ids is not None:
            sampling["stop_token_ids"] = self.layout.stop_ids
        return decode(self, inputs, SamplingParams.of(**sampling), generator)

    def reconstruct(self, contexts, **sampling) -> list[str]:
        """Autoencode: compress and decode in the AE layout (default length: the longest context + 8)."""
        arguments.check_texts(contexts)
        arguments.check_sampling(sampling)
        rows = self._rows(contexts, None, "contexts")
        sampling.setdefault("max_new_tokens", max(r.numel() for r in rows) + 8)
        ids = self.generate(self.compress(rows), mode="ae", **sampling)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
