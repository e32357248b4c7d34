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

from icae.config import SECTIONS, TrainingKeys, config_from_cli
from icae.errors import UserError

# Subcommand -> module under icae.scripts with a main(argv) function.
RECIPES = {
    "demo": "demo",
    "roundtrip": "roundtrip",
    "prepare": "prepare_data_for_pretraining",
    "pretrain": "pretrain",
    "build-base": "build_tiny_base",
    "bench": "bench",
    "bench-peers": "bench_peers",
    "bench-serve": "bench_serve",
    "bench-agent": "bench_agent",
    "finetune-squad": "finetune_SQuAD",
    "inference-squad": "inference_SQuAD",
    "squad-fixture": "squad_fixture",
    "build-repoqa": "build_repoqa",
    "finetune-repoqa": "finetune_repoqa",
    "inference-repoqa": "inference_repoqa",
    "generate-trajectories": "generate_trajectories",
    "finetune-trajectories": "finetune_trajectories",
    "inference-trajectories": "inference_trajectories",
    "write-corpus": "write_corpus",
    "export": "export",
    "reconstruct": "interactive_autoencoder",
    "serve": "serve",
    "build-compressor": "build_compressor",
    "build-simple-llm": "build_simple_llm",
    "build-tokenizer": "build_tiny_tokenizer",
    "write-tool-outputs": "write_tool_outputs",
    "tool-output-stats": "tool_output_stats",
    "fidelity": "fidelity",
}


def _keys() -> None:
    for name, section in [*SECTIONS.items(), ("training", TrainingKeys)]:
        print(f"# {name} ({section.__name__}): {section.__doc__.strip()}")
        for f in dataclasses.fields(section):
            if f.name == "extra":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            print(f"{f.name}: {default!r}  ({f.type})\n    {f.metadata.get('help', '')}")
    print("# Any other transformers.TrainingArguments field (learning_rate, output_dir, bf16, ...) is accepted too.")


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
            module = importlib.import_module(f"icae.scripts.{RECIPES[command]}")
            sys.argv = [f"icae {command}", *rest]
            module.main(rest)
        else:
            print(f"icae: unknown command {command!r}; choose one of: {', '.join(['keys', 'config', 'build-tiny', *RECIPES])}",
                  file=sys.stderr)
            return 2
    except UserError as e:  # bad config, data or checkpoint: the message names every problem
        print(f"icae: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
