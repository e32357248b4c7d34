"""The training record of a shipped compressor: its wall-clock over resumed legs, TRAINING.md, the log and the curve."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from icae.utils.io import atomic_write_json, atomic_write_text, temp_dir
from icae.utils.plotting import pyplot, save_png


class TrainingClock(TrainerCallback):
    """Adds ``train_seconds`` to every log entry: the wall-clock of training so far, summed over the legs of a resumed
    build (a resumed leg starts from the last value its checkpoint's log holds)."""

    def __init__(self):
        self.offset, self.started = 0.0, None  # None: no leg trained (a finished run loaded as it is)

    def on_train_begin(self, args, state, control, **kwargs):
        self.offset = max((h.get("train_seconds", 0.0) for h in state.log_history), default=0.0)
        self.started = time.perf_counter()

    def seconds(self, state) -> float:
        """The build's wall-clock of training: every leg's, this one's included; for a run that a finished checkpoint
        held (no leg trained now), the last value its log holds."""
        if self.started is None:
            return max((h.get("train_seconds", 0.0) for h in state.log_history), default=0.0)
        return self.offset + time.perf_counter() - self.started

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history:  # the entry this event just appended (``logs`` is a copy of it)
            state.log_history[-1]["train_seconds"] = round(self.offset + time.perf_counter() - self.started, 1)


def accelerated(leg: dict) -> str | None:
    """The accelerator a stage trained on (its stage log's ``device``), or None for the CPU (stage logs written before
    the device was recorded were all trained on this machine's CPU)."""
    device = leg.get("device") or "cpu"
    return None if device.startswith("cpu") else device


def write_record(out: Path, config, rate: int, seconds: float, log_history: list[dict], command: str,
                 legs: list[dict] | None = None) -> None:
    """TRAINING.md, training_log.json and loss.png of a build; ``legs``: the curriculum's stages, each with its
    context length, steps, batch size and wall-clock (log entries then carry ``stage`` and ``context_length``)."""
    evals = [h for h in log_history if "eval_ae_bleu1" in h]
    last = evals[-1] if evals else {}
    atomic_write_json(out / "training_log.json", {"command": command, "rate": rate, "train_seconds": round(seconds, 1),
                                                  "legs": legs or [], "config": config.to_dict(),
                                                  "log_history": log_history})
    rows = "\n".join(f"| {h['step']} | {h.get('context_length', '')} | {h['eval_ae_loss']:.3f} | "
                     f"{h['eval_ae_token_accuracy']:.3f} | {h['eval_ae_bleu1']:.3f} | {h['eval_ae_exact_match']:.3f} |"
                     for h in evals)
    shares = bool(config.pretrain.curriculum_extra_dataset_shares)
    stages = "".join(f"- stage {leg['stage']}: {leg['steps']} steps of {leg['batch_size']} context"
                     f"{'s' if leg['batch_size'] != 1 else ''} of "
                     f"{leg['context_length']} tokens" + (f", one-segment windows {leg['segment_sample_ratio']} of the samples"
                     if leg.get("segment_sample_ratio") is not None else "") +
                     (f", tool outputs {leg['extra_dataset_share']} of the tokens" if shares and leg.get(
                         "extra_dataset_share") is not None else "") +
                     f", {leg['train_seconds'] / 60:.1f} min" + (f" on {accelerated(leg)}" if accelerated(leg) else "")
                     + "\n" for leg in legs or [])
    steps = sum(leg["steps"] for leg in legs) if legs else config.training.steps
    pre = config.pretrain
    if legs:
        stages = (f"- starts from `{config.model.restore_from}`; from stage {pre.curriculum_mix_from} on, the training "
                  f"text adds {', '.join(Path(x).name for x in pre.extra_dataset_repos) or 'nothing'} (generated tool "
                  f"outputs, " + ("each stage's share below" if shares else f"{pre.extra_dataset_share or 'all'} of the tokens")
                  + ") and one-segment windows "
                  + ("(each stage's share below)" if pre.curriculum_segment_sample_ratios else
                     f"({pre.segment_sample_ratio} of the samples)") + "\n") + stages
    atomic_write_text(out / "TRAINING.md", (
        f"# Training record: tiny-icae-{rate}x\n\nRebuild: `{command}` (Python 3.11's standard library is the corpus).\n\n"
        f"- base: `{config.model.model_name_or_path}` (frozen), LoRA r={config.model.lora_r} on "
        f"{', '.join(config.model.lora_target_modules)} for the encoder and the decoder adapter\n"
        f"- {config.model.fixed_mem_size} slots per segment of {config.model.fixed_mem_size * rate} tokens ({rate}x), "
        f"position identifiers {'on' if config.model.use_position_identifiers else 'off'}, "
        f"lambda {config.pretrain.lm_lambda} (AE + LM)\n"
        f"- {steps} steps" + (f" in {len(legs)} curriculum stages (whole contexts of many segments, each decoded "
                              "from all its slots)" if legs else f" of {config.training.per_device_train_batch_size} "
                              "samples") + f", lr {config.training.get('learning_rate')} cosine (per stage); "
        f"{seconds / 3600:.2f} h of training " + ("in all: the stages marked with their accelerator there, the rest on "
                                                  "this machine's CPU" if any(accelerated(leg) for leg in legs or [])
                                                  else "on this machine")
        + f"\n{stages}"
        f"- held-out: modules n-z of the standard library (never read by the base or the compressor)\n\n"
        f"| step | context tokens | held-out AE loss | token accuracy | BLEU-1 (greedy, whole context) | exact match |\n"
        f"|---|---|---|---|---|---|\n{rows}\n\n"
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


def ship(final: Path, out: Path, record, skip: tuple[str, ...] = ()) -> Path:
    """Copy trained weights (the files of ``final``, but ``skip``) into the asset directory ``out`` with their record
    (``record(staging)`` writes it), swapping the directory in atomically; an existing one is replaced, said so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(out.parent, f".{out.name}.")
    try:
        for f in final.iterdir():
            if f.is_file() and f.name not in skip:
                shutil.copy2(f, staging / f.name)
        record(staging)
        if out.exists():
            print(f"replacing the existing {out}")
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{out}: record in {out / 'TRAINING.md'}")
    return out
