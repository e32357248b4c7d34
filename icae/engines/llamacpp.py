"""ICAE on llama.cpp: the encoder and decoder passes of a GGUF export (:mod:`icae.engines.gguf_export`).

``LlamaCppICAE`` has the interface of :class:`icae.models.ICAE` for inference (``compress``, ``generate``,
``reconstruct``, ``generate_spans`` with a kept cache per conversation) and computes what it computes:

- encoder: per segment ``[tokens; k memory tokens]`` with the encoder adapter on and the segment's position ids; the
  final-norm hidden states at the memory rows are the slots (Hugging Face's ``last_hidden_state``). The segments of a
  call run together, one llama.cpp sequence each.
- decoder: ``[slots; special token?; prompt]`` (or the original layout's chat frame) with the decoder adapter on (or none
  when the decoder is the frozen base), positions as :func:`icae.models.layouts.decoder_inputs` gives them, then one
  token per step for every unfinished row at once; greedy or llama.cpp's samplers.

Every input is an embedding (see the manifest's note on positions); token ids are looked up in the GGUF's own table.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from icae.engines.llamacpp_runtime import LlamaRuntime, RuntimeOptions
from icae.engines.llamacpp_spans import LlamaCppState, SpanMixin
from icae.engines.manifest import EMBEDDINGS_NAME, TOKENIZER_DIR, Manifest
from icae.errors import UserError
from icae.models.base import CompressorBase
from icae.models.icae import ICAE
from icae.models.decoding import SamplingParams
from icae.models.memory import Memory

ENCODER, DECODER = "encoder", "decoder"


class TokenTable:
    """Rows of the GGUF's ``token_embd`` as float32, dequantized as llama.cpp's own lookup would."""

    def __init__(self, gguf_path: Path):
        import gguf

        reader = gguf.GGUFReader(str(gguf_path))
        tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
        self.qtype, self.data = tensor.tensor_type, tensor.data  # (vocab, row bytes or hidden), memory-mapped
        self._gguf = gguf
        self._dense = None
        if self.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            self._dense = np.asarray(self.data, dtype=np.float32)

    def __call__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._dense is not None:
            return self._dense[ids]
        return self._gguf.quants.dequantize(np.asarray(self.data[ids]), self.qtype).astype(np.float32)


class LlamaCppICAE(SpanMixin):
    """An exported ICAE served by llama.cpp (see the module docstring)."""

    model_type = "icae"
    backend = "llamacpp"
    # The PyTorch ICAE's own code where it reads only args, tokenizer and the methods below: the same argument checks,
    # tokenization, segment choice and span cache, by construction.
    tokenize, _rows, compress, reconstruct = (CompressorBase.tokenize, CompressorBase._rows, CompressorBase.compress,
                                              CompressorBase.reconstruct)
    compress_spans, token_memory = CompressorBase.compress_spans, CompressorBase.token_memory
    uses_position_identifiers, memory_length = CompressorBase.uses_position_identifiers, CompressorBase.memory_length
    compress_for_spans = ICAE.compress_for_spans

    def __init__(self, directory: str | Path, weights: str = "f32", options: RuntimeOptions | dict | None = None):
        """``options``: :class:`RuntimeOptions`, or some of its fields (the rest: a cache of ``model_max_length``
        cells at least, and an f32 cache with f32 weights)."""
        from safetensors.numpy import load_file

        from icae.config import load_config
        from icae.models.checkpoint import CONFIG_NAME
        from icae.models.loading import load_tokenizer

        self.directory = Path(directory)
        self.manifest = m = Manifest.load(self.directory)
        self.args = load_config(self.directory / CONFIG_NAME).model
        self.tokenizer = load_tokenizer(str(self.directory / TOKENIZER_DIR))
        tables = load_file(str(self.directory / EMBEDDINGS_NAME))
        self.memory_embeddings = tables["memory_embeddings"]  # (k, hidden)
        self.special_embeddings = tables["special_embeddings"]  # (3, hidden): AE, LM, FT
        path = m.weight_file(self.directory, weights)
        adapters = {ENCODER: self.directory / m.encoder_lora}
        if m.decoder_lora:
            adapters[DECODER] = self.directory / m.decoder_lora
        if not isinstance(options, RuntimeOptions):
            known = {f.name for f in dataclasses.fields(RuntimeOptions)}
            unknown = sorted(set(options or {}) - known)
            if unknown:
                raise UserError(f"llama.cpp backend: unknown options {unknown}; it takes weights= and {sorted(known)}")
            options = RuntimeOptions(**{"n_ctx": max(8192, self.args.model_max_length), "kv_f32": weights == "f32",
                                        **(options or {})})
        self.runtime = LlamaRuntime(path, adapters, options)
        self.embed_ids = TokenTable(path)
        self.weights = weights
        self.vocab_size = m.vocab_size

    @classmethod
    def from_pretrained(cls, directory: str | Path, weights: str = "f32", **options) -> "LlamaCppICAE":
        return cls(directory, weights, options)

    def close(self) -> None:
        self.runtime.close()

    @functools.cached_property
    def layout(self):
        """The PyTorch ICAE's layout for this export's config and tokenizer."""
        return ICAE.make_layout(self.args, self.tokenizer)

    # ----------------------------------------------------------------------------------------- encoder
    def segment_plan(self, row: torch.Tensor, rate: int, framed: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One context -> its segments' token ids and the position ids of ``[tokens; k memory tokens]``: the PyTorch
        ICAE's own cutting (its layout's)."""
        return self.layout.segments(row, rate, framed)

    def encode_segments(self, plan: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Slots ``(k, hidden)`` of each segment; up to ``n_seq_max`` segments per llama.cpp pass."""
        k, rt = self.args.fixed_mem_size, self.runtime
        rt.use(ENCODER, embeddings=True)
        lanes = rt.borrow(max(1, min(len(plan), rt.free_sequences)))
        slots = []
        try:
            for g in range(0, len(plan), len(lanes)):
                parts = plan[g:g + len(lanes)]
                embeds = np.concatenate([np.concatenate([self.embed_ids(ids.numpy()), self.memory_embeddings])
                                         for ids, _ in parts])
                index = np.concatenate([np.arange(len(ids) + k) for ids, _ in parts])
                positions = np.concatenate([pos.numpy() for _, pos in parts])
                seqs = np.concatenate([np.full(len(ids) + k, lanes[s]) for s, (ids, _) in enumerate(parts)])
                outputs = np.concatenate([np.r_[np.zeros(len(ids), bool), np.ones(k, bool)] for ids, _ in parts])
                try:
                    hidden = rt.decode(embeds, index, positions, seqs, outputs)  # (len(parts) * k, hidden)
                finally:
                    for lane in lanes:
                        rt.forget(lane)
                slots.extend(hidden.reshape(len(parts), k, -1))
        finally:
            rt.give_back(lanes)
        return slots

    def compress_ids(self, rows: list[torch.Tensor], compression_rate: int | None = None, framed: bool = True) -> Memory:
        """As :meth:`icae.models.ICAE.compress_ids`: contexts too short to compress keep their token embeddings."""
        rate, k = compression_rate or self.args.mean_compression_rate, self.args.fixed_mem_size
        plan, owners = [], []
        for i, row in enumerate(rows):
            if self.layout.compresses(row.numel()):
                for seg in self.segment_plan(row, rate, framed):
                    plan.append(seg)
                    owners.append(i)
        slots = self.encode_segments(plan) if plan else []
        per_slots, per_pos = [[] for _ in rows], [[] for _ in rows]
        for s, owner in enumerate(owners):
            per_slots[owner].append(torch.from_numpy(slots[s]))
            per_pos[owner].append(plan[s][1][-k:].long())
        for i, row in enumerate(rows):
            if not per_slots[i]:  # kept as tokens: their embeddings at positions 1..L
                kept = self.token_memory([row])
                per_slots[i], per_pos[i] = [kept.slots[0]], [kept.position_ids[0]]
        return Memory.from_list([torch.cat(x) for x in per_slots], [torch.cat(p) for p in per_pos],
                                [r.numel() for r in rows])

    # ----------------------------------------------------------------------------------------- decoder
    # What icae.models.layouts reads from a model, so that the decoder rows are built by the project's own code.
    dtype, device = torch.float32, torch.device("cpu")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.embed_ids(ids.cpu().numpy()))

    def special_embedding(self, mode: str) -> torch.Tensor | None:
        if mode == "lm" and not self.args.add_special_token_for_lm:
            return None
        return torch.from_numpy(self.special_embeddings[self.manifest.special_names.index(mode)][None])

    def decoder_rows(self, memory: Memory, modes: list[str], prompts: list[torch.Tensor],
                     prefixes: list[torch.Tensor] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Embeddings ``(n_i, hidden)`` and position ids ``(n_i,)`` of each row: what
        :func:`icae.models.layouts.decoder_inputs` builds (no targets: generation), padding removed."""
        from icae.models import layouts

        inputs = layouts.decoder_inputs(self, memory, modes, prompts, None, prefixes)
        real = inputs["attention_mask"].bool()
        return [(e[m].numpy(), p[m].numpy()) for e, p, m in zip(inputs["inputs_embeds"], inputs["position_ids"], real)]

    def decoder_row(self, memory: Memory, i: int, mode: str, prompt: torch.Tensor,
                    prefix: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.decoder_rows(memory.select([i]), [mode], [prompt], None if prefix is None else [prefix])[0]

    def generate(self, memory: Memory, prompt_ids=None, mode: "str | Sequence[str]" = "ft", prompt_attention_mask=None,
                 generator: torch.Generator | None = None, prefix_ids=None, seed: int | None = None,
                 **sampling) -> list[list[int]]:
        """New ids per row (the stop token excluded), as :meth:`icae.models.ICAE.generate`."""
        batch = len(memory)
        modes = [mode] * batch if isinstance(mode, str) else list(mode)
        empty = torch.zeros(0, dtype=torch.long)
        prompts = self._rows(prompt_ids, prompt_attention_mask, "prompt_ids") if prompt_ids is not None else [empty] * batch
        prefixes = self._rows(prefix_ids, None, "prefix_ids") if prefix_ids is not None else None
        if "stop_token_ids" not in sampling and self.layout.stop_ids is not None:
            sampling["stop_token_ids"] = self.layout.stop_ids
        params = SamplingParams.of(**sampling)
        rows = self.decoder_rows(memory, modes, prompts, prefixes)
        if seed is None and generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.decode_rows(rows, params, seed or 0)

    def decode_rows(self, rows: list[tuple[np.ndarray, np.ndarray]],
                    params: "SamplingParams | Sequence[SamplingParams]", seed: "int | Sequence[int]" = 0,
                    seqs: list[int] | None = None, starts: list[int] | None = None,
                    keep: list[int] | None = None, on_token=None) -> list[list[int]]:
        """Prefill each row ``(embeds (n, hidden), positions (n,))`` into sequence ``seqs[r]`` after its
        ``starts[r]`` cached inputs, then decode one token per unfinished row per llama.cpp pass. Afterwards each
        sequence keeps its first ``keep[r]`` inputs (default ``starts``: nothing new; generated tokens never stay).
        ``on_token(r, token)``, if given, sees each kept token; True ends row ``r`` there (a stop string, a client
        gone). ``params`` and ``seed`` (of llama.cpp's samplers) are one for all rows or one per row; each row stops
        at its own ``max_new_tokens`` or at ``model_max_length`` positions, as it would alone.
        Without ``seqs``, free sequences are borrowed for the call, as many rows at once as there are."""
        rt, n = self.runtime, len(rows)
        params = [params] * n if isinstance(params, SamplingParams) else list(params)
        seeds = [seed + r for r in range(n)] if isinstance(seed, int) else list(seed)
        if seqs is None:
            lanes = rt.borrow(max(1, min(n, rt.free_sequences)))
            try:
                out = []
                for a in range(0, n, len(lanes)):
                    b = min(a + len(lanes), n)
                    hook = (lambda r, t, a=a: on_token(a + r, t)) if on_token else None
                    out += self.decode_rows(rows[a:b], params[a:b], seeds[a:b], lanes[:b - a], on_token=hook)
                return out
            finally:
                rt.give_back(lanes)
        starts = [0] * n if starts is None else starts
        keep = starts if keep is None else keep
        eos = {self.tokenizer.eos_token_id}
        stops = [set(p.stop_token_ids) if p.stop_token_ids is not None else eos for p in params]
        out: list[list[int]] = [[] for _ in rows]
        lengths = [starts[r] + len(rows[r][0]) for r in range(n)]
        allowed = [min(params[r].max_new_tokens, self.args.model_max_length - lengths[r] + 1) for r in range(n)]
        rt.use(DECODER if DECODER in rt.adapters else None, embeddings=False)
        chains = [rt.sampler(p.temperature, p.top_k, p.top_p, seeds[r]) if p.do_sample else None
                  for r, p in enumerate(params)]
        try:
            logits = rt.decode(np.concatenate([e for e, _ in rows]),
                               np.concatenate([np.arange(starts[r], lengths[r]) for r in range(n)]),
                               np.concatenate([p for _, p in rows]),
                               np.concatenate([np.full(len(e), seqs[r]) for r, (e, _) in enumerate(rows)]),
                               np.concatenate([np.arange(len(e)) == len(e) - 1 for e, _ in rows]))
            live, index = [r for r in range(n) if allowed[r] > 0], list(lengths)
            logits = logits[[r for r in range(n) if allowed[r] > 0]]
            next_pos = [int(p[-1]) + 1 for _, p in rows]
            while live:
                tokens = {}
                for j, r in enumerate(live):
                    t = rt.sample(chains[r], logits[j]) if chains[r] else int(np.argmax(logits[j]))
                    if t not in stops[r]:
                        out[r].append(t)
                        if not (on_token and on_token(r, t)) and len(out[r]) < allowed[r]:
                            tokens[r] = t  # no pass for a token that will not be used
                live = [r for r in live if r in tokens]
                if not live:
                    break
                logits = rt.decode(self.embed_ids([tokens[r] for r in live]), np.array([index[r] for r in live]),
                                   np.array([next_pos[r] for r in live]), np.array([seqs[r] for r in live]),
                                   np.ones(len(live), bool))
                for r in live:
                    index[r] += 1
                    next_pos[r] += 1
        finally:
            for r in range(n):
                rt.forget(seqs[r], keep[r])
            for chain in chains:
                if chain is not None:
                    rt.free_sampler(chain)
        return out


def load(directory: str | Path, weights: str = "f32", **options) -> LlamaCppICAE:
    """``ICAE.from_pretrained(directory, backend="llamacpp")``: a GGUF export directory (``icae export --format
    gguf``) served by llama.cpp."""
    return LlamaCppICAE.from_pretrained(directory, weights, **options)


__all__ = ["LlamaCppICAE", "LlamaCppState", "TokenTable", "load"]
