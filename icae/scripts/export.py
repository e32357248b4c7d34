"""Export a checkpoint of this project in another tool's format.

    python -m icae.scripts.export --format original CHECKPOINT OUT.safetensors [--dtype bfloat16|float32] [--overwrite]
    icae export --format original CHECKPOINT OUT.safetensors
    icae export --format gguf CHECKPOINT OUTDIR [--types f32,f16,q8_0,q4_k] [--overwrite]

``original`` (``seed``, its earlier name, still works): the original ICAE-for-SWE-agents tool's ``model.safetensors``
(its ``restore_from`` loads it): the encoder as ``icae.base_model.model.*`` (LoRA ``lora_A/B.default`` in float32, base
weights with the embedding table resized to vocab + k + 3 rows), ``memory_token_embed.weight`` (k memory tokens, then
AE, LM, FT), and ``decoder.*`` when a decoder adapter was trained. Base weights and memory embeddings are written in ``--dtype`` (bfloat16, as the
original's files; float32 keeps every bit). The original computes the original layout: a checkpoint trained with
``layout: native`` loads there but gives other outputs (a warning says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from icae.errors import UserError
from icae.models import ICAE, load_checkpoint
from icae.models.framing import OriginalLayout
from icae.models.original_format import write_original_file
from icae.scripts import entry


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="icae export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=["original", "seed", "gguf"], required=True,
                        help="original: the original tool's file (seed: its earlier name); gguf: a directory for "
                             "llama.cpp")
    parser.add_argument("checkpoint", help="a checkpoint directory of this project")
    parser.add_argument("out", help="the .safetensors file to write (original), or the directory (gguf)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--types", default="f32,f16,q8_0,q4_k", help="gguf: base weight types, comma-separated")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    if args.format == "gguf":
        from icae.engines.gguf_export import export_gguf

        out = export_gguf(args.checkpoint, args.out, tuple(t.strip() for t in args.types.split(",") if t.strip()),
                          args.overwrite)
        print(f"wrote {out} (format gguf); serve it with ICAE.from_pretrained({str(out)!r}, backend='llamacpp')")
        return out
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"OUT must be a .safetensors file (the original's restore_from reads one), got {out}")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it, or choose another file")
    model = load_checkpoint(args.checkpoint, train=False)
    if not isinstance(model, ICAE):
        raise UserError(f"{args.checkpoint} holds a SimpleLLM (model_type llm); the original's format holds an ICAE")
    if not isinstance(model.layout, OriginalLayout):
        print(f"warning: {args.checkpoint} was trained with layout: {model.layout.name}; the original tool computes "
              "the original layout (chat-template framing, other segments and position ids), so it will give other "
              "outputs there. Train with layout: original for a checkpoint that behaves the same in both tools.")
    write_original_file(model, out, getattr(torch, args.dtype))
    print(f"wrote {out} (format original, {args.dtype}); load it in the original tool with restore_from: {out}")
    return out


if __name__ == "__main__":
    entry(main)
