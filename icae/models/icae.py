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
from icae.models.base import CompressorBase, Memory
from icae.models.segments import memory_position_ids, num_segments, segment_lengths

LORA_PREFIX = "lora."  # the encoder's adapter (peft's "default") in checkpoints
DECODER_PREFIX = "decoder_lora."  # the decoder's adapter, when freeze_decoder is false
ENCODER_ADAPTER, DECODER_ADAPTER = "default", "decoder"


def lora_config(args: ModelArguments):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def init_like_vocabulary(num: int, table: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` new embeddings drawn from N(mean, std) of the base embedding table, per hidden dimension."""
    table = table.detach().float()
    mean, std = table.mean(dim=0), table.std(dim=0)  # (hidden,)
    noise = torch.randn(num, table.shape[1], generator=generator, device=table.device)
    return mean + std * noise  # (num, hidden)


class ICAE(CompressorBase):
    """In-Context AutoEncoder over any Hugging Face causal LM (Qwen2/2.5/3, Mistral, Llama, ...)."""

    def __init__(self, args: ModelArguments, base_model, tokenizer):
        from peft import get_peft_model

        super().__init__(args, base_model, tokenizer)
        self._check_targets(base_model, args.lora_target_modules)
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.model = get_peft_model(base_model, lora_config(args), adapter_name=ENCODER_ADAPTER)
        if not args.freeze_decoder:
            # peft's add_adapter leaves the new adapter inactive and frozen; its trainability is set below.
            self.model.add_adapter(DECODER_ADAPTER, lora_config(args))
        self._lora_layers = [m for m in self.model.modules() if hasattr(m, "lora_A")]
        for name, p in self.model.named_parameters():
            if f".{DECODER_ADAPTER}." in name:
                p.requires_grad_(True)
            elif f".{ENCODER_ADAPTER}." in name:
                p.requires_grad_(not args.freeze_encoder)
        table = base_model.get_input_embeddings().weight
        k = args.fixed_mem_size
        init = init_like_vocabulary(k + len(self.special_names), table)
        # Kept in float32 whatever the base dtype; cast where used so optimizer updates stay exact.
        self.memory_embeddings = nn.Parameter(init[:k].to(table.device))  # (k, hidden)
        self.special_embeddings = nn.Parameter(init[k:].to(table.device))  # (3, hidden): AE, LM, FT
        self._decoding = False  # True while the base model runs as the decoder (adapter off)
        if not args.train:
            self.freeze_for_inference()

    @staticmethod
    def _check_targets(model, targets) -> None:
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"lora_target_modules {missing} not found in {type(model).__name__}; linear modules: {linear}")

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
            if self.has_decoder_adapter:
                with self._active_adapter(DECODER_ADAPTER):
                    yield
            else:
                with self.model.disable_adapter():
                    yield
        finally:
            self._decoding = False

    @contextlib.contextmanager
    def _active_adapter(self, name: str):
        """Route every LoRA layer through adapter ``name`` alone.

        peft's ``set_adapter`` would also change which adapter requires a gradient (it freezes the inactive one), but
        both adapters train together here: only the routing may change, so each layer's active adapter is set directly.
        """
        before = [layer._active_adapter for layer in self._lora_layers]
        for layer in self._lora_layers:
            layer._active_adapter = [name]
        try:
            yield
        finally:
            for layer, active in zip(self._lora_layers, before):
                layer._active_adapter = active

    def activation_checkpointing_enable(self, *args, **kwargs) -> None:
        """Activation checkpointing that recomputes each layer in the adapter state of its forward pass.

        The decoder runs with the adapter disabled, but backward recomputes layers after that context has exited;
        without this, the recomputation would include LoRA and no longer match the forward pass.
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

    def uses_position_identifiers(self) -> bool:
        return self.args.use_position_identifiers and self.args.do_compress

    # ----------------------------------------------------------------------------------------- encoder side
    def memory_length(self, num_tokens: int) -> int:
        if not self.args.do_compress or num_tokens < self.args.min_tokens_to_compress:
            return num_tokens
        k = self.args.fixed_mem_size
        return num_segments(num_tokens, k, self.args.mean_compression_rate) * k

    def compress_ids(self, rows: list[torch.Tensor]) -> Memory:
        """Compress each context into ``n_segments * k`` slots; returns a right-padded :class:`Memory`.

        Contexts shorter than ``min_tokens_to_compress`` (and all contexts when ``do_compress`` is off) are fed to the
        decoder as their own token embeddings instead.
        """
        if not self.args.do_compress:
            return self.token_memory(rows)
        short = {i for i, r in enumerate(rows) if r.numel() < self.args.min_tokens_to_compress}
        if not short:
            return self._compress_segments(rows)
        long = [i for i in range(len(rows)) if i not in short]
        parts = {}
        if long:
            compressed = self._compress_segments([rows[i] for i in long])
            parts.update({i: compressed.sample(j) for j, i in enumerate(long)})
        kept = self.token_memory([rows[i] for i in sorted(short)])
        parts.update({i: kept.sample(j) for j, i in enumerate(sorted(short))})
        return Memory.from_list([parts[i][0] for i in range(len(rows))], [parts[i][1] for i in range(len(rows))],
                                [r.numel() for r in rows])

    def _compress_segments(self, rows: list[torch.Tensor]) -> Memory:
        k, rate = self.args.fixed_mem_size, self.args.mean_compression_rate
        segments, seg_pos, owners = [], [], []
        for i, row in enumerate(rows):
            start = 0
            for n in segment_lengths(row.numel(), k, rate):
                segments.append(row[start : start + n])
                if self.args.use_position_identifiers:
                    # Global 1-based positions: id 0 is left to the AE token that starts a reconstruction.
                    pos = torch.arange(start + 1, start + n + 1)
                    mem_pos = memory_position_ids(start + 1, start + n, k)
                else:
                    pos = torch.arange(n)
                    mem_pos = torch.arange(n, n + k)
                seg_pos.append(torch.cat([pos, mem_pos]))
                owners.append(i)
                start += n
        slots = self._encode_segments(segments, seg_pos)  # (n_segments_total, k, hidden)
        per_sample = [[] for _ in rows]
        per_pos = [[] for _ in rows]
        for s, owner in enumerate(owners):
            per_sample[owner].append(slots[s])
            per_pos[owner].append(seg_pos[s][-k:])
        return Memory.from_list(
            [torch.cat(x) for x in per_sample],
            [torch.cat(p).to(self.device) for p in per_pos],
            [r.numel() for r in rows],
        )

    def _encode_segments(self, segments: list[torch.Tensor], positions: list[torch.Tensor]) -> torch.Tensor:
        """Encode all segments in one left-padded batch ``[pad; tokens; memory]``; returns ``(S, k, hidden)``."""
        k = self.args.fixed_mem_size
        width = max(s.numel() for s in segments) + k
        num = len(segments)
        mem = self.memory_embeddings.to(self.dtype)  # (k, hidden)
        embeds = mem.new_zeros(num, width, self.hidden_size)
        mask = torch.zeros(num, width, dtype=torch.long, device=self.device)
        pos = torch.zeros(num, width, dtype=torch.long, device=self.device)
        for j, (seg, p) in enumerate(zip(segments, positions)):
            n = seg.numel() + k
            embeds[j, width - n : width - k] = self.embed(seg)
            embeds[j, width - k :] = mem
            mask[j, width - n :] = 1
            pos[j, width - n :] = p.to(self.device)
        # The adapter is active here: this is the encoder.
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

        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        problems = []
        if missing:
            problems.append(f"missing tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected tensors: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        for name in ("memory_embeddings", "special_embeddings"):
            if name in state and state[name].shape != getattr(self, name).shape:
                problems.append(
                    f"{name}: checkpoint shape {tuple(state[name].shape)} != model {tuple(getattr(self, name).shape)}"
                    " (fixed_mem_size or base model differs)"
                )
        if any(k.startswith(DECODER_PREFIX) for k in missing + unexpected):
            problems.append("the checkpoint was trained with freeze_decoder="
                            f"{not any(k.startswith(DECODER_PREFIX) for k in state)}: set it so (a decoder adapter "
                            "is trained only when freeze_decoder is false)")
        if problems:
            raise ValueError("checkpoint does not match this ICAE: " + "; ".join(problems))
        for prefix, adapter in ((LORA_PREFIX, ENCODER_ADAPTER), (DECODER_PREFIX, DECODER_ADAPTER)):
            lora = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if lora:
                set_peft_model_state_dict(self.model, lora, adapter_name=adapter)
        with torch.no_grad():
            self.memory_embeddings.copy_(state["memory_embeddings"])
            self.special_embeddings.copy_(state["special_embeddings"])
