"""llama.cpp through llama-cpp-python's low-level API: a model, one context, LoRA adapters, embedding batches.

Everything ICAE needs from the engine is here, and nothing ICAE-specific: batches of input embeddings with explicit
positions (four streams each, see :mod:`icae.engines.manifest`) and sequence ids, per-row output embeddings or logits,
adapters switched per pass, a sequence's cache cut back, and llama.cpp's samplers applied to a logits row.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icae.engines.manifest import mrope_positions
from icae.errors import UserError

_QUIET = None  # the no-op log callback, kept alive for as long as llama.cpp may call it


def import_llama_cpp():
    """The ``llama_cpp`` module, or a UserError saying how to get it."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("the llama.cpp backend needs llama-cpp-python: run `make llamacpp` (builds it from source into "
                        ".engines/llamacpp, about 20 min on one core) and use .engines/llamacpp/bin/python") from None
    return llama_cpp


@dataclass(frozen=True)
class RuntimeOptions:
    """How big and how parallel the llama.cpp context is; checked on construction."""

    n_ctx: int = 8192  # cache cells shared by every sequence (kv_unified)
    n_batch: int = 512  # inputs per llama_decode call
    n_seq_max: int = 8  # sequences at once: encoder segments in one pass, or conversations
    n_threads: int = 0  # 0: one per core
    kv_f32: bool = False  # an f32 KV cache (exactness checks); f16 otherwise, as llama.cpp's default
    # Flash attention: None lets llama.cpp choose (it turns it on on CPUs) except with an f32 cache, where it is off:
    # with it on, llama.cpp casts an f32 K/V to f16 before ggml_flash_attn_ext (llama-graph.cpp, build_attn_mha) and
    # the CPU kernel rounds Q to f16 and sums V in f16, so f32 weights would not compute what PyTorch computes
    # (measured on random tiny Qwen2: logits off by 0.017 of 10.5 with it on, 2.3e-4 with it off).
    flash_attn: bool | None = None

    def __post_init__(self):
        problems = [f"{k} must be positive, got {v}" for k, v in
                    (("n_ctx", self.n_ctx), ("n_batch", self.n_batch), ("n_seq_max", self.n_seq_max)) if v <= 0]
        if self.n_threads < 0:
            problems.append(f"n_threads must be >= 0, got {self.n_threads}")
        if problems:
            raise UserError("llama.cpp options: " + "; ".join(problems))


class LlamaRuntime:
    """One llama.cpp model and context over a GGUF; LoRA adapters by name."""

    def __init__(self, model_path: Path, adapters: dict[str, Path], options: RuntimeOptions):
        L = self.L = import_llama_cpp()
        global _QUIET
        if _QUIET is None:
            _QUIET = L.llama_log_callback(lambda level, text, data: None)
            L.llama_log_set(_QUIET, ctypes.c_void_p())
        L.llama_backend_init()
        self.options = options
        self.model = L.llama_model_load_from_file(str(model_path).encode(), L.llama_model_default_params())
        if not self.model:
            raise UserError(f"llama.cpp could not load {model_path} (not a GGUF of this icae export?)")
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = options.n_ctx, options.n_batch, options.n_batch
        params.n_seq_max, params.kv_unified = options.n_seq_max, True
        threads = options.n_threads or os.cpu_count() or 1
        params.n_threads = params.n_threads_batch = threads
        params.pooling_type = L.LLAMA_POOLING_TYPE_NONE
        params.embeddings = False
        params.no_perf = True
        if options.kv_f32:
            params.type_k = params.type_v = L.GGML_TYPE_F32
        flash = options.flash_attn if options.flash_attn is not None else (False if options.kv_f32 else None)
        params.flash_attn_type = {None: L.LLAMA_FLASH_ATTN_TYPE_AUTO, True: L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                  False: L.LLAMA_FLASH_ATTN_TYPE_DISABLED}[flash]
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise UserError(f"llama.cpp could not create a context (n_ctx {options.n_ctx}: lower it?)")
        self.memory = L.llama_get_memory(self.ctx)
        self.n_embd = L.llama_model_n_embd(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.adapters = {}
        for name, path in adapters.items():
            handle = L.llama_adapter_lora_init(self.model, str(path).encode())
            if not handle:
                raise UserError(f"llama.cpp could not load the LoRA adapter {path}")
            self.adapters[name] = handle
        self._adapter, self._embeddings = "unset", None
        self._free = list(range(options.n_seq_max))  # sequence ids not in use

    # ------------------------------------------------------------------------------------------- sequences
    def borrow(self, n: int) -> list[int]:
        """``n`` unused sequence ids (encoder segments, decoder rows, kept conversations)."""
        if n > len(self._free):
            raise RuntimeError(f"llama.cpp: {n} sequences asked, {len(self._free)} free of n_seq_max "
                               f"{self.options.n_seq_max} (kept conversations hold theirs: raise n_seq_max)")
        taken, self._free = self._free[:n], self._free[n:]
        return taken

    def give_back(self, seqs: list[int]) -> None:
        """Forget and free sequences."""
        for s in seqs:
            if self.ctx:
                self.forget(s)
            self._free.append(s)

    @property
    def free_sequences(self) -> int:
        return len(self._free)

    def copy(self, src: int, dst: int, until: int) -> None:
        """Sequence ``dst`` shares ``src``'s first ``until`` cached inputs (cells are shared, not copied)."""
        self.L.llama_memory_seq_cp(self.memory, src, dst, 0, until)

    def close(self) -> None:
        L = self.L
        for handle in self.adapters.values():
            L.llama_adapter_lora_free(handle)
        self.adapters = {}
        if getattr(self, "ctx", None):
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    # ------------------------------------------------------------------------------------------- state
    def use(self, adapter: str | None, embeddings: bool) -> None:
        """The pass to run next: which adapter (None: the bare base) and whether outputs are hidden states
        (final-norm output per flagged row) or logits."""
        L = self.L
        if adapter != self._adapter:
            handles = [self.adapters[adapter]] if adapter else []
            array = (L.llama_adapter_lora_p_ctypes * max(1, len(handles)))(*handles)
            scales = (ctypes.c_float * max(1, len(handles)))(*([1.0] * len(handles)))
            if L.llama_set_adapters_lora(self.ctx, array, len(handles), scales) != 0:
                raise RuntimeError(f"llama.cpp refused the adapter {adapter!r}")
            self._adapter = adapter
        if embeddings != self._embeddings:
            L.llama_set_embeddings(self.ctx, embeddings)
            self._embeddings = embeddings

    def forget(self, seq: int, start: int = 0) -> None:
        """Drop sequence ``seq``'s cached inputs from index ``start`` on."""
        self.L.llama_memory_seq_rm(self.memory, seq, start, -1)

    # ------------------------------------------------------------------------------------------- passes
    def decode(self, embeds: np.ndarray, index: np.ndarray, positions: np.ndarray, seqs: np.ndarray,
               outputs: np.ndarray) -> np.ndarray:
        """Run inputs ``embeds`` ``(n, n_embd)`` at cache indices ``index`` (each sequence's next ones), RoPE
        positions ``positions`` and sequences ``seqs`` (all ``(n,)``), in chunks of ``n_batch``; returns the
        outputs of the rows where ``outputs`` is true, in order: ``(n_out, n_embd)`` hidden states or
        ``(n_out, n_vocab)`` logits, as set by :meth:`use`."""
        L = self.L
        width = self.n_embd if self._embeddings else self.n_vocab
        getter = L.llama_get_embeddings_ith if self._embeddings else L.llama_get_logits_ith
        results = []
        step = self.options.n_batch
        for a in range(0, len(embeds), step):
            b = min(a + step, len(embeds))
            m = b - a
            e = np.ascontiguousarray(embeds[a:b], dtype=np.float32)
            pos = mrope_positions(index[a:b], positions[a:b])  # (4 m,) section-major: t, h, w, e
            seq = np.ascontiguousarray(seqs[a:b], dtype=np.int32)
            n_seq = np.ones(m, dtype=np.int32)
            flags = np.ascontiguousarray(outputs[a:b], dtype=np.int8)
            base = seq.ctypes.data
            seq_ptrs = (ctypes.POINTER(ctypes.c_int32) * (m + 1))(
                *[ctypes.cast(base + 4 * i, ctypes.POINTER(ctypes.c_int32)) for i in range(m)])
            batch = L.llama_batch(
                n_tokens=m, token=None, embd=e.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                pos=pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                n_seq_id=n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), seq_id=seq_ptrs,
                logits=flags.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
            rc = L.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (a full cache? n_ctx {self.options.n_ctx})")
            for i in np.flatnonzero(flags):
                ptr = getter(self.ctx, int(i))
                results.append(np.ctypeslib.as_array(ptr, shape=(width,)).copy())
        return np.stack(results) if results else np.zeros((0, width), dtype=np.float32)

    # ------------------------------------------------------------------------------------------- sampling
    def sampler(self, temperature: float, top_k: int, top_p: float, seed: int):
        """llama.cpp's sampler chain temperature -> top-k -> top-p -> draw (the order of
        :func:`icae.models.decoding.pick_tokens`)."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
        if top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
        if top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def sample(self, chain, logits: np.ndarray) -> int:
        """Apply a sampler chain to one logits row ``(n_vocab,)``; returns the token drawn."""
        L = self.L
        data = (L.llama_token_data * len(logits))()
        view = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_float)), shape=(len(logits), 3))
        view[:, 1] = logits
        view[:, 2] = 0.0
        view.view(np.int32)[:, 0] = np.arange(len(logits), dtype=np.int32)
        array = L.llama_token_data_array(data=ctypes.cast(data, L.llama_token_data_p), size=len(logits), selected=-1,
                                         sorted=False)
        L.llama_sampler_apply(chain, ctypes.byref(array))
        return int(data[array.selected].id)

    def free_sampler(self, chain) -> None:
        self.L.llama_sampler_free(chain)
