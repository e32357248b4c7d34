"""Write SWE-agent-style trajectories with real observations over a code tree (see
:mod:`icae.data.generate_trajectories`).

    python -m icae.scripts.generate_trajectories --stdlib json email http logging --num 200 --out outputs/trajectories/trajectories.jsonl
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from icae.data.generate_trajectories import generate
from icae.scripts import entry
from icae.utils.io import atomic_write_jsonl


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", nargs="*", default=[], help="Source directories.")
    p.add_argument("--stdlib", nargs="*", default=[], help="Standard-library packages (json email http ...).")
    p.add_argument("--num", type=int, default=20, help="Number of trajectories (at most one per function).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="Output .jsonl file.")
    a = p.parse_args(argv)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [Path(s) for s in a.source] + [stdlib / n.replace(".", "/") for n in a.stdlib]
    if not sources:
        p.error("give --source DIR and/or --stdlib PACKAGE")
    rows = generate(sources, a.num, a.seed)
    atomic_write_jsonl(a.out, rows)
    print(f"{a.out}: {len(rows)} trajectories")
    return Path(a.out)


if __name__ == "__main__":
    entry(main)
