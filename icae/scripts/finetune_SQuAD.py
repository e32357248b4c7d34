"""Fine-tune an ICAE, or the SimpleLLM baseline, on SQuAD question answering.

    python -m icae.scripts.squad_fixture --out outputs/squad_fixture        # offline fixture (or use rajpurkar/squad)
    python -m icae.scripts.finetune_SQuAD --config_path icae/configs/finetune_config_icae.yaml
    python -m icae.scripts.finetune_SQuAD --config_path icae/configs/finetune_config_llm.yaml

Load config -> QA samples (the context is compressed, unless shorter than ``min_tokens_to_compress``; the decoder
reads ``[slots][FT] question`` and learns the answer, loss on the answer only) -> build the model (``restore_from``: a
pretraining checkpoint; else from scratch) -> train with ICAETrainer -> save ``output_dir/final``.
``model_type: llm`` trains SimpleLLM (LoRA) on ``context question -> answer`` with the full context instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from icae.config import config_from_cli
from icae.data.squad import load_squad_task
from icae.models import build_model
from icae.models.auto import layout_for
from icae.models.loading import load_tokenizer
from icae.scripts import entry
from icae.training.finetune import finetune


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    config = config_from_cli(argv, description=__doc__)
    config.require("finetune_SQuAD", "dataset_repo", "output_dir")
    split = load_squad_task(config, layout_for(config.model, load_tokenizer(config.model.model_name_or_path)), test=False)
    torch.manual_seed(config.seed)
    model = build_model(config)
    final = finetune(config, model, split.train, callbacks)
    print(f"fine-tuned on {len(split.train)} questions; checkpoint: {final}")
    return final


if __name__ == "__main__":
    entry(main)
