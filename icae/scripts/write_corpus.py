"""Write standard-library code as a JSONL corpus (``{"path", "text"}`` records), for pretraining offline.

    python -m icae.scripts.write_corpus --out outputs/demo/stdlib_n_z.jsonl            # top-level modules n-z
    python -m icae.scripts.write_corpus --base wide --out outputs/corpus/wide.jsonl    # the base models' corpus
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icae.data.corpus import base_corpus_files, write_corpus, write_stdlib_corpus
from icae.scripts import entry


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Write standard-library code as a JSONL corpus.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--first", default="n", help="top-level modules from this letter (default n)")
    parser.add_argument("--last", default="z", help="... to this letter (default z)")
    parser.add_argument("--base", choices=("narrow", "wide"), default=None,
                        help="instead: the base-model corpus (narrow: modules a-m; wide: also packages and tests)")
    a = parser.parse_args(argv)
    out = write_corpus(a.out, base_corpus_files(a.base)) if a.base else write_stdlib_corpus(a.out, a.first, a.last)
    print(out)
    return out


if __name__ == "__main__":
    entry(main)
