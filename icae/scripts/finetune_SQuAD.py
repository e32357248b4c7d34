"""Fine-tune an ICAE, or the SimpleLLM baseline, on SQuAD question answering.

    python -m icae.data.squad --out outputs/squad_fixture        # offline fixture (or use rajpurkar/squad)
    python -m icae.scripts.finetune_SQuAD --config_path icae/configs/finetune_config_icae.yaml
    python -m icae.scripts.finetune_SQuAD --config_path icae/configs/finetune_config_llm.yaml

Load config -> build the model (``restore_from``: a pretraining checkpoint; else from scratch) -> QA samples (the
context is compressed, unless shorter than ``min_tokens_to_compress``; the decoder reads ``[slots][FT] question``
and learns the answer, loss on the answer only) -> train with ICAETrainer -> save ``output_dir/final``.
``model_type: llm`` trains SimpleLLM (LoRA) on ``context question -> answer`` with the full context instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from icae.config import config_from_cli
from icae.data.squad import load_squad, qa_sample
from icae.models import build_model
from icae.training.finetune import finetune


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    config = config_from_cli(sys.argv[1:] if argv is None else argv, description=__doc__)
    torch.manual_seed(config.training.get("seed", 42))
    records = load_squad(config.task.dataset_repo, config.task.dataset_split)
    if config.task.max_train_samples:
        records = records[: config.task.max_train_samples]
    model = build_model(config)
    samples = [qa_sample(model.tokenizer, r, config.task.qa_prompt_template) for r in records]
    final = finetune(config, model, samples, callbacks)
    print(f"fine-tuned on {len(samples)} questions; checkpoint: {final}")
    return final


if __name__ == "__main__":
    main()
