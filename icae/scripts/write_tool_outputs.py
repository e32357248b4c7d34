"""Write realistic tool outputs (really run over local trees) as JSONL, for pretraining (see
:mod:`icae.data.tool_outputs` for the kinds and which trees each split reads).

    nice -n 10 python -m icae.scripts.write_tool_outputs --split train --out outputs/tool_outputs/train.jsonl --count 2000
    nice -n 10 python -m icae.scripts.write_tool_outputs --split heldout --out outputs/tool_outputs/heldout.jsonl --count 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icae.data.tool_outputs import KIND_WEIGHTS, SPLITS, write_tool_outputs
from icae.errors import UserError
from icae.scripts import entry


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=100, help="number of records")
    p.add_argument("--max-chars", type=int, default=12_000, help="cut each text at a line break within this length")
    p.add_argument("--kinds", nargs="*", default=None, choices=sorted(KIND_WEIGHTS), help="only these kinds")
    p.add_argument("--work-dir", default=None, help="sandbox directory (default: $TMPDIR/icae-tool-outputs)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep each record's sandbox (its cwd), so that its command can be run again there")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    a = p.parse_args(argv)
    out = Path(a.out)
    problems = []
    if a.count < 1:
        problems.append(f"--count must be >= 1, got {a.count}")
    if a.max_chars < 100:
        problems.append(f"--max-chars must be >= 100, got {a.max_chars}")
    if out.exists() and not a.overwrite:
        problems.append(f"--out {out} exists; pass --overwrite to replace it, or choose another file")
    if out.is_dir():
        problems.append(f"--out {out} is a directory; give a .jsonl file")
    if problems:
        raise UserError("; ".join(problems))
    return write_tool_outputs(a.split, out, a.count, a.seed, a.max_chars, a.work_dir,
                              tuple(a.kinds) if a.kinds else None, a.keep_work, a.overwrite)


if __name__ == "__main__":
    entry(main)
