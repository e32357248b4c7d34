"""Write a RepoQA release-format JSON offline, from any Python tree (see :mod:`icae.data.build_repoqa` for the rules).

    python -m icae.scripts.build_repoqa --stdlib json email http logging --needles_per_repo 20 --out outputs/repoqa/repoqa.json
    python -m icae.scripts.build_repoqa --source DIR [DIR ...] [--packages] --out data.json.gz
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

from icae.data.build_repoqa import MAX_NEEDLE_BYTES, build_dataset, write_dataset
from icae.scripts import entry


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", nargs="*", default=[], help="Source directories (each one repo).")
    p.add_argument("--stdlib", nargs="*", default=[], help="Standard-library packages to use as repos (json email ...).")
    p.add_argument("--packages", action="store_true", help="Each package directly under a --source is one repo.")
    p.add_argument("--out", required=True, help="Output .json or .json.gz file.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--needles_per_repo", type=int, default=10)
    p.add_argument("--max_needle_bytes", type=int, default=MAX_NEEDLE_BYTES)
    p.add_argument("--max_repos", type=int, default=None)
    p.add_argument("--keep_docstrings", action="store_true", help="Leave the needles' docstrings in the code.")
    a = p.parse_args(argv)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [Path(s) for s in a.source] + [stdlib / name.replace(".", "/") for name in a.stdlib]
    if not sources:
        p.error("give --source DIR and/or --stdlib PACKAGE")
    data = build_dataset(sources, a.seed, a.packages, a.max_repos, needles_per_repo=a.needles_per_repo,
                         max_needle_bytes=a.max_needle_bytes, keep_docstrings=a.keep_docstrings)
    out = write_dataset(data, a.out)
    counts = ", ".join(f"{r['repo']}: {len(r['needles'])}" for r in data["python"])
    print(f"{out}: {len(data['python'])} repos ({counts} needles)")
    return out


if __name__ == "__main__":
    entry(main)
