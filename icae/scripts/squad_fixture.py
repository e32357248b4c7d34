"""Write small SQuAD-format fixture files (train.json, dev.json) from facts made up here (no copied text).

    python -m icae.scripts.squad_fixture --out outputs/squad_fixture [--version 2.0]

The recipe's ``main`` lives in :mod:`icae.data.squad`, so that the earlier command ``python -m icae.data.squad``
runs without the library importing a recipe; this module is its name among the recipes.
"""

from __future__ import annotations

from icae.data.squad import main
from icae.scripts import entry

if __name__ == "__main__":
    entry(main)
