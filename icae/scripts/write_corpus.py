"""Write standard-library code as a JSONL corpus (``{"path", "text"}`` records), for pretraining offline.

    python -m icae.scripts.write_corpus --out outputs/demo/stdlib_n_z.jsonl            # top-level modules n-z
    python -m icae.scripts.write_corpus --base wide --out outputs/corpus/wide.jsonl    # the base models' corpus

The recipe's ``main`` lives in :mod:`icae.data.corpus`, so that the earlier command ``python -m icae.data.corpus``
runs without the library importing a recipe; this module is its name among the recipes.
"""

from __future__ import annotations

from icae.data.corpus import main
from icae.scripts import entry

if __name__ == "__main__":
    entry(main)
