"""Round trip: compress-and-reconstruct on the built-in tiny model.

    python -m icae.scripts.roundtrip --config_path icae/configs/roundtrip_tiny_qwen2.yaml

Load config -> build ICAE on the tiny model -> take short standard-library functions -> measure reconstruction ->
train the encoder (LoRA + memory embeddings, decoder frozen) with ICAETrainer -> measure again -> save a checkpoint,
reload it and check it reconstructs identically -> write metrics JSON.
The texts reconstructed are the training texts: this shows the round trip works end to end, not generalisation
(a held-out evaluation comes with pretraining).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from datasets import Dataset

from icae.config import ConfigError, config_from_cli
from icae.data.collators import AutoencodingCollator
from icae.data.corpus import functions_by_length
from icae.metrics import bleu1, exact_match, positional_match
from icae.models import ICAE, build_model
from icae.scripts import entry
from icae.training import ICAETrainer
from icae.training.results import free_path, results_dir
from icae.utils.io import atomic_write_json

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "roundtrip_tiny_qwen2.yaml"


@torch.no_grad()
def evaluate(model, texts: list[str], max_new_tokens: int) -> dict:
    model.eval()
    rows = model.tokenize(texts)
    loss = model(rows, mode="ae").loss.item()
    memory = model.compress(rows)
    generated = model.generate(memory, mode="ae", max_new_tokens=max_new_tokens)
    outputs = model.tokenizer.batch_decode(generated, skip_special_tokens=True)
    n = len(texts)
    return {
        "ae_loss": loss,
        "bleu1": sum(bleu1(t, o) for t, o in zip(texts, outputs)) / n,
        "exact_match": sum(exact_match(t, o) for t, o in zip(texts, outputs)) / n,
        "positional_match": sum(positional_match(r.tolist(), g) for r, g in zip(rows, generated)) / n,
        "compression_rate": sum(r.numel() for r in rows) / int(memory.num_slots.sum()),
        "outputs": outputs,
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a.startswith("--config_path") for a in argv):
        argv = ["--config_path", str(DEFAULT_CONFIG), *argv]
    config = config_from_cli(argv, description=__doc__)
    if config.model.model_type != "icae":
        raise ConfigError(["model_type: the round trip compresses; set model_type: icae"], "roundtrip config")
    config.require("roundtrip", "output_dir")
    torch.manual_seed(config.seed)
    model = build_model(config)
    k, rate = config.model.fixed_mem_size, config.model.mean_compression_rate
    texts = functions_by_length(model.tokenizer, k * rate // 2, k * rate, config.data.max_train_samples or 8)
    max_new = config.inference.max_out_length

    before = evaluate(model, texts, max_new)
    rows = [r.tolist() for r in model.tokenize(texts)]
    args = config.training_arguments()
    trainer = ICAETrainer(
        model=model.train(),
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": rows}),
        data_collator=AutoencodingCollator(model.tokenizer.pad_token_id),
        icae_config=config,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    after = evaluate(model, texts, max_new)

    checkpoint = Path(args.output_dir) / "final"
    model.save_pretrained(checkpoint, config)
    reloaded = ICAE.from_pretrained(checkpoint)
    reloaded_outputs = evaluate(reloaded, texts, max_new)["outputs"]

    print(f"\nICAE round trip on {config.model.model_name_or_path}: {len(texts)} functions, "
          f"{before['compression_rate']:.1f} tokens per slot, {args.max_steps} steps in {train_seconds:.0f} s")
    print(f"{'metric':<16}{'before':>10}{'after':>10}")
    for key in ("ae_loss", "bleu1", "exact_match", "positional_match"):
        print(f"{key:<16}{before[key]:>10.3f}{after[key]:>10.3f}")
    print("\noriginal:\n" + texts[0] + "\nreconstructed from memory slots:\n" + after["outputs"][0])
    print(f"checkpoint {checkpoint} reloads to identical reconstructions: {reloaded_outputs == after['outputs']}")

    result = {
        "config": config.to_dict(),
        "num_texts": len(texts),
        "train_seconds": train_seconds,
        "before": {k: v for k, v in before.items() if k != "outputs"},
        "after": {k: v for k, v in after.items() if k != "outputs"},
        "reload_identical": reloaded_outputs == after["outputs"],
        "examples": [{"original": t, "before": b, "after": a} for t, b, a in zip(texts, before["outputs"], after["outputs"])],
    }
    path = free_path(results_dir(config), f"roundtrip_{Path(config.model.model_name_or_path).name}")
    atomic_write_json(path, result)
    print(f"metrics: {path}")
    return result


if __name__ == "__main__":
    entry(main)
