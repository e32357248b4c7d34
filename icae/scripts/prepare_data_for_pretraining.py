"""Prepare pretraining data: documents -> tokenised (context, continuation) samples and a held-out split, on disk.

    python -m icae.scripts.prepare_data_for_pretraining --config_path icae/configs/pretrain_tiny_qwen2.yaml
    python -m icae.data.prepare_data_for_pretraining ...      (the original tool's path: the same recipe)

Config -> read ``dataset_repo`` (or ``long_text_cache``) -> tokenise and cut into windows -> hold out whole documents
(or draw the held-out samples from ``eval_dataset_repo``) -> write both splits atomically. See
:mod:`icae.data.prepare_data_for_pretraining` for the rules.
"""

from __future__ import annotations

from icae.config import config_from_cli
from icae.data.prepare_data_for_pretraining import prepare
from icae.scripts import entry


def main(argv: list[str] | None = None) -> dict:
    config = config_from_cli(argv, description=__doc__)
    info = prepare(config)
    print(f"{info['documents']} documents, {info['tokens']} tokens -> {info['train_samples']} train / "
          f"{info['eval_samples']} eval samples of {info['context_length']}+{info['continuation_length']} tokens\n"
          f"train: {config.pretrain.train_output_file}\neval:  {config.pretrain.eval_output_file}")
    return info


if __name__ == "__main__":
    entry(main)
