"""Train a shipped pretrained compressor from scratch: ``tiny-icae-4x`` or ``tiny-icae-8x``.

    python -m icae.scripts.build_compressor --rate 4        # about 3 h on 2 CPU cores; writes icae/assets/tiny-icae-4x
    python -m icae.scripts.build_compressor --rate 8        # tiny-icae-8x
    python -m icae.scripts.build_compressor --rate 4 max_steps=200 --out /tmp/try   # any key of the config

The recipe is ``icae/configs/compressor_tiny_<rate>x.yaml`` (the one that broke the frozen decoder's plateau, see
docs/fidelity.md): the shipped ``tiny-qwen2-lm`` base, a LoRA encoder and a LoRA decoder adapter (``freeze_decoder:
false``), position identifiers, k = 8 slots per segment, the AE objective with a 0.1 share of LM (``lambda``), lr 2e-3.
It trains on the base LM's corpus (standard-library packages, tests and modules a-m, never the RepoQA/trajectory
packages) and evaluates on modules n-z, which neither the base nor the compressor ever reads.

Steps: write both corpora -> prepare the samples -> pretrain (checkpoints every save_steps: an interrupted build
resumes) -> copy the final checkpoint into the asset directory with its training record (``TRAINING.md``,
``training_log.json``, ``loss.png``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from icae.config import load_config
from icae.data.corpus import base_corpus_files, write_corpus, write_stdlib_corpus
from icae.data.prepare_data_for_pretraining import prepare
from icae.models.loading import ASSETS
from icae.scripts import entry, pretrain
from icae.training.trainer import resolve_resume
from icae.utils.io import atomic_write_json, atomic_write_text, temp_dir
from icae.utils.plotting import pyplot, save_png

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class TrainingClock(TrainerCallback):
    """Adds ``train_seconds`` to every log entry: the wall-clock of training so far, summed over the legs of a resumed
    build (a resumed leg starts from the last value its checkpoint's log holds)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.offset = max((h.get("train_seconds", 0.0) for h in state.log_history), default=0.0)
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history:  # the entry this event just appended (``logs`` is a copy of it)
            state.log_history[-1]["train_seconds"] = round(self.offset + time.perf_counter() - self.started, 1)


def write_record(out: Path, config, rate: int, seconds: float, log_history: list[dict], command: str) -> None:
    evals = [h for h in log_history if "eval_ae_bleu1" in h]
    last = evals[-1] if evals else {}
    atomic_write_json(out / "training_log.json", {"command": command, "rate": rate, "train_seconds": round(seconds, 1),
                                                  "config": config.to_dict(), "log_history": log_history})
    rows = "\n".join(f"| {h['step']} | {h['eval_ae_loss']:.3f} | {h['eval_ae_token_accuracy']:.3f} | "
                     f"{h['eval_ae_bleu1']:.3f} | {h['eval_ae_exact_match']:.3f} |" for h in evals)
    atomic_write_text(out / "TRAINING.md", (
        f"# Training record: tiny-icae-{rate}x\n\nRebuild: `{command}` (Python 3.11's standard library is the corpus).\n\n"
        f"- base: `{config.model.model_name_or_path}` (frozen), LoRA r={config.model.lora_r} on "
        f"{', '.join(config.model.lora_target_modules)} for the encoder and the decoder adapter\n"
        f"- {config.model.fixed_mem_size} slots per segment of {config.model.fixed_mem_size * rate} tokens ({rate}x), "
        f"position identifiers {'on' if config.model.use_position_identifiers else 'off'}, "
        f"lambda {config.pretrain.lm_lambda} (AE + LM)\n"
        f"- {config.training.steps} steps of {config.training.per_device_train_batch_size} samples, lr "
        f"{config.training.get('learning_rate')} cosine; {seconds / 3600:.2f} h of training on this machine\n"
        f"- held-out: modules n-z of the standard library (never read by the base or the compressor)\n\n"
        f"| step | held-out AE loss | token accuracy | BLEU-1 (greedy) | exact match |\n|---|---|---|---|---|\n{rows}\n\n"
        f"Final: BLEU-1 {last.get('eval_ae_bleu1', float('nan')):.3f}, exact match "
        f"{last.get('eval_ae_exact_match', float('nan')):.3f}. Curve: `loss.png`.\n"))
    plt = pyplot()
    if plt is not None and evals:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
        train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
        ax1.plot(*zip(*train), label="training loss", alpha=0.6)
        ax1.plot([h["step"] for h in evals], [h["eval_ae_loss"] for h in evals], marker="o", label="held-out AE loss")
        ax1.set(xlabel="step", ylabel="cross-entropy", title="loss")
        ax2.plot([h["step"] for h in evals], [h["eval_ae_bleu1"] for h in evals], marker="o", label="BLEU-1")
        ax2.plot([h["step"] for h in evals], [h["eval_ae_exact_match"] for h in evals], marker="s", label="exact match")
        ax2.plot([h["step"] for h in evals], [h["eval_ae_token_accuracy"] for h in evals], marker="^",
                 label="token accuracy")
        ax2.set(xlabel="step", ylim=(0, 1), title="held-out reconstruction")
        for ax in (ax1, ax2):
            ax.legend(fontsize=8)
        fig.suptitle(f"tiny-icae-{rate}x")
        save_png(fig, out / "loss.png", dpi=100)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="icae build-compressor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, choices=[4, 8], required=True)
    parser.add_argument("--work", default="runs/build_compressor", help="corpora, prepared data and checkpoints")
    parser.add_argument("--out", default=None, help="the asset directory (default icae/assets/tiny-icae-<rate>x)")
    args, rest = parser.parse_known_args(argv)
    work = Path(args.work) / f"{args.rate}x"
    out = Path(args.out) if args.out else ASSETS / f"tiny-icae-{args.rate}x"
    corpus, held = Path(args.work) / "base_corpus.jsonl", Path(args.work) / "stdlib_n_z.jsonl"
    config = load_config(CONFIGS / f"compressor_tiny_{args.rate}x.yaml", [
        f"dataset_repo={corpus}", f"eval_dataset_repo={held}", f"train_output_file={work / 'data' / 'train'}",
        f"eval_output_file={work / 'data' / 'eval'}", f"output_dir={work / 'run'}", *rest])
    if not corpus.is_file():
        write_corpus(corpus, base_corpus_files("wide"))
    if not held.is_file():
        write_stdlib_corpus(held, "n", "z")
    if not Path(config.pretrain.train_output_file).is_dir():
        prepare(config)
    trainer = pretrain.build_trainer(config)
    clock = TrainingClock()
    trainer.add_callback(clock)
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    seconds = clock.offset + time.perf_counter() - clock.started  # every leg of a resumed build
    staging = temp_dir(out.parent, f".{out.name}.")
    try:
        trainer.save_model(str(staging))
        command = f"python -m icae.scripts.build_compressor --rate {args.rate}" + (" " + " ".join(rest) if rest else "")
        write_record(staging, config, args.rate, seconds, trainer.state.log_history, command)
        if out.exists():
            print(f"replacing the existing {out}")
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{out}: {trainer.state.global_step} steps, {seconds / 3600:.2f} h; record in {out / 'TRAINING.md'}")
    return out


if __name__ == "__main__":
    entry(main)
