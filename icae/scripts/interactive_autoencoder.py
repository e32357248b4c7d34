"""Compress a text into memory slots and reconstruct it: see what a compressor keeps.

    python -m icae.scripts.interactive_autoencoder                       # a prompt loop (empty line or 'quit' ends it)
    python -m icae.scripts.interactive_autoencoder --input FILE [--json] # a file, or - for standard input
    icae reconstruct --input - --checkpoint runs/my_run/final < some_code.py

The default model is the shipped pretrained compressor ``tiny-icae-4x`` (``--checkpoint`` or ``restore_from=...`` for
any other; ``key=value`` overrides as in the recipes, e.g. ``--checkpoint tiny-icae-8x``). A text of any length is cut
into segments as usual and decoded **whole** from all its slots at once, as the original tool's script does and as
the server and every downstream task read a compressed context (the shipped compressors were trained to, through a
curriculum of multi-segment contexts: docs/fidelity.md). ``--per_segment`` decodes each segment from its own slots
and joins the pieces instead.

Prints the token count, the slots, the compression rate, the reconstruction and its BLEU-1 (NLTK, whitespace tokens);
``--json`` prints one object with ``input_tokens``, ``slots``, ``compression_rate``, ``reconstruction``, ``bleu1``.
"""

from __future__ import annotations

import argparse
import json
import sys


from icae.config import parse_overrides
from icae.errors import UserError
from icae.models import ICAE, load_checkpoint
from icae.scripts import entry
from icae.training.evaluation import reconstruct

DEFAULT = "tiny-icae-4x"


def show(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(f"{result['input_tokens']} tokens -> {result['slots']} slots ({result['compression_rate']:.2f}x); "
          f"BLEU-1 {result['bleu1']:.3f}\n--- reconstruction ---\n{result['reconstruction']}\n---")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="icae reconstruct", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a text file, or - for standard input (default: a prompt loop)")
    parser.add_argument("--checkpoint", default=None, help=f"a checkpoint directory or shipped name (default {DEFAULT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")
    way = parser.add_mutually_exclusive_group()
    way.add_argument("--per_segment", action="store_true",
                     help="decode each segment from its own slots and join the pieces (the default decodes the whole "
                          "text from all its slots at once, as the server and every downstream task read it)")
    way.add_argument("--whole", action="store_true", help="the default, kept for earlier scripts")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = parse_overrides(rest)
    checkpoint = args.checkpoint or overrides.pop("restore_from", None) or DEFAULT
    model = load_checkpoint(checkpoint, **{**overrides, "train": False})
    if not isinstance(model, ICAE):
        raise UserError(f"{checkpoint} holds a SimpleLLM: reconstruction needs a compressor (model_type icae)")
    model.eval()
    if args.input is not None:
        if args.input == "-":
            text = sys.stdin.read()
        else:
            try:
                text = open(args.input, encoding="utf-8").read()
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"--input {args.input}: cannot read it as UTF-8 text ({e})") from None
        result = reconstruct(model, text, per_segment=args.per_segment)
        show(result, args.json)
        return [result]
    results = []
    print(f"{checkpoint}: type a text and press Enter (an empty line or 'quit' ends).", file=sys.stderr)
    for line in sys.stdin:
        text = line.rstrip("\n").replace("\\n", "\n")  # \n typed in the prompt is a newline
        if text.strip() in ("", "quit", "exit"):
            break
        results.append(reconstruct(model, text, per_segment=args.per_segment))
        show(results[-1], args.json)
    return results


if __name__ == "__main__":
    entry(main)
