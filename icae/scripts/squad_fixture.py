"""Write small SQuAD-format fixture files (train.json, dev.json) from facts made up here (no copied text).

    python -m icae.scripts.squad_fixture --out outputs/squad_fixture [--version 2.0]
"""

from __future__ import annotations

import argparse

from icae.data.squad import write_fixture
from icae.scripts import entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write small SQuAD-format fixture files (train.json, dev.json).")
    parser.add_argument("--out", required=True)
    parser.add_argument("--version", default="1.1", choices=["1.1", "2.0"])
    parser.add_argument("--n_train", type=int, default=16)
    parser.add_argument("--n_eval", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    for path in write_fixture(a.out, a.n_train, a.n_eval, a.seed, a.version):
        print(path)


if __name__ == "__main__":
    entry(main)
