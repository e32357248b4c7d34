"""What the llama.cpp backend computes against the PyTorch path, and what each quantization costs, on held-out text.

    .engines/llamacpp/bin/python -m icae.benchmarks.engines_quality --checkpoint tiny-icae-4x \\
        --work runs/engines_quality/4x --texts 32

For one compressor checkpoint: export it (f32, f16, Q8_0, Q4_K; reused when present), take ``--texts`` held-out tool
outputs of ``--min-tokens``..``--max-tokens`` tokens, whole (``docs/results/tool_outputs_heldout.jsonl``, in file
order), and report

- slots: the cosine between llama.cpp f32 slots and PyTorch's, per slot (min and mean over every slot of every text);
- greedy generations: how many AE reconstructions of llama.cpp f32 equal PyTorch's token for token;
- per weight type: reconstruction BLEU-1 against the original text (mean over texts), its difference to f32, how
  many reconstructions equal f32's, and the base GGUF's size.

Greedy decoding throughout; one llama.cpp thread and one PyTorch thread unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from icae.errors import UserError
from icae.utils.io import atomic_write_json, replaceable

HELD_OUT = Path(__file__).resolve().parents[2] / "docs" / "results" / "tool_outputs_heldout.jsonl"


def held_out_texts(tokenizer, path: Path, n: int, lo: int, hi: int) -> list[str]:
    """The first ``n`` texts of the JSONL ``path`` whose token count lies in ``[lo, hi]``."""
    out = []
    for line in path.read_text().splitlines():
        text = json.loads(line)["text"]
        if lo <= len(tokenizer(text)["input_ids"]) <= hi:
            out.append(text)
            if len(out) == n:
                return out
    raise UserError(f"{path} holds only {len(out)} texts of {lo}..{hi} tokens; lower --texts or widen the range")


@torch.no_grad()
def run(args) -> dict:
    from icae.engines.gguf_export import add_quantized, export_gguf
    from icae.engines.llamacpp import LlamaCppICAE
    from icae.engines.manifest import Manifest
    from icae.metrics.text import bleu1
    from icae.models import load_checkpoint

    torch.set_num_threads(args.threads)
    export = Path(args.work) / "gguf"
    if not (export / "manifest.json").is_file():
        export_gguf(args.checkpoint, export, ("f32", *args.weights))
    for w in args.weights:
        if w not in Manifest.load(export).weights:
            add_quantized(export, w)
    model = load_checkpoint(args.checkpoint, train=False)
    texts = held_out_texts(model.tokenizer, Path(args.held_out), args.texts, args.min_tokens, args.max_tokens)
    rows = model.tokenize(texts)
    budget = max(r.numel() for r in rows) + 8

    ref_memory = model.compress(rows)
    ref_ids = model.generate(ref_memory, mode="ae", max_new_tokens=budget)
    ref_text = model.tokenizer.batch_decode(ref_ids, skip_special_tokens=True)
    result = {"checkpoint": str(args.checkpoint), "texts": len(texts), "tokens": [r.numel() for r in rows],
              "threads": args.threads, "weights": {}}
    result["pytorch_bleu1"] = statistics.mean(bleu1(t, o) for t, o in zip(texts, ref_text))
    f32_ids = None
    for w in ("f32", *args.weights):
        engine = LlamaCppICAE(export, w, {"n_threads": args.threads})
        try:
            memory = engine.compress(rows)
            ids = engine.generate(memory, mode="ae", max_new_tokens=budget)
        finally:
            engine.close()
        outputs = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        entry = {"bleu1": statistics.mean(bleu1(t, o) for t, o in zip(texts, outputs)),
                 "gguf_mib": (export / Manifest.load(export).weights[w]).stat().st_size / 2**20}
        if w == "f32":
            keep = ref_memory.mask.bool()  # (batch, slots): the real slots
            cos = torch.nn.functional.cosine_similarity(memory.slots.float(), ref_memory.slots.float(), dim=-1)[keep]
            result["slots_cosine_min"], result["slots_cosine_mean"] = float(cos.min()), float(cos.mean())
            result["slots_max_abs_diff"] = float((memory.slots - ref_memory.slots)[keep].abs().max())
            result["greedy_equal_pytorch"] = sum(a == b for a, b in zip(ids, ref_ids))
            f32_ids = ids
        entry["equal_f32"] = sum(a == b for a, b in zip(ids, f32_ids))
        result["weights"][w] = entry
    for entry in result["weights"].values():
        entry["bleu1_minus_f32"] = entry["bleu1"] - result["weights"]["f32"]["bleu1"]
    return result


def table(r: dict) -> str:
    lines = [f"{r['checkpoint']}: {r['texts']} held-out texts of {min(r['tokens'])}-{max(r['tokens'])} tokens; "
             f"f32 slots vs PyTorch cosine min {r['slots_cosine_min']:.7f} mean {r['slots_cosine_mean']:.7f} "
             f"(max abs diff {r['slots_max_abs_diff']:.2e}); greedy AE equal to PyTorch "
             f"{r['greedy_equal_pytorch']}/{r['texts']}; PyTorch BLEU-1 {r['pytorch_bleu1']:.4f}",
             "| weights | BLEU-1 | minus f32 | equal to f32 | base GGUF MiB |", "|---|---|---|---|---|"]
    for w, e in r["weights"].items():
        lines.append(f"| {w} | {e['bleu1']:.4f} | {e['bleu1_minus_f32']:+.4f} | {e['equal_f32']}/{r['texts']} | "
                     f"{e['gguf_mib']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m icae.benchmarks.engines_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a compressor checkpoint (or a shipped name: tiny-icae-4x)")
    p.add_argument("--work", required=True, help="directory for the export (reused when present) and result.json")
    p.add_argument("--weights", nargs="*", default=["f16", "q8_0", "q4_k"], help="weight types besides f32")
    p.add_argument("--held-out", default=str(HELD_OUT), help="JSONL of {'text': ...} records")
    p.add_argument("--texts", type=int, default=32)
    p.add_argument("--min-tokens", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's result.json in --work")
    a = p.parse_args(argv)
    out = replaceable(Path(a.work) / "result.json", a.overwrite)  # refused before anything runs
    result = run(a)
    atomic_write_json(out, result)
    print(table(result))
    return result


if __name__ == "__main__":
    from icae.errors import entry

    entry(main)
