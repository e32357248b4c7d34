"""The config sections of the runtime entry points: the benchmarks and the server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Optional

from icae.config.base import Section, _at_least, _help

@dataclass(frozen=True)
class BenchArguments(Section):
    """What ``python -m icae.scripts.bench`` measures (each list is a grid axis)."""

    bench_context_lengths: list[int] = _help("Context lengths in tokens.", default_factory=lambda: [512, 1024, 2048])
    bench_compression_rates: list[int] = _help("Compression rates (mean_compression_rate) to compare.",
                                               default_factory=lambda: [4])
    bench_batch_sizes: list[int] = _help("Batch sizes for answering.", default_factory=lambda: [1])
    bench_new_tokens: list[int] = _help("Tokens generated per answer (forced: no early stop).",
                                        default_factory=lambda: [64])
    bench_prompt_tokens: int = _help("Prompt tokens after the memory (a question).", 16)
    bench_repeats: int = _help("Repeats per point; medians are reported. The three cases run interleaved.", 3)
    bench_train_batch_sizes: list[int] = _help("Batch sizes of the one-step training throughput measure.",
                                               default_factory=lambda: [1, 8])
    bench_train_context_length: Optional[int] = _help(
        "Context length of the training-throughput step (None: the shortest bench_context_lengths).", None
    )
    bench_device: Literal["cpu", "cuda", "auto"] = _help("'cpu', 'cuda' or 'auto' (cuda when available).", "auto")
    # bench_peers
    bench_budgets: list[int] = _help("bench_peers: compression budgets (4: a quarter of the context's positions).",
                                     default_factory=lambda: [4, 8])
    bench_quality_samples: int = _help("bench_peers: held-out windows scored for quality.", 64)
    bench_presses: list[str] = _help("bench_peers: kvpress presses to run.",
                                     default_factory=lambda: ["knorm", "snapkv", "streaming_llm", "expected_attention"])
    bench_speed_model: str = _help("bench_peers: the base of the speed measures (a shape; random weights).",
                                   "random-qwen2-0.5b")
    bench_speed_context: int = _help("bench_peers: context tokens of the speed measures.", 2048)
    bench_speed_slots: int = _help("bench_peers: ICAE's slots per segment in the speed measures (k).", 128)
    bench_questions: int = _help("bench_peers: questions answered from one compressed context (the cached case).", 4)
    bench_parts: list[str] = _help(
        "bench_peers: what to measure, any of quality (continuation), squad, speed (with training efficiency; the "
        "longest part: 20 min on 2 cores).", default_factory=lambda: ["quality", "squad", "speed"])
    bench_reader: Optional[str] = _help(
        "bench_peers: the decoder the full context, no context, truncation, LLMLingua and kvpress read with (quality "
        "rows; SQuAD reads with bench_squad_llm): None: the base LM as it is; a SimpleLLM checkpoint (e.g. "
        "tiny-llm-pretrained, the LM pretrained for as many tokens as the compressor read): its LoRA merged into the "
        "base.", None)
    bench_squad_llm: Optional[str] = _help("bench_peers: a SimpleLLM fine-tuned on SQuAD (its context gets compressed "
                                           "by the peers); None: no SQuAD comparison.", None)
    bench_squad_icae: Optional[str] = _help("bench_peers: an ICAE fine-tuned on SQuAD, beside it.", None)
    bench_squad_dev: Optional[str] = _help("bench_peers: the SQuAD questions they answer (a SQuAD JSON file or hub id).",
                                           None)

    def problems(self) -> list[str]:
        out = []
        for name in ("bench_context_lengths", "bench_compression_rates", "bench_batch_sizes", "bench_new_tokens",
                     "bench_train_batch_sizes"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                out.append(f"{name} must be a non-empty list of positive integers, got {values}")
        unknown = sorted(set(self.bench_parts) - {"quality", "squad", "speed"})
        if not self.bench_parts or unknown:
            out.append(f"bench_parts must be a non-empty list of quality, squad, speed; got {self.bench_parts}")
        out += _at_least(self, 1, "bench_repeats") + _at_least(self, 0, "bench_prompt_tokens")
        return out + _at_least(self, 1, "bench_train_context_length", optional=True)


@dataclass(frozen=True)
class ServeArguments(Section):
    """``icae serve``: the OpenAI-compatible server."""

    host: str = _help("Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every network, set api_key).",
                      "127.0.0.1")
    port: int = _help("Port to listen on (0: any free port).", 8000)
    served_model_name: Optional[str] = _help("The model id clients send (None: the checkpoint's or base's name).", None)
    max_batch_size: int = _help("Requests decoded together at most.", 8)
    slot_cache_mb: float = _help("Memory for compressed observations kept by content (least recently used go).", 256.0)
    max_conversations: int = _help("0 turns prefix reuse off (any other value: prefix_cache_mb bounds what is kept; "
                                   "kept for older configs).", 16)
    prefix_cache_mb: float = _help(
        "Memory for kept decoder keys/values of served prompts (a prefix tree: a request prefills only what follows "
        "its longest cached prefix; least recently used leaves go).", 256.0)
    default_max_tokens: Optional[int] = _help(
        "New tokens when a request sets no max_tokens (None: what is left of the context window, as OpenAI does).",
        None)
    torch_threads: Optional[int] = _help(
        "CPU threads for the model's tensor operations (None: torch's default, one per core). A tiny model's decoding "
        "steps are too small to split, and on a CPU server a second thread only adds synchronisation: use 1 there.",
        None)
    chat_template: Optional[str] = _help(
        "A Jinja chat template file used for requests that send tools (None: the tokenizer's when it renders tools, "
        "else the shipped ChatML template with Hermes tool calls, icae/assets/tokenizer/chat_template.jinja).", None)
    compress_user_min_tokens: Optional[int] = _help(
        "User messages after the first with at least this many tokens are observations and compressed (text-based "
        "agents send tool output as user messages); None: only compress_roles are. A request may set its own "
        "(compress_user_min_tokens in its body).", 128)
    max_prompt_tokens: int = _help(
        "Tokens a request's messages may hold before compression (a larger one is refused before it is tokenised).",
        131072)
    max_request_mb: float = _help("Largest request body accepted, in MB (larger: HTTP 413).", 8.0)
    api_key: Optional[str] = _help(
        "Clients must send it as a Bearer token (HTTP 401 otherwise); None: the ICAE_API_KEY environment variable, "
        "else no key.", None)
    cors_origins: list[str] = _help("Browser origins allowed to call the server (CORS); empty: none.",
                                    default_factory=list)

    def problems(self) -> list[str]:
        out = _at_least(self, 1, "max_batch_size", "max_prompt_tokens") + _at_least(self, 0, "max_conversations")
        out += _at_least(self, 1, "default_max_tokens", "torch_threads", optional=True)
        out += _at_least(self, 0, "slot_cache_mb", "prefix_cache_mb", "compress_user_min_tokens", optional=True)
        if not self.max_request_mb > 0:
            out.append(f"max_request_mb must be > 0, got {self.max_request_mb}")
        if not 0 <= self.port <= 65535:
            out.append(f"port must be in [0, 65535], got {self.port}")
        if self.chat_template is not None and not os.path.isfile(self.chat_template):
            out.append(f"chat_template: no such file: {self.chat_template}")
        if self.api_key is not None and not self.api_key.strip():
            out.append("api_key is empty: give a key, or leave it out")
        return out
