"""The original tool's checkpoint file: reading it into an ICAE here, and writing one from an ICAE here.

The original saves its ``ICAE`` module's state dict as one ``model.safetensors``:

- ``icae.base_model.model.<module path>``: the encoder, a peft model over the base. Its LoRA tensors are
  ``...<module>.lora_A.default.weight`` / ``lora_B`` (float32); every base weight is there too (bfloat16), LoRA-wrapped
  linears as ``<module>.base_layer.weight``; the embedding table has ``vocab + k + 3`` rows (resized for the memory and
  special tokens, whose extra rows the model never reads); a tied ``lm_head`` is left out.
- ``memory_token_embed.weight``: ``(k + 3, hidden)``, the k memory tokens, then the AE, LM and FT tokens.
- ``decoder.base_model.model.<module path>``: the decoder (its LoRA and its base weights), only when it was trained
  (``freeze_decoder: false``).

Here one copy of the base serves both sides: a peft model with the adapters ``default`` (encoder) and ``decoder``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from icae.errors import UserError
from icae.models.lora import DECODER_ADAPTER, ENCODER_ADAPTER
from icae.utils.io import atomic_path

ENCODER, DECODER, MEMORY = "icae.", "decoder.", "memory_token_embed.weight"


def is_original_state(keys) -> bool:
    """A state dict written by the original tool (recognised by its key names)."""
    return any(k == MEMORY or k.startswith(ENCODER) for k in keys)


def _lora_name(ours: str) -> tuple[str, str] | None:
    """Our peft key ``base_model.model.X.lora_A.<adapter>.weight`` -> (adapter, the original's key), else None."""
    for adapter, side in ((ENCODER_ADAPTER, ENCODER), (DECODER_ADAPTER, DECODER)):
        tag = f".{adapter}."
        if "lora_" in ours and tag in ours:
            return adapter, side + ours.replace(tag, ".default.")
    return None


def load_original_state(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the original's tensors into ``model`` (an ICAE): both adapters' LoRA and the memory/special embeddings.

    The file's base weights are compared with the loaded base model and not loaded (one copy of the base serves encoder
    and decoder here); a warning names how many differ.
    """
    if not is_original_state(state):
        raise UserError(f"{source}: not a checkpoint of the original tool (no icae.* or {MEMORY} tensors)")
    problems, lora = [], {}
    peft_state = model.model.state_dict()
    for ours, tensor in peft_state.items():
        named = _lora_name(ours)
        if named is None:
            continue
        adapter, theirs = named
        if theirs not in state:
            problems.append(f"missing {theirs}")
        elif state[theirs].shape != tensor.shape:
            problems.append(f"{theirs}: file shape {tuple(state[theirs].shape)} != model {tuple(tensor.shape)} (lora_r or "
                            "lora_target_modules differ)")
        else:
            lora[ours] = state[theirs]
    has_decoder = any(k.startswith(DECODER) and "lora_" in k for k in state)
    if has_decoder and model.args.freeze_decoder:
        problems.append("the file holds a trained decoder adapter (decoder.*): set freeze_decoder: false")
    k = model.args.fixed_mem_size
    memory = state.get(MEMORY)
    if memory is None or tuple(memory.shape) != (k + 3, model.hidden_size):
        got = None if memory is None else tuple(memory.shape)
        problems.append(f"{MEMORY}: expected ({k + 3}, {model.hidden_size}) for fixed_mem_size {k}, got {got}")
    if problems:
        more = f" ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise UserError(f"{source} does not match this ICAE: " + "; ".join(problems[:8]) + more)
    model.model.load_state_dict(lora, strict=False)
    with torch.no_grad():
        model.memory_embeddings.copy_(memory[:k].float())
        model.special_embeddings.copy_(memory[k:].float())
    differ = _differing_base(model, state)
    if differ:
        warnings.warn(f"{source}: {differ} base weight tensor(s) differ from the loaded base model "
                      f"{model.args.model_name_or_path!r}; the loaded ones are kept (check model_name_or_path)",
                      stacklevel=3)


def _differing_base(model, state: dict[str, torch.Tensor]) -> int:
    """How many of the file's encoder base weights differ from the loaded base (beyond bfloat16 rounding)."""
    differ = 0
    for ours, tensor in model.model.state_dict().items():
        if "lora_" in ours:
            continue
        theirs = state.get(ENCODER + ours)
        if theirs is None:
            continue
        if theirs.shape != tensor.shape and theirs.dim() == 2 and theirs.shape[1:] == tensor.shape[1:]:
            theirs = theirs[: tensor.shape[0]]  # the resized embedding table: compare the vocabulary rows
        if theirs.shape != tensor.shape or not torch.equal(theirs.to(torch.bfloat16), tensor.to(torch.bfloat16)):
            differ += 1
    return differ


def original_state(model, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The original tool's state dict for ``model`` (an ICAE): LoRA in float32, base weights and the memory embeddings
    in ``dtype`` (the original's files are bfloat16; float32 keeps every bit)."""
    out: dict[str, torch.Tensor] = {}
    tied = getattr(model.base_config, "tie_word_embeddings", False)
    k = model.args.fixed_mem_size
    for ours, tensor in model.model.state_dict().items():
        named = _lora_name(ours)
        if named is not None:
            out[named[1]] = tensor.detach().float().contiguous()
            continue
        if "lora_" in ours or (tied and ours.endswith("lm_head.weight")):
            continue
        value = tensor.detach().to(dtype)
        if value.dim() == 2 and value.shape[0] == model.vocab_size and ours.endswith("embed_tokens.weight"):
            extra = value.float().mean(dim=0, keepdim=True).expand(k + 3, -1).to(dtype)  # rows the model never reads
            value = torch.cat([value, extra])
        out[ENCODER + ours] = value.contiguous()
        if model.has_decoder_adapter:
            out[DECODER + ours] = tensor.detach().to(dtype).clone()  # the decoder's own copy of the base
    out[MEMORY] = torch.cat([model.memory_embeddings, model.special_embeddings]).detach().to(dtype).contiguous()
    return out


def write_original_file(model, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write ``model`` as a ``.safetensors`` file of the original tool (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in original_state(model, dtype).items()}, str(tmp), metadata={"format": "pt"})
    return path
