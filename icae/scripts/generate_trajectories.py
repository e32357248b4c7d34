"""Write SWE-agent-style trajectories with real observations over a code tree (see
:mod:`icae.data.generate_trajectories`).

    python -m icae.scripts.generate_trajectories --stdlib json email http logging --num 200 --out outputs/trajectories/trajectories.jsonl

The recipe's ``main`` lives in :mod:`icae.data.generate_trajectories`, so that the earlier command
``python -m icae.data.generate_trajectories`` runs without the library importing a recipe; this module is its name among the recipes.
"""

from __future__ import annotations

from icae.data.generate_trajectories import main
from icae.scripts import entry

if __name__ == "__main__":
    entry(main)
