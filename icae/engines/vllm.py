"""ICAE on vLLM (GPUs): the decoder served by vLLM from prompt embeddings, the compressor as a batched service.

- **Decoder.** vLLM reads a prompt as embeddings (``LLM(..., enable_prompt_embeds=True)``, a ``{"prompt_embeds":
  (n, hidden)}`` prompt), so the rows that :mod:`icae.models.layouts` builds (token embeddings, slots, special
  tokens) go in as they are; the decoder adapter, when one was trained (``freeze_decoder: false``), is a vLLM LoRA
  (:func:`write_peft_decoder_adapter` writes it in peft's format) and the frozen base decodes otherwise. vLLM numbers
  the positions of a prompt 0..n-1, so it serves exactly the settings whose *decoder* positions are contiguous:
  ``layout: original`` (always), and ``layout: native`` with ``use_position_identifiers: false``. Native with position
  identifiers gives slots their ids inside the original text and the AE token id 0; vLLM cannot, and is refused
  (:func:`servable`): serve that checkpoint with PyTorch or llama.cpp.
- **Compressor.** :class:`SlotService` wraps the PyTorch ICAE (its encoder takes any position ids): it compresses a
  batch of observations in one pass and caches slots by content hash (an LRU bounded in MB), so an observation seen
  by many agents is compressed once. At scale it is its own process; here it shares the GPU with vLLM.

Only the vLLM-facing code needs vLLM and a GPU; :func:`servable` and :func:`write_peft_decoder_adapter` run anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from icae.errors import UserError
from icae.models.framing import layout_class
from icae.models.memory import Memory, Span

DECODER_ADAPTER_DIR = "decoder_adapter"


def servable(args) -> list[str]:
    """Why vLLM cannot serve a compressor of config ``args`` (ModelArguments) exactly; empty when it can."""
    problems = []
    if args.model_type != "icae":
        problems.append(f"model_type {args.model_type!r}: the vLLM backend serves an ICAE")
    if layout_class(args.layout)(args, None).decoder_keeps_positions:
        problems.append(f"layout: {args.layout} with use_position_identifiers: true decodes slots at their ids in the "
                        "original text (and the AE token at id 0); vLLM numbers prompt positions 0..n-1. Serve it "
                        "with --backend torch or llamacpp, or train with use_position_identifiers: false or "
                        "layout: original")
    return problems


def write_peft_decoder_adapter(model, out: str | Path) -> Path | None:
    """The decoder's LoRA adapter as a peft adapter directory (what vLLM's ``LoRARequest`` loads); None when the
    decoder is the frozen base."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from icae.models.icae import DECODER_PREFIX
    from icae.utils.io import atomic_path

    if not model.has_decoder_adapter:
        return None
    a = model.args
    out = Path(out)
    LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, target_modules=list(a.lora_target_modules), bias="none",
               task_type="CAUSAL_LM", base_model_name_or_path=a.model_name_or_path).save_pretrained(str(out))
    state = {k[len(DECODER_PREFIX):]: v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()
             if k.startswith(DECODER_PREFIX)}
    with atomic_path(out / "adapter_model.safetensors") as tmp:
        save_file(state, str(tmp))
    return out


class SlotService:
    """The compressor as a batched service: observations (id tensors) -> ``(slots, position ids, length)``, every
    distinct one compressed once per call (one encoder pass for all) and cached by content hash in the server's
    MB-bounded :class:`icae.serve.caches.SlotCache`."""

    def __init__(self, model, cache_mb: float = 512.0):
        from icae.serve.caches import SlotCache

        self.model, self.cache = model, SlotCache(cache_mb)
        self.hits = self.misses = 0

    def __call__(self, observations: Sequence[torch.Tensor]) -> list[tuple]:
        spans = [Span(ids, compress=True) for ids in observations]
        with torch.no_grad():
            memories, counts = self.model.compress_spans([spans], self.cache)
        self.hits += counts["cache_hits"]
        self.misses += counts["compressed"]
        return [memories[span.key] for span in spans]


def _unpadded(inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Left-padded ``inputs_embeds`` -> one ``(n_i, hidden)`` tensor per row."""
    return [e[m.bool()] for e, m in zip(inputs["inputs_embeds"], inputs["attention_mask"])]


class VllmICAE:
    """An ICAE checkpoint served by vLLM (see the module docstring). ``llm_kwargs`` go to ``vllm.LLM``."""

    backend = "vllm"

    def __init__(self, checkpoint: str | Path, work_dir: str | Path, cache_mb: float = 512.0, **llm_kwargs):
        from icae.models import ICAE, load_checkpoint
        from icae.models.loading import resolve_model_path

        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise UserError("the vLLM backend needs vllm on a machine with a GPU (pip install vllm)") from None
        if not torch.cuda.is_available():
            raise UserError("the vLLM backend needs a GPU; on a CPU use --backend llamacpp or torch")
        model = load_checkpoint(checkpoint, train=False)
        problems = servable(model.args) if isinstance(model, ICAE) else ["not an ICAE checkpoint"]
        if problems:
            raise UserError(f"vLLM cannot serve {checkpoint} exactly: " + "; ".join(problems))
        self.model = model.to("cuda")
        self.tokenizer = model.tokenizer
        self.slots = SlotService(self.model, cache_mb)
        adapter = write_peft_decoder_adapter(model, Path(work_dir) / DECODER_ADAPTER_DIR)
        self.lora = LoRARequest("icae-decoder", 1, str(adapter)) if adapter else None
        kwargs = dict(enable_prompt_embeds=True, max_model_len=model.args.model_max_length, dtype="float32")
        if adapter:
            kwargs.update(enable_lora=True, max_lora_rank=max(8, model.args.lora_r), max_loras=1)
        kwargs.update(llm_kwargs)
        self.llm = LLM(model=resolve_model_path(model.args.model_name_or_path), **kwargs)

    def sampling(self, max_new_tokens=128, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, stop_token_ids=None,
                 seed: int | None = None):
        """vLLM's SamplingParams for this project's sampling fields (greedy: temperature 0)."""
        from vllm import SamplingParams as VllmSampling

        stops = [self.tokenizer.eos_token_id] if stop_token_ids is None else list(stop_token_ids)
        return VllmSampling(max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                            top_k=top_k if do_sample and top_k > 0 else -1, top_p=top_p if do_sample else 1.0,
                            stop_token_ids=stops, ignore_eos=not stops, seed=seed, detokenize=False)

    def _run(self, embeds: list[torch.Tensor], stops, **sampling) -> list[list[int]]:
        params = self.sampling(stop_token_ids=stops, **sampling)
        prompts = [{"prompt_embeds": e.detach().to(torch.float32).cpu()} for e in embeds]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        stop_set = set(params.stop_token_ids or [])
        return [[t for t in o.outputs[0].token_ids if t not in stop_set] for o in outs]

    def compress(self, contexts, compression_rate: int | None = None) -> Memory:
        with torch.no_grad():
            return self.model.compress(contexts, compression_rate=compression_rate)

    def generate(self, memory: Memory, prompt_ids=None, mode: str = "ft", stop_token_ids=None,
                 **sampling) -> list[list[int]]:
        """As :meth:`icae.models.ICAE.generate`, decoded by vLLM."""
        prompts = self.model._rows(prompt_ids, None, "prompt_ids") if prompt_ids is not None else None
        with torch.no_grad():
            inputs = self.model.decoder_inputs(memory, mode, prompts)
        if stop_token_ids is None:
            stop_token_ids = self.model.layout.stop_ids
        return self._run(_unpadded(inputs), stop_token_ids, **sampling)

    def generate_spans(self, rows: Sequence[Sequence[Span]], stop_token_ids=None, **sampling) -> tuple[list, dict]:
        """Interleaved rows (agent histories): observations through the slot service, then vLLM."""
        from icae.models import layouts

        observations = [span for row in rows for span in row if span.compress]
        before = (self.slots.hits, self.slots.misses)
        memories = dict(zip((s.key for s in observations), self.slots([s.ids for s in observations])))
        with torch.no_grad():
            inputs = layouts.span_inputs(self.model, rows, memories)
        counts = {"compressed": self.slots.misses - before[1], "cache_hits": self.slots.hits - before[0]}
        return self._run(_unpadded(inputs), stop_token_ids, **sampling), counts
