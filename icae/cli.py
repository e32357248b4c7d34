"""The ``icae`` command: one front for every recipe.

    icae demo [--config_path FILE] [key=value ...]     run a recipe (same as python -m icae.scripts.demo ...)
    icae prepare / pretrain --config_path FILE         data preparation and pretraining
    icae finetune-squad / inference-squad ...          SQuAD (also -repoqa and -trajectories)
    icae build-repoqa / generate-trajectories ...      offline RepoQA dataset and agent trajectories
    icae config --config_path FILE [key=value ...]     validate a config and print it resolved
    icae keys                                          list every config key with its type, default and help
    icae build-tiny --family qwen2|mistral --out DIR   write a tiny random-initialised model + tokenizer
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

import yaml

from icae.config import (
    BenchArguments,
    ConfigError,
    ModelArguments,
    TaskArguments,
    config_from_cli,
)
from icae.data.sources import SourceError

# Subcommand -> module with a main(argv) function. Recipes of later tasks add their line here.
RECIPES = {
    "demo": "icae.scripts.demo",
    "roundtrip": "icae.scripts.roundtrip",
    "prepare": "icae.data.prepare_data_for_pretraining",
    "pretrain": "icae.scripts.pretrain",
    "build-base": "icae.scripts.build_tiny_base",
    "bench": "icae.bench",
    "finetune-squad": "icae.scripts.finetune_SQuAD",
    "inference-squad": "icae.scripts.inference_SQuAD",
    "squad-fixture": "icae.data.squad",
    "build-repoqa": "icae.data.build_repoqa",
    "finetune-repoqa": "icae.scripts.finetune_RepoQA",
    "inference-repoqa": "icae.scripts.inference_RepoQA",
    "generate-trajectories": "icae.data.generate_trajectories",
    "finetune-trajectories": "icae.scripts.finetune_trajectories",
    "inference-trajectories": "icae.scripts.inference_trajectories",
    "build-tokenizer": "icae.scripts.build_tiny_tokenizer",
}


def _keys() -> None:
    for section in (ModelArguments, TaskArguments, BenchArguments):
        print(f"# {section.__name__}: {section.__doc__.strip()}")
        for f in dataclasses.fields(section):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            print(f"{f.name}: {default!r}  ({f.type})\n    {f.metadata.get('help', '')}")
    print("# Any transformers.TrainingArguments field (learning_rate, max_steps, output_dir, bf16, ...) is accepted too.")


def _build_tiny(argv: list[str]) -> None:
    from icae.models.loading import FAMILIES, build_tiny_model

    p = argparse.ArgumentParser(prog="icae build-tiny", description="Write a tiny model loadable with from_pretrained.")
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(build_tiny_model(a.family, a.out, a.hidden_size, a.num_layers, a.seed))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("recipes: " + ", ".join(RECIPES))
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "keys":
            _keys()
        elif command == "config":
            print(yaml.safe_dump(config_from_cli(rest).to_dict(), sort_keys=False), end="")
        elif command == "build-tiny":
            _build_tiny(rest)
        elif command in RECIPES:
            module = importlib.import_module(RECIPES[command])
            sys.argv = [f"icae {command}", *rest]
            module.main()
        else:
            print(f"icae: unknown command {command!r}; try `icae --help`", file=sys.stderr)
            return 2
    except (ConfigError, SourceError) as e:  # bad config or data: the message names every problem
        print(f"icae: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
