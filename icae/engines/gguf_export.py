"""Export a compressor checkpoint to GGUF for llama.cpp (``icae export --format gguf CHECKPOINT OUTDIR``).

Written with the ``gguf`` package (extra ``engines``): the base model in f32 and f16 (and Q8_0 / Q4_K through
llama.cpp's quantizer when llama-cpp-python is importable; Q8_0 by the gguf package otherwise), the encoder's and the
decoder's LoRA adapters as GGUF LoRA files, the memory and special embeddings (safetensors) and a manifest
(:mod:`icae.engines.manifest`, which explains the position layout). Qwen2 and Mistral/Llama bases are supported: both
are the Qwen2 graph (Mistral without the q/k/v biases, with Hugging Face's half-split RoPE, which is llama.cpp's
NEOX rotation, so no weight permutation is needed).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import torch

from icae.engines.manifest import (EMBEDDINGS_NAME, GGUF_ARCH, TOKENIZER_DIR, WEIGHT_TYPES, Manifest)
from icae.errors import UserError
from icae.utils.io import atomic_path, temp_dir

FAMILIES = ("qwen2", "mistral", "llama")
# A peft LoRA tensor: base_model.model.<module path>.lora_A.weight (adapter name already stripped by peft)
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise UserError("the gguf export needs the gguf package: pip install -e '.[engines]' (or `make llamacpp`)") \
            from None
    return gguf


def check_exportable(base_config) -> str:
    """The base's family, or a UserError naming what the GGUF export cannot reproduce exactly."""
    family = getattr(base_config, "model_type", "?")
    problems = []
    if family not in FAMILIES:
        problems.append(f"base architecture {family!r} (the GGUF export covers {FAMILIES}; Qwen3's q/k norms are not "
                        "in the graph it uses)")
    rope = getattr(base_config, "rope_parameters", None) or getattr(base_config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        problems.append(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r} (only plain RoPE is exported)")
    window = getattr(base_config, "sliding_window", None)
    if window and getattr(base_config, "use_sliding_window", True) and family != "qwen2":
        problems.append(f"sliding-window attention ({window}): the exported graph attends to the whole context")
    head_dim = getattr(base_config, "head_dim", None)
    if head_dim and head_dim != base_config.hidden_size // base_config.num_attention_heads:
        problems.append(f"head_dim {head_dim} != hidden_size / heads")
    if problems:
        raise UserError("cannot export this base to GGUF: " + "; ".join(problems))
    return family


def rope_theta(base_config) -> float:
    params = getattr(base_config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(base_config, "rope_theta", 10000.0)))


def base_tensors(model) -> dict[str, torch.Tensor]:
    """The base weights the ICAE computes with, by Hugging Face name (peft's LoRA layers unwrapped)."""
    out = {}
    for name, p in model.base_causal_lm.named_parameters():
        if "lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = p.detach().float().cpu()
    return out


def _write(path: Path, fill) -> None:
    gguf = _gguf()
    writer = gguf.GGUFWriter(str(path), arch=GGUF_ARCH)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_base(path: Path, model, weight_type: str) -> None:
    """The base model as a GGUF of the qwen2vl architecture (see the manifest's note on positions): matrices in
    ``weight_type`` (f32 | f16 | q8_0 by the gguf package), norms and biases in f32."""
    gguf = _gguf()
    cfg = model.base_config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2VL, cfg.num_hidden_layers)
    tensors = base_tensors(model)
    vocab = tensors["model.embed_tokens.weight"].shape[0]

    def fill(w):
        w.add_name(f"icae base {model.args.model_name_or_path}")
        w.add_context_length(int(getattr(cfg, "max_position_embeddings", model.args.model_max_length)))
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_attention_heads)
        w.add_head_count_kv(cfg.num_key_value_heads)
        w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        w.add_rope_freq_base(rope_theta(cfg))
        w.add_rope_dimension_count(head_dim)
        w.add_rope_dimension_sections([0, head_dim // 2, 0, 0])  # every rotary pair reads stream h
        w.add_vocab_size(vocab)
        w.add_tokenizer_model("no_vocab")  # inputs are embeddings; the tokenizer travels as Hugging Face files
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[weight_type])
        for hf_name, t in tensors.items():
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UserError(f"no GGUF name for base tensor {hf_name!r} ({cfg.model_type})")
            data = t.numpy()
            if data.ndim == 2 and weight_type == "f16":
                w.add_tensor(name, data.astype(np.float16))
            elif data.ndim == 2 and weight_type == "q8_0" and data.shape[1] % 32 == 0:
                q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))

    _write(path, fill)


def lora_tensors(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def write_lora(path: Path, model, peft_state: dict[str, torch.Tensor]) -> int:
    """One adapter as a GGUF LoRA: ``<base tensor>.lora_a`` ``(r, in)`` and ``.lora_b`` ``(out, r)`` (peft's shapes;
    llama.cpp reads them transposed as it reads every weight), alpha in the header. Returns the number of pairs."""
    gguf = _gguf()
    cfg = model.base_config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2VL, cfg.num_hidden_layers)
    pairs = {}
    for key, value in peft_state.items():
        m = LORA_KEY.match(key)
        if m is None:
            raise UserError(f"unexpected LoRA tensor {key!r} in the checkpoint")
        target = names.get_name(m["module"], try_suffixes=())
        if target is None:
            raise UserError(f"no GGUF name for LoRA target module {m['module']!r}")
        pairs[f"{target}.weight.lora_{m['ab'].lower()}"] = value.detach().float().cpu().numpy()

    def fill(w):
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(model.args.lora_alpha))
        for name in sorted(pairs):
            w.add_tensor(name, np.ascontiguousarray(pairs[name]))

    _write(path, fill)
    return len(pairs) // 2


def quantize_with_llamacpp(source: Path, out: Path, weight_type: str) -> bool:
    """Quantize a GGUF with llama.cpp's own quantizer; False when llama-cpp-python is not importable."""
    try:
        import llama_cpp
    except ImportError:
        return False
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[weight_type]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 0
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if rc != 0:
        raise UserError(f"llama.cpp could not quantize {source} to {weight_type} (return code {rc})")
    return True


def add_quantized(directory: str | Path, weight_type: str) -> Path:
    """Add ``weight_type`` (q8_0 | q4_k) to an export that has f32 weights, with llama.cpp's quantizer."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    out = directory / f"base-{weight_type}.gguf"
    if not quantize_with_llamacpp(manifest.weight_file(directory, "f32"), out, weight_type):
        raise UserError(f"{weight_type} quantization needs llama.cpp's quantizer: run `make llamacpp`")
    import dataclasses

    dataclasses.replace(manifest, weights={**manifest.weights, weight_type: out.name}).save(directory)
    return out


def export_gguf(checkpoint: str | Path, out: str | Path, types: tuple[str, ...] = ("f32", "f16", "q8_0", "q4_k"),
                overwrite: bool = False) -> Path:
    """Write the export directory ``out`` (built in a temporary directory and renamed into place)."""
    from safetensors.numpy import save_file

    from icae.models import ICAE, load_checkpoint
    from icae.models.checkpoint import CONFIG_NAME, META_NAME
    from icae.models.loading import resolve_checkpoint

    bad = [t for t in types if t not in WEIGHT_TYPES]
    if bad or not types:
        raise UserError(f"--types: unknown {bad or 'none'}; choose from {WEIGHT_TYPES}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it, or choose another directory")
    _gguf()
    model = load_checkpoint(checkpoint, train=False)
    if not isinstance(model, ICAE):
        raise UserError(f"{checkpoint} holds a SimpleLLM (model_type llm); the GGUF export holds an ICAE")
    family = check_exportable(model.base_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out.parent, f".{out.name}.")
    try:
        weights = {"f32": "base-f32.gguf"}  # always written: llama.cpp's quantizer reads it
        write_base(tmp / weights["f32"], model, "f32")
        if "f16" in types:
            weights["f16"] = "base-f16.gguf"
            write_base(tmp / weights["f16"], model, "f16")
        for q in ("q8_0", "q4_k"):
            if q not in types:
                continue
            weights[q] = f"base-{q}.gguf"
            if quantize_with_llamacpp(tmp / weights["f32"], tmp / weights[q], q):
                continue
            if q == "q4_k":
                raise UserError("Q4_K quantization needs llama.cpp's quantizer: run `make llamacpp` and export with "
                                ".engines/llamacpp/bin/icae, or leave q4_k out of --types")
            write_base(tmp / weights[q], model, q)  # the gguf package's own Q8_0
        if "f32" not in types:
            (tmp / weights.pop("f32")).unlink()
        state = model.trainable_state_dict()
        from icae.models.icae import DECODER_PREFIX, LORA_PREFIX

        write_lora(tmp / "encoder-lora.gguf", model, lora_tensors(state, LORA_PREFIX))
        decoder = None
        if model.has_decoder_adapter:
            decoder = "decoder-lora.gguf"
            write_lora(tmp / decoder, model, lora_tensors(state, DECODER_PREFIX))
        with atomic_path(tmp / EMBEDDINGS_NAME) as file:  # (atomic_path also gives it a new file's permissions)
            save_file({"memory_embeddings": model.memory_embeddings.detach().float().cpu().numpy(),
                       "special_embeddings": model.special_embeddings.detach().float().cpu().numpy()}, str(file))
        model.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        source = resolve_checkpoint(checkpoint)
        for name in (CONFIG_NAME, META_NAME):
            if (source / name).is_file():
                shutil.copy(source / name, tmp / name)
        cfg, a = model.base_config, model.args
        Manifest(base_family=family, hidden_size=cfg.hidden_size, vocab_size=model.vocab_size,
                 head_dim=cfg.hidden_size // cfg.num_attention_heads, weights=weights,
                 encoder_lora="encoder-lora.gguf", decoder_lora=decoder, lora_alpha=float(a.lora_alpha),
                 lora_r=int(a.lora_r), layout=a.layout, use_position_identifiers=bool(a.use_position_identifiers),
                 fixed_mem_size=a.fixed_mem_size, mean_compression_rate=a.mean_compression_rate,
                 eos_token_id=int(model.tokenizer.eos_token_id), pad_token_id=model.tokenizer.pad_token_id,
                 base_model=a.model_name_or_path, base_fingerprint=model.base_fingerprint,
                 source_checkpoint=str(checkpoint)).save(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
