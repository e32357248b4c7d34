"""Fine-tune an ICAE, or the SimpleLLM baseline, on RepoQA Search Needle Function.

    python -m icae.data.build_repoqa --stdlib json email http logging --out outputs/repoqa/repoqa.json
    python -m icae.scripts.finetune_RepoQA --config_path icae/configs/finetune_repoqa_icae_qwen2.yaml

Load config -> build the model (``restore_from``: a pretraining checkpoint; else from scratch) -> RepoQA tasks from
``dataset_repo`` (or ``REPOQA_DATA_OVERRIDE_PATH``), split by seed (``test_fraction`` held out for inference) ->
train on ``[slots of the code context][FT] description + instruction -> fenced needle``, loss on the needle only ->
save ``output_dir/final``. ``model_type: llm`` trains SimpleLLM on the full code context instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from icae.config import config_from_cli
from icae.data.repoqa import repoqa_split
from icae.models import build_model
from icae.training.finetune import finetune


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    config = config_from_cli(sys.argv[1:] if argv is None else argv, description=__doc__)
    torch.manual_seed(config.training.get("seed", 42))
    model = build_model(config)
    train, test, skipped = repoqa_split(config, model.tokenizer)
    if config.task.max_train_samples:
        train = train[: config.task.max_train_samples]
    samples = [{k: t[k] for k in ("input_ids", "prompt_ids", "target_ids")} for t in train]
    final = finetune(config, model, samples, callbacks)
    print(f"fine-tuned on {len(samples)} needles ({len(test)} held out, {skipped} longer than code_context_size "
          f"skipped); checkpoint: {final}")
    return final


if __name__ == "__main__":
    main()
