"""Loading base models and tokenizers, including the built-in tiny models that work offline.

Real loading stays real: ``model_name_or_path`` may be any hub name or local directory, passed to
``AutoModelForCausalLM.from_pretrained``. The names ``tiny-qwen2``, ``tiny-qwen3`` and ``tiny-mistral`` resolve to random-initialised
2-layer models built from a config with the tokenizer shipped in ``icae/assets/tokenizer``; they are written once
into ``$ICAE_HOME/models/<name>`` (default ``~/.cache/icae``) as ordinary Hugging Face model directories.
``tiny-qwen2-lm`` is the same Qwen2 architecture trained as a language model (a frozen decoder must be a trained LM for
an ICAE to learn); it ships in ``icae/assets/tiny-qwen2-lm``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from icae.errors import UserError
from icae.utils.io import temp_dir

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TOKENIZER_FILE = ASSETS / "tokenizer" / "tokenizer.json"
# Trained tiny models shipped with the package (built by icae.scripts.build_tiny_base).
SHIPPED_MODELS = {"tiny-qwen2-lm": ASSETS / "tiny-qwen2-lm"}
# Pretrained compressors shipped with the package (checkpoint directories, built by icae.scripts.build_compressor).
SHIPPED_COMPRESSORS = {"tiny-icae-4x": ASSETS / "tiny-icae-4x", "tiny-icae-8x": ASSETS / "tiny-icae-8x"}
# The single-segment compressors the long-memory builds start from (each decodes one segment from its own slots well,
# a long text's slots read together poorly): kept loadable, and the long builds' restore_from.
SEGMENT_COMPRESSORS = {"tiny-icae-4x-segment": ASSETS / "tiny-icae-4x-segment",
                       "tiny-icae-8x-segment": ASSETS / "tiny-icae-8x-segment"}
# The equal-compute control: SimpleLLM's LoRA pretrained as a language model for tiny-icae-4x's token budget
# (icae.scripts.build_simple_llm); SimpleLLM fine-tunes start from it with restore_from.
CONTROL_CHECKPOINTS = {"tiny-llm-pretrained": ASSETS / "tiny-llm-pretrained"}
REBUILD = {"tiny-icae-4x": "build_compressor --rate 4 --config icae/configs/compressor_long_4x.yaml",
           "tiny-icae-8x": "build_compressor --rate 8 --config icae/configs/compressor_long_8x.yaml",
           "tiny-icae-4x-segment": "build_compressor --rate 4", "tiny-icae-8x-segment": "build_compressor --rate 8",
           "tiny-llm-pretrained": "build_simple_llm"}
TINY_MODELS = {"tiny-qwen2": "qwen2", "tiny-qwen3": "qwen3", "tiny-mistral": "mistral"}
FAMILIES = ("qwen2", "qwen3", "mistral")
# Random-initialised models with the shapes of real ones, built in memory (never written to disk), for benchmarks.
# Token ids come from the tiny tokenizer; only the shapes (and so the cost) match the real model.
RANDOM_SHAPES = {
    "random-qwen2-0.5b": dict(family="qwen2", hidden_size=896, num_layers=24, num_attention_heads=14,
                              num_key_value_heads=2, intermediate_size=4864, vocab_size=151936),
}

# A ChatML template (the format Qwen uses), so chat-formatted recipes run on the tiny models too.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def icae_home() -> Path:
    return Path(os.environ.get("ICAE_HOME", Path.home() / ".cache" / "icae"))


def tiny_tokenizer():
    """The shipped byte-level BPE tokenizer (vocab 4096) as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_FILE),
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=8192,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(family: str, vocab_size: int, hidden_size: int = 128, num_layers: int = 2, **kwargs):
    """A config of the given family; tiny by default (any field can be overridden through ``kwargs``)."""
    from transformers import MistralConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        # A larger init than transformers' 0.02: with hidden 64 and tied embeddings, 0.02 caps the frozen LM head's
        # logits near +-1, so no adapter could make the random decoder confident about any token.
        initializer_range=0.2,
    )
    common.update(kwargs)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        # Qwen3 adds per-head q/k RMSNorm and has no q/k/v bias; head_dim is explicit in its config.
        return Qwen3Config(head_dim=hidden_size // common["num_attention_heads"], **common)
    if family == "mistral":
        return MistralConfig(sliding_window=None, **common)
    raise ValueError(f"unknown tiny model family {family!r}; choose one of {FAMILIES}")


def build_tiny_model(
    family: str, out_dir: str | Path, hidden_size: int = 128, num_layers: int = 2, seed: int = 0
) -> Path:
    """Write a random-initialised tiny model + tokenizer to ``out_dir`` (loadable with from_pretrained)."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    config = tiny_config(
        family,
        vocab_size=len(tok),
        hidden_size=hidden_size,
        num_layers=num_layers,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state untouched
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def resolve_model_path(name_or_path: str) -> str:
    """Map a built-in tiny name to its directory (building it once); anything else is returned unchanged."""
    if name_or_path in SHIPPED_MODELS:
        path = SHIPPED_MODELS[name_or_path]
        if not (path / "config.json").is_file():
            raise UserError(f"{name_or_path} is missing from {path}; rebuild it: python -m icae.scripts.build_tiny_base")
        return str(path)
    family = TINY_MODELS.get(name_or_path)
    if family is None:
        return name_or_path
    target = icae_home() / "models" / name_or_path
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(target.parent, f".{name_or_path}.")
        try:
            build_tiny_model(family, tmp)
            try:
                os.replace(tmp, target)  # atomic: concurrent builders of the same name are harmless
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint's name (``tiny-icae-4x``, ``tiny-llm-pretrained``) -> its directory; anything else
    unchanged."""
    name = str(name_or_path)
    shipped = {**SHIPPED_COMPRESSORS, **SEGMENT_COMPRESSORS, **CONTROL_CHECKPOINTS}
    if name in shipped and not Path(name).exists():
        path = shipped[name]
        if not (path / "model.safetensors").is_file():
            raise UserError(f"{name} is missing from {path}; rebuild it: python -m icae.scripts.{REBUILD[name]}")
        return path
    return Path(name_or_path)


def resolve_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def _not_found(name: str, error: Exception) -> UserError:
    looks_local = name.startswith((".", "/", "~")) or Path(name).suffix or name.count("/") > 1
    if looks_local:
        return UserError(f"model_name_or_path: no such model directory: {name}")
    return UserError(
        f"model_name_or_path: {name!r} is not a local directory, and the hub could not provide it as a model id "
        f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Without the hub, download it elsewhere "
        f"(huggingface-cli download {name}) and pass the local directory, or use a built-in model: "
        f"{', '.join([*SHIPPED_MODELS, *TINY_MODELS])}")


def load_tokenizer(name_or_path: str):
    """The tokenizer of a base model (hub name, directory or built-in tiny name), with a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _not_found(name_or_path, e) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(name_or_path: str, dtype: str = "float32", attn_implementation: str | None = None):
    """Load a causal LM and its tokenizer; the tokenizer gets a pad token if it has none (eos is reused)."""
    from transformers import AutoModelForCausalLM

    if name_or_path in RANDOM_SHAPES:
        shape = dict(RANDOM_SHAPES[name_or_path])
        tokenizer = tiny_tokenizer()
        config = tiny_config(shape.pop("family"), eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=None, initializer_range=0.02, **shape)
        if attn_implementation:
            config._attn_implementation = attn_implementation
        torch_dtype = resolve_dtype(dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config, dtype=None if torch_dtype == "auto" else torch_dtype)
        return model, tokenizer
    path = resolve_model_path(name_or_path)
    kwargs = {"dtype": resolve_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        if Path(path).is_dir():
            raise UserError(f"model_name_or_path {name_or_path}: not a loadable model directory ({e})") from None
        raise _not_found(name_or_path, e) from None
    return model, load_tokenizer(path)
