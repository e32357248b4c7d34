"""In-Context AutoEncoder (Ge et al., 2024): an LLM with LoRA compresses a context into memory slots that the same,
frozen LLM decodes from.

Encoder: the base model with a LoRA adapter reads ``[segment tokens; k memory tokens]``; the last hidden states at the
memory positions are the segment's slots. Long contexts are split into balanced segments of at most
``k * mean_compression_rate`` tokens; all segments of a batch are encoded together in one forward pass.
Decoder: the same base weights, reading ``[slots; special token; prompt/target]``. With ``freeze_decoder: true`` (the
paper's design) it is the frozen base model: the encoder's adapter is disabled. With ``freeze_decoder: false`` (the
original tool's option) a second LoRA adapter, ``decoder``, on the same base weights is active while decoding and
trains with the encoder's: still one copy of the base weights in memory. Only the LoRA weights and the new
embeddings (memory tokens and the AE/LM/FT special tokens) are trained.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from icae.config import ModelArguments
from icae.models import arguments, lora
from icae.models.base import CompressorBase
from icae.models.checkpoint import CheckpointError
from icae.models.lora import DECODER_ADAPTER, ENCODER_ADAPTER
from icae.models.memory import Memory
from icae.utils.padding import pad

LORA_PREFIX = "lora."  # the encoder's adapter (peft's "default") in checkpoints
DECODER_PREFIX = "decoder_lora."  # the decoder's adapter, when freeze_decoder is false


def init_like_vocabulary(num: int, table: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` new embeddings drawn from N(mean, std) of the base embedding table, per hidden dimension."""
    table = table.detach().float()
    mean, std = table.mean(dim=0), table.std(dim=0)  # (hidden,)
    noise = torch.randn(num, table.shape[1], generator=generator, device=table.device)
    return mean + std * noise  # (num, hidden)


class ICAE(CompressorBase):
    """In-Context AutoEncoder over any Hugging Face causal LM (Qwen2/2.5/3, Mistral, Llama, ...)."""

    model_type = "icae"
    meaning_keys = ("model_type", "layout", "fixed_mem_size", "mean_compression_rate", "use_position_identifiers",
                    "do_compress", "use_lora", "lora_r", "lora_alpha", "lora_target_modules", "freeze_decoder",
                    "add_special_token_for_lm")
    compresses_contexts = True

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        super().__init__(args, base_model, tokenizer)
        adapters = (ENCODER_ADAPTER,) if args.freeze_decoder else (ENCODER_ADAPTER, DECODER_ADAPTER)
        self.model = lora.add_lora(base_model, args, adapters)
        self._lora_layers = lora.lora_layers(self.model)
        if args.freeze_encoder:
            for _, p in lora.adapter_parameters(self.model, ENCODER_ADAPTER):
                p.requires_grad_(False)
        table = base_model.get_input_embeddings().weight
        k = args.fixed_mem_size
        init = init_like_vocabulary(k + len(self.special_names), table)
        # Kept in float32 whatever the base dtype; cast where used so optimizer updates stay exact.
        self.memory_embeddings = nn.Parameter(init[:k].to(table.device))  # (k, hidden)
        self.special_embeddings = nn.Parameter(init[k:].to(table.device))  # (3, hidden): AE, LM, FT
        self._decoding = False  # True while the base model runs as the decoder
        if not args.train:
            self.freeze_for_inference()

    @classmethod
    def from_pretrained(cls, directory, backend: str = "torch", **overrides):
        """A checkpoint directory (``backend="torch"``), or a GGUF export of one served by llama.cpp
        (``backend="llamacpp"``: ``icae export --format gguf``; overrides there are ``weights=f32|f16|q8_0|q4_k``
        and the llama.cpp options of :class:`icae.engines.llamacpp_runtime.RuntimeOptions`). docs/engines.md."""
        if backend == "llamacpp":
            from icae.engines.llamacpp import load

            return load(directory, **overrides)
        if backend != "torch":
            from icae.errors import UserError

            raise UserError(f"backend must be torch or llamacpp, got {backend!r} (vLLM: icae.engines.vllm.VllmICAE)")
        return super().from_pretrained(directory, **overrides)

    # ----------------------------------------------------------------------------------------- decoder side
    @property
    def has_decoder_adapter(self) -> bool:
        return not self.args.freeze_decoder

    @contextlib.contextmanager
    def decoder_context(self):
        """The base model acts as the decoder: the encoder's adapter off, the decoder's adapter (if any) on."""
        if self._decoding:
            yield
            return
        self._decoding = True
        try:
            with (lora.route(self._lora_layers, DECODER_ADAPTER) if self.has_decoder_adapter
                  else self.model.disable_adapter()):
                yield
        finally:
            self._decoding = False

    def activation_checkpointing_enable(self, *args, **kwargs) -> None:
        """Activation checkpointing that recomputes each layer in the adapter state of its forward pass.

        The decoder runs in its own adapter state, but backward recomputes layers after that context has exited;
        without this, the recomputation would run the encoder's adapter and no longer match the forward pass.
        """
        super().activation_checkpointing_enable(*args, **kwargs)
        for module in self.base_causal_lm.modules():
            func = getattr(module, "_gradient_checkpointing_func", None)
            if func is not None and getattr(module, "gradient_checkpointing", False):
                module._gradient_checkpointing_func = self._adapter_state_preserving(func)

    def _adapter_state_preserving(self, checkpoint_func):
        def run(layer_forward, *args, **kwargs):
            decoding = self._decoding

            def body(*inner):
                # At forward time the state is already right; during recompute, re-enter the decoder context.
                with self.decoder_context() if decoding else contextlib.nullcontext():
                    return layer_forward(*inner)

            return checkpoint_func(body, *args, **kwargs)

        return run

    def special_embedding(self, mode: str) -> torch.Tensor | None:
        if mode == "lm" and not self.args.add_special_token_for_lm:
            return None
        return self.special_embeddings[self.special_names.index(mode)][None]  # (1, hidden)

    # ----------------------------------------------------------------------------------------- encoder side
    def compress_ids(self, rows: list[torch.Tensor], compression_rate: int | None = None, framed: bool = True) -> Memory:
        """Compress each context into ``n_segments * k`` slots; returns a right-padded :class:`Memory`.

        Contexts too short to compress (``layout.compresses``: shorter than ``min_tokens_to_compress``; in the
        original layout, shorter than k) and all contexts when ``do_compress`` is off are fed to the decoder as their own token
        embeddings. ``compression_rate`` overrides ``mean_compression_rate`` for this call (a compressor trained at one
        rate reconstructs worse at another: measure it). ``framed`` (original layout): frame each context with the chat
        template before cutting it, as the original does for every recipe but agent observations.
        """
        arguments.check_id_rows(rows, self.vocab_size)
        arguments.check_compression_rate(compression_rate)
        if not self.args.do_compress:
            return self.token_memory(rows)
        short = {i for i, r in enumerate(rows) if not self.layout.compresses(r.numel())}
        if not short:
            return self._compress_segments(rows, compression_rate, framed)
        long = [i for i in range(len(rows)) if i not in short]
        parts = {}
        if long:
            compressed = self._compress_segments([rows[i] for i in long], compression_rate, framed)
            parts.update({i: compressed.sample(j) for j, i in enumerate(long)})
        kept = self.token_memory([rows[i] for i in sorted(short)])
        parts.update({i: kept.sample(j) for j, i in enumerate(sorted(short))})
        return Memory.from_list([parts[i][0] for i in range(len(rows))], [parts[i][1] for i in range(len(rows))],
                                [r.numel() for r in rows])

    def compress_for_spans(self, rows: list[torch.Tensor]) -> Memory:
        """Agent observations: the original layout compresses them unframed, as the original's trajectory recipes do."""
        return self.compress_ids(rows, framed=False)

    def _compress_segments(self, rows: list[torch.Tensor], compression_rate: int | None = None,
                           framed: bool = True) -> Memory:
        k, rate = self.args.fixed_mem_size, compression_rate or self.args.mean_compression_rate
        segments, seg_pos, owners = [], [], []
        for i, row in enumerate(rows):
            for seg, pos in self.layout.segments(row, rate, framed):
                segments.append(seg)
                seg_pos.append(pos)
                owners.append(i)
        slots = self._encode_segments(segments, seg_pos)  # (n_segments_total, k, hidden)
        per_sample = [[] for _ in rows]
        per_pos = [[] for _ in rows]
        for s, owner in enumerate(owners):
            per_sample[owner].append(slots[s])
            per_pos[owner].append(seg_pos[s][-k:])
        return Memory.from_list([torch.cat(x) for x in per_sample], [torch.cat(p).to(self.device) for p in per_pos],
                                [r.numel() for r in rows])

    def _encode_segments(self, segments: list[torch.Tensor], positions: list[torch.Tensor]) -> torch.Tensor:
        """Encode all segments in one left-padded batch ``[pad; tokens; memory]``; returns ``(S, k, hidden)``."""
        k = self.args.fixed_mem_size
        mem = self.memory_embeddings.to(self.dtype)  # (k, hidden)
        embeds, mask = pad([torch.cat([self.embed(seg), mem]) for seg in segments], 0.0, side="left")  # (S, W, hidden)
        pos, _ = pad([p.to(self.device) for p in positions], 0, side="left")  # (S, W)
        # The encoder's adapter is active here (outside decoder_context).
        hidden = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
        return hidden.last_hidden_state[:, -k:]  # (S, k, hidden): the memory positions

    # ----------------------------------------------------------------------------------------- checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = {LORA_PREFIX + k: v for k, v in get_peft_model_state_dict(self.model, adapter_name=ENCODER_ADAPTER).items()}
        if self.has_decoder_adapter:
            decoder = get_peft_model_state_dict(self.model, adapter_name=DECODER_ADAPTER)
            state.update({DECODER_PREFIX + k: v for k, v in decoder.items()})
        state["memory_embeddings"] = self.memory_embeddings
        state["special_embeddings"] = self.special_embeddings
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        own = self.trainable_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        problems = []
        trained_decoder = any(k.startswith(DECODER_PREFIX) for k in state)
        if trained_decoder != self.has_decoder_adapter:  # otherwise a decoder tensor is missing: named below
            problems.append(f"the checkpoint was trained with freeze_decoder={not trained_decoder}: set it so (a "
                            "decoder adapter is trained only when freeze_decoder is false)")
            missing = [k for k in missing if not k.startswith(DECODER_PREFIX)]
            unexpected = [k for k in unexpected if not k.startswith(DECODER_PREFIX)]
        if missing:
            problems.append(f"missing tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''} (lora_target_modules "
                            "or the base model differs)")
        if unexpected:
            problems.append(f"unexpected tensors: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        for name in sorted(set(own) & set(state)):
            if state[name].shape != own[name].shape:
                problems.append(f"{name}: checkpoint shape {tuple(state[name].shape)} != model {tuple(own[name].shape)}"
                                " (fixed_mem_size, lora_r or the base model differs)")
                if len(problems) > 6:
                    break
        if problems:
            raise CheckpointError("checkpoint does not match this ICAE: " + "; ".join(problems))
        for prefix, adapter in ((LORA_PREFIX, ENCODER_ADAPTER), (DECODER_PREFIX, DECODER_ADAPTER)):
            weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if weights:
                set_peft_model_state_dict(self.model, weights, adapter_name=adapter)
        with torch.no_grad():
            self.memory_embeddings.copy_(state["memory_embeddings"])
            self.special_embeddings.copy_(state["special_embeddings"])
