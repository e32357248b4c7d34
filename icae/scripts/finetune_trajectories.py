"""Fine-tune an ICAE, or the SimpleLLM baseline, on agent trajectories: compressed observations, loss on the
assistant's turns.

    python -m icae.scripts.generate_trajectories --stdlib json email http logging --num 200 --out outputs/trajectories/trajectories.jsonl
    python -m icae.scripts.finetune_trajectories --config_path icae/configs/trajectories_icae.yaml

Load config -> build the model (``restore_from``: a pretraining checkpoint) -> trajectories (``dataset_repo``, format
``trajectory_format``), split by seed -> each trajectory rendered turn by turn: observations of ``compress_roles`` at
least ``min_tokens_to_compress`` tokens long become memory slots, everything else stays tokens, and the history stops
at the last assistant turn within ``max_history_tokens`` -> train -> save ``output_dir/final``.

Every assistant turn is learned from its accumulated history (earlier turns' tokens and earlier observations' slots,
in order). One decoder pass per trajectory scores all of its turns: under the causal mask that equals one pass per
turn over its history, and each observation is compressed once. ``gradient_accumulation_steps`` accumulates over
trajectories. ``model_type: llm`` trains SimpleLLM on the uncompressed history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from datasets import Dataset

from icae.config import ConfigError, config_from_cli
from icae.data.tasks import limit
from icae.data.trajectories import TrajectoryCollator, load_trajectory_task, rendered
from icae.models import build_model
from icae.models.auto import layout_for
from icae.models.loading import load_tokenizer
from icae.scripts import entry
from icae.training.finetune import finetune


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    config = config_from_cli(argv, description=__doc__)
    config.require("finetune_trajectories", "dataset_repo", "output_dir")
    split = load_trajectory_task(config)
    train = limit(split.train, config.data.max_train_samples)
    layout = layout_for(config.model, load_tokenizer(config.model.model_name_or_path))
    # Turns are tokenised into an Arrow table batch by batch (compact, unlike Python lists of ids). A trajectory whose
    # first assistant turn is beyond max_history_tokens leaves nothing to learn and is dropped.
    raw = Dataset.from_list(train)
    key = hashlib.sha1(json.dumps([config.to_dict(), len(train)], default=str).encode()).hexdigest()
    samples = raw.map(
        lambda row: {"turns": [dataclasses.asdict(t) for t in rendered(config, layout, row)]},
        remove_columns=raw.column_names, new_fingerprint=f"turns-{key}", desc="rendering turns",
    ).filter(lambda row: len(row["turns"]) > 0, new_fingerprint=f"kept-{key}")
    if len(samples) == 0:
        raise ConfigError([f"max_history_tokens={config.trajectories.max_history_tokens}: no training trajectory fits "
                           "(each needs its first assistant turn within the limit)"], "config")
    torch.manual_seed(config.seed)
    model = build_model(config)
    final = finetune(config, model, samples, callbacks, TrajectoryCollator())
    print(f"fine-tuned on {len(samples)} trajectories ({len(split.test)} held out, {len(train) - len(samples)} too "
          f"long); checkpoint: {final}")
    return final


if __name__ == "__main__":
    entry(main)
