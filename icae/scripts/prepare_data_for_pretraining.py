"""Prepare pretraining data: documents -> tokenised (context, continuation) samples and a held-out split, on disk.

    python -m icae.scripts.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml
    python -m icae.data.prepare_data_for_pretraining ...      (the original tool's path: the same recipe)

Config -> read ``dataset_repo`` (or ``long_text_cache``) -> tokenise and cut into windows -> hold out whole documents
(or draw the held-out samples from ``eval_dataset_repo``) -> write both splits atomically. The recipe's ``main``
lives in :mod:`icae.data.prepare_data_for_pretraining` (with the rules), so that the original tool's command runs
without the library importing a recipe; this module is its name among the recipes.
"""

from __future__ import annotations

from icae.data.prepare_data_for_pretraining import main
from icae.scripts import entry

if __name__ == "__main__":
    entry(main)
