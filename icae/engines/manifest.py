"""The manifest of an exported compressor (``manifest.json``): what files an engine loads and how to drive them.

An export directory holds the base model as GGUF in one or more weight types, the encoder's (and decoder's) LoRA
adapter as GGUF LoRA files, the k memory-token and 3 special-token embeddings (``embeddings.safetensors``), the
tokenizer (Hugging Face files: the GGUF carries no vocabulary, the engine reads input embeddings only), the
checkpoint's resolved config and this manifest.

Positions. The GGUF declares the ``qwen2vl`` architecture (Qwen2's graph with multi-section RoPE) with every rotary
pair on the second position stream: llama.cpp then orders and masks the cache by the first stream (the sequential
index in the sequence, which it requires to grow by one) while RoPE reads the second (the position identifier, any
integer). That is what position identifiers need: memory tokens whose ids lie inside their segment's span, and an AE
token at id 0 after slots at larger ids, each still attending causally by order. Every input goes in as an
embedding (token ids are looked up in the GGUF's own ``token_embd`` table), since llama.cpp takes several position
streams only with embedding inputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from icae.config.layout_names import LAYOUT_NAMES, canonical_layout
from icae.errors import UserError

MANIFEST_NAME = "manifest.json"
EMBEDDINGS_NAME = "embeddings.safetensors"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
WEIGHT_TYPES = ("f32", "f16", "q8_0", "q4_k")
GGUF_ARCH = "qwen2vl"


@dataclass(frozen=True)
class Manifest:
    """What an engine needs to serve an exported compressor; validated on construction."""

    base_family: str  # the Hugging Face architecture exported: qwen2 | mistral
    hidden_size: int
    vocab_size: int  # rows of the embedding table (the logits' width)
    head_dim: int
    weights: dict[str, str]  # weight type -> GGUF file name
    encoder_lora: str
    decoder_lora: str | None  # None: the decoder is the frozen base (freeze_decoder: true)
    lora_alpha: float
    lora_r: int
    layout: str
    use_position_identifiers: bool
    fixed_mem_size: int
    mean_compression_rate: int
    eos_token_id: int
    pad_token_id: int | None
    special_names: tuple[str, ...] = ("ae", "lm", "ft")
    base_model: str = ""
    base_fingerprint: dict = field(default_factory=dict)
    source_checkpoint: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        problems = []
        unknown = sorted(set(self.weights) - set(WEIGHT_TYPES))
        if unknown or not self.weights:
            problems.append(f"weights: types {unknown or 'none'}; known: {WEIGHT_TYPES}")
        object.__setattr__(self, "layout", canonical_layout(self.layout))  # an export that says 'seed': original
        if self.layout not in LAYOUT_NAMES:
            problems.append(f"layout must be one of {', '.join(LAYOUT_NAMES)}, got {self.layout!r}")
        if self.fixed_mem_size <= 0 or self.hidden_size <= 0 or self.lora_r <= 0:
            problems.append("fixed_mem_size, hidden_size and lora_r must be positive")
        if self.format_version != FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} (this icae reads {FORMAT_VERSION}: export again)")
        if problems:
            raise UserError("manifest: " + "; ".join(problems))
        object.__setattr__(self, "special_names", tuple(self.special_names))

    @property
    def lora_scale(self) -> float:
        """peft's scaling of a LoRA update, ``alpha / r`` (llama.cpp applies the same from the adapter's alpha)."""
        return self.lora_alpha / self.lora_r

    def save(self, directory: Path) -> None:
        from icae.utils.io import atomic_write_json

        atomic_write_json(Path(directory) / MANIFEST_NAME, asdict(self))

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise UserError(f"{directory} is not a GGUF export of icae (no {MANIFEST_NAME}); make one with "
                            f"`icae export --format gguf CHECKPOINT {directory}`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise UserError(f"{path}: unreadable manifest ({e}); export again") from None

    def weight_file(self, directory: str | Path, weight_type: str) -> Path:
        if weight_type not in self.weights:
            raise UserError(f"{directory} has no {weight_type!r} weights; it has {sorted(self.weights)} (export with "
                            f"--types {weight_type})")
        return Path(directory) / self.weights[weight_type]


def mrope_positions(index: "list[int] | object", position_ids: "list[int] | object"):
    """The ``(4 * n,)`` int32 positions of n embedding inputs, section-major: stream t = the sequential index (cache
    order, causal mask), h = the position identifier (RoPE, see the module docstring), w = e = 0."""
    import numpy as np

    index = np.asarray(index, dtype=np.int32)
    position_ids = np.asarray(position_ids, dtype=np.int32)
    zeros = np.zeros_like(index)
    return np.ascontiguousarray(np.concatenate([index, position_ids, zeros, zeros]))
