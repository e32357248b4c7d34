"""CPU demo: prepare -> pretrain -> evaluate an ICAE on held-out text, with the shipped tiny language model.

    python -m icae.scripts.demo --config_path icae/configs/pretrain_tiny_qwen2.yaml      (what `make demo` runs)

The frozen decoder is ``tiny-qwen2-lm`` (2 layers, hidden 128, trained as an LM on standard-library modules a-m).
The compressor learns from modules n-z, and is evaluated on whole held-out modules of n-z. It never saw those
modules in training, and neither did the base LM. Before and after training, it reports held-out AE loss, token
accuracy, BLEU-1 and exact match at the configured compression rate. Beside them it reports the no-memory baseline,
the same decoder with the slots removed, which is what the decoder's LM prior alone achieves. A compressor that
carries information beats it. Writes the metrics JSON (``before``, ``after``, ``no_memory_*``), a loss-curve PNG
and the final checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from icae.config import config_from_cli
from icae.data.corpus import write_stdlib_corpus
from icae.data.prepare_data_for_pretraining import prepare
from icae.scripts import entry, pretrain
from icae.training import evaluate_pretraining
from icae.training.results import results_dir
from icae.utils.io import atomic_write_json
from icae.utils.plotting import pyplot, save_png

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain_tiny_qwen2.yaml"
ROWS = [("ae_loss", "AE loss", "lower"), ("ae_token_accuracy", "token accuracy", "higher"),
        ("ae_bleu1", "BLEU-1", "higher"), ("ae_exact_match", "exact match", "higher")]


def held_out_metrics(model, samples, config) -> dict:
    kwargs = dict(batch_size=32, num_generate=config.pretrain.eval_ae_num_samples,
                  leave_tokens_for_lm=config.pretrain.leave_tokens_for_lm, min_tokens_for_lm=config.pretrain.min_tokens_for_lm,
                  return_texts=True)
    with_memory = evaluate_pretraining(model, samples, **kwargs)
    without = evaluate_pretraining(model, samples, no_memory=True, **kwargs)
    return {"memory": with_memory, "no_memory": without}


def plot_losses(log_history: list[dict], path: Path, start_loss: float | None = None) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    held = [(h["step"], h["eval_ae_loss"]) for h in log_history if "eval_ae_loss" in h]
    if start_loss is not None:
        held = [(0, start_loss), *held]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="training loss")
    if held:
        ax.plot(*zip(*held), marker="o", label="held-out AE loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("ICAE pretraining on the tiny CPU model")
    ax.legend()
    save_png(fig, path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a.startswith("--config_path") for a in argv):
        argv = ["--config_path", str(DEFAULT_CONFIG), *argv]
    config = config_from_cli(argv, description=__doc__)
    started = time.perf_counter()

    corpus = Path(config.data.dataset_repo)
    if not corpus.exists():
        write_stdlib_corpus(corpus)  # standard-library modules n-z: text the shipped LM never saw
    info = prepare(config)
    trainer = pretrain.build_trainer(config)
    model = trainer.accelerator.unwrap_model(trainer.model)
    held = list(trainer.eval_dataset)
    before = held_out_metrics(model, held, config)
    train_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_started
    after = held_out_metrics(model, held, config)

    out_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(out_dir / "final"))
    k, rate = config.model.fixed_mem_size, config.model.mean_compression_rate
    slots = k * math.ceil(info["context_length"] / (k * rate))
    print(f"\nICAE on {config.model.model_name_or_path}: {info['context_length']}-token contexts -> "
          f"{slots} slots, {trainer.state.global_step} steps in "
          f"{train_seconds:.0f} s; held out: {len(held)} samples from modules never seen in training")
    print(f"{'held-out metric':<18}{'step 0':>10}{'trained':>10}{'no memory':>11}")
    for key, label, _ in ROWS:
        print(f"{label:<18}{before['memory'][key]:>10.3f}{after['memory'][key]:>10.3f}{after['no_memory'][key]:>11.3f}")
    original, reconstructed = after["memory"]["texts"][0]
    print(f"\nheld-out text:\n{original}\n\nreconstructed from {slots} memory slots at step 0:\n"
          f"{before['memory']['texts'][0][1]}\n\nreconstructed after training:\n{reconstructed}\n")

    metrics_dir = results_dir(config)
    name = Path(config.model.model_name_or_path).name
    strip = lambda m: {k: v for k, v in m.items() if k != "texts"}  # noqa: E731
    result = {
        "config": config.to_dict(),
        "data": info,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "steps": trainer.state.global_step,
        "before": strip(before["memory"]),
        "after": strip(after["memory"]),
        "no_memory_before": strip(before["no_memory"]),
        "no_memory_after": strip(after["no_memory"]),
        "examples": [{"original": o, "step_0": b[1], "trained": a[1], "no_memory": n[1]} for (o, a), b, n in
                     zip(after["memory"]["texts"][:8], before["memory"]["texts"], after["no_memory"]["texts"])],
        "log_history": trainer.state.log_history,
        "checkpoint": str(out_dir / "final"),
    }
    atomic_write_json(metrics_dir / f"demo_{name}.json", result)
    png = metrics_dir / f"demo_{name}_loss.png"
    drew = plot_losses(trainer.state.log_history, png, before["memory"]["ae_loss"])
    print(f"metrics: {metrics_dir / f'demo_{name}.json'}" + (f"\nloss curve: {png}" if drew else ""))
    print(f"total time: {result['total_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    entry(main)
