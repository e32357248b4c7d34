"""Write a RepoQA release-format JSON offline, from any Python tree (see :mod:`icae.data.build_repoqa` for the rules).

    python -m icae.scripts.build_repoqa --stdlib json email http logging --needles_per_repo 20 --out outputs/repoqa/repoqa.json
    python -m icae.scripts.build_repoqa --source DIR [DIR ...] [--packages] --out data.json.gz

The recipe's ``main`` lives in :mod:`icae.data.build_repoqa`, so that the earlier command ``python -m icae.data.build_repoqa``
runs without the library importing a recipe; this module is its name among the recipes.
"""

from __future__ import annotations

from icae.data.build_repoqa import main
from icae.scripts import entry

if __name__ == "__main__":
    entry(main)
