"""Fine-tune an ICAE, or the SimpleLLM baseline, on RepoQA Search Needle Function.

    python -m icae.scripts.build_repoqa --stdlib json email http logging --out outputs/repoqa/repoqa.json
    python -m icae.scripts.finetune_repoqa --config_path icae/configs/repoqa_icae.yaml

Load config -> RepoQA tasks from ``dataset_repo`` (or ``REPOQA_DATA_OVERRIDE_PATH``), split by seed (``test_fraction``
held out for inference) -> build the model (``restore_from``: a pretraining checkpoint; else from scratch) -> train on
``[slots of the code context][FT] description + instruction -> fenced needle``, loss on the needle only -> save
``output_dir/final``. ``model_type: llm`` trains SimpleLLM on the full code context instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from icae.config import config_from_cli
from icae.data.repoqa import load_repoqa_task
from icae.data.tasks import limit
from icae.models import build_model
from icae.models.auto import layout_for
from icae.models.loading import load_tokenizer
from icae.scripts import entry
from icae.training.finetune import finetune


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    config = config_from_cli(argv, description=__doc__)
    config.require("finetune_repoqa", "output_dir")
    split = load_repoqa_task(config, layout_for(config.model, load_tokenizer(config.model.model_name_or_path)))
    train = limit(split.train, config.data.max_train_samples)
    torch.manual_seed(config.seed)
    model = build_model(config)
    final = finetune(config, model, train, callbacks)
    print(f"fine-tuned on {len(train)} needles ({len(split.test)} held out, {split.info['skipped_needles']} longer than "
          f"code_context_size skipped); checkpoint: {final}")
    return final


if __name__ == "__main__":
    entry(main)
