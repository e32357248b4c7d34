"""Train the tiny byte-level BPE tokenizer that ships in ``icae/assets/tokenizer/``.

    python -m icae.scripts.build_tiny_tokenizer [--source DIR] [--vocab_size 4096]

It is trained on the Python standard library of the running interpreter (sources and docs that ship offline),
so the tiny default models tokenise code and English reasonably. Byte-level: any text is encodable.
The shipped file was made with the defaults; re-running it on another Python version may differ slightly.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"


def iter_corpus(source: Path, max_bytes: int):
    total = 0
    for path in sorted(source.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        total += len(text)
        yield text
        if total >= max_bytes:
            return


def train(source: Path, vocab_size: int, max_bytes: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_corpus(source, max_bytes), trainer=trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--max_bytes", type=int, default=12_000_000)
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    args = parser.parse_args()
    tok = train(args.source, args.vocab_size, args.max_bytes)
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    print(f"wrote {args.out / 'tokenizer.json'} (vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
