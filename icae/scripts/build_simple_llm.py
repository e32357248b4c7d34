"""Train the equal-compute control, ``tiny-llm-pretrained``: SimpleLLM's LoRA continued-pretrained as a language model
on the compressors' text, for as many tokens as ``tiny-icae-4x`` read.

    python -m icae.scripts.build_simple_llm                       # -> icae/assets/tiny-llm-pretrained
    python -m icae.scripts.build_simple_llm --tokens 200000 --work /tmp/try --out /tmp/try/asset   # a try

Why: downstream, ICAE starts from ``tiny-icae-4x``, whose decoder adapter was pretrained for hours on code and tool
outputs, while SimpleLLM's LoRA started from nothing, so ICAE-against-SimpleLLM measured pretraining as much as
compression. This gives SimpleLLM the same pretraining budget: a LoRA of the same size on the same modules of the same
frozen base (``icae/configs/pretrain_llm_tiny.yaml``), the next-token objective on ``build_compressor``'s text (the
same corpus files, in the same work directory, with the generated tool outputs at the same share), for the tokens
the compressor's encoder read over its whole training: its single-segment run and every curriculum stage, from their
records (:func:`compressor_tokens`). Fine-tunes start from it with ``restore_from=tiny-llm-pretrained``
(docs/equal_compute.md).

Steps: write the corpora (once, shared with build_compressor) -> prepare windows -> train (checkpoints; an interrupted
build resumes) -> copy the final LoRA into the asset directory with its record (``TRAINING.md``,
``training_log.json``): held-out perplexity on modules n-z before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from icae.config import load_config
from icae.data.corpus import ensure_build_corpora
from icae.data.tool_outputs import ensure_extra_sources
from icae.data.prepare_data_for_pretraining import load_pretraining, prepare, sample_lengths
from icae.errors import UserError, entry
from icae.models import build_model
from icae.models.loading import ASSETS, resolve_checkpoint
from icae.training.lm import LMCollator, LMTrainer
from icae.training.record import TrainingClock, ship
from icae.training.trainer import resolve_resume
from icae.utils.io import atomic_write_json, atomic_write_text

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain_llm_tiny.yaml"
MATCHED = ("tiny-icae-4x-segment", "tiny-icae-4x")  # the compressor's single-segment run, then its curriculum


def compressor_tokens(checkpoints=MATCHED) -> int:
    """Context tokens the compressor's encoder read in training, nominally (every sample counted at its full window:
    a document's last, shorter windows make it an upper bound), summed over the records (``training_log.json``) of
    ``checkpoints``: a single run's steps x batch x segment, and each curriculum stage's steps x batch x its mean
    sample (one-segment windows are ``segment_sample_ratio`` of the samples, the rest ``context_length`` tokens)."""
    total = 0
    for name in checkpoints:
        path = resolve_checkpoint(name) / "training_log.json"
        if not path.is_file():
            raise UserError(f"{name} has no training record ({path}): pass --tokens")
        log = json.loads(path.read_text(encoding="utf-8"))
        c = log["config"]
        segment = c["fixed_mem_size"] * c["mean_compression_rate"]
        for leg in log.get("legs") or [{"steps": c["max_steps"], "batch_size": c["per_device_train_batch_size"],
                                         "context_length": segment, "segment_sample_ratio": 0.0}]:
            ratio = leg.get("segment_sample_ratio") or 0.0
            total += round(leg["steps"] * leg["batch_size"] * ((1 - ratio) * leg["context_length"] + ratio * segment))
    return total


def write_llm_record(out: Path, config, tokens: int, budget_from: str, seconds: float, before: float,
                     history: list[dict], command: str) -> None:
    evals = [h for h in history if "eval_loss" in h]
    after = evals[-1]["eval_loss"] if evals else float("nan")
    context, continuation = sample_lengths(config)
    t, p = config.training, config.pretrain
    atomic_write_json(out / "training_log.json", {"command": command, "tokens": tokens, "budget_from": budget_from,
                                                  "train_seconds": round(seconds, 1), "held_out_loss_before": before,
                                                  "config": config.to_dict(), "log_history": history})
    rows = "\n".join(f"| {h['step']} | {h['eval_loss']:.3f} | {math.exp(h['eval_loss']):.1f} |" for h in evals)
    atomic_write_text(out / "TRAINING.md", (
        "# Training record: tiny-llm-pretrained\n\nThe equal-compute control (docs/equal_compute.md): SimpleLLM's "
        "LoRA continued-pretrained as a language model on the compressors' text.\n\n"
        f"Rebuild: `{command}` (Python 3.11's standard library is the corpus).\n\n"
        f"- base: `{config.model.model_name_or_path}` (frozen), LoRA r={config.model.lora_r} on "
        f"{', '.join(config.model.lora_target_modules)}\n"
        f"- {t.steps} step{'s' if t.steps != 1 else ''} of {t.per_device_train_batch_size} windows of {context} + {continuation} tokens: "
        f"{t.steps * t.per_device_train_batch_size * (context + continuation):,} tokens, for a budget of {tokens:,} "
        f"({budget_from}); lr {t.get('learning_rate')} cosine; {seconds / 60:.1f} min of training on this machine\n"
        f"- text: {Path(config.data.dataset_repo).name} with {', '.join(Path(x).name for x in p.extra_dataset_repos)} "
        f"as {p.extra_dataset_share} of the tokens\n"
        "- held-out: modules n-z of the standard library (never read by the base, the compressors or this)\n\n"
        f"Held-out loss (perplexity): before training (the base alone) {before:.3f} ({math.exp(before):.1f}), after "
        f"{after:.3f} ({math.exp(after):.1f}).\n\n| step | held-out loss | perplexity |\n|---|---|---|\n{rows}\n"))


def check_run(config, out: Path, steps: int) -> None:
    """Refuse, before anything is prepared or trained, what would otherwise fail after training or load silently
    wrong: an asset path that is a file (or under one), windows prepared with other keys, and a checkpoint in
    ``output_dir`` past this budget's steps (it would be shipped under this budget's record)."""
    from transformers.trainer_utils import get_last_checkpoint

    problems = []
    blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        problems.append(f"--out {out}: {blocker} is a file; give a directory path")
    info_path = Path(config.pretrain.train_output_file) / "icae_prepare_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        context, continuation = sample_lengths(config)
        want = {"context_length": context, "continuation_length": continuation,
                "extra_dataset_share": config.pretrain.extra_dataset_share}
        differ = [f"{k} {info[k]} (asked: {v})" for k, v in want.items() if k in info and info[k] != v]
        if differ:
            problems.append(f"the windows in {info_path.parent.parent} were prepared with {', '.join(differ)}: delete "
                            "that folder to prepare them again, or pass another --work")
    run = Path(config.training.output_dir)
    last = get_last_checkpoint(str(run)) if run.is_dir() else None
    if last is not None and int(Path(last).name.split("-")[-1]) > steps:
        problems.append(f"{last} is past this budget's {steps} steps: pass another --work (or output_dir=) for a "
                        "smaller budget")
    if problems:
        raise UserError("build_simple_llm: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="icae build-simple-llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG), help="the recipe (default %(default)s)")
    parser.add_argument("--work", default="runs/build_compressor",
                        help="corpora (shared with build_compressor), prepared windows and checkpoints")
    parser.add_argument("--out", default=str(ASSETS / "tiny-llm-pretrained"), help="the asset directory")
    parser.add_argument("--tokens", type=int, default=None,
                        help="the token budget (default: what tiny-icae-4x read, from its records)")
    args, rest = parser.parse_known_args(argv)
    if args.tokens is not None and args.tokens < 1:
        raise UserError(f"--tokens must be >= 1, got {args.tokens}")
    work = Path(args.work)
    corpus, held = work / "base_corpus.jsonl", work / "stdlib_n_z.jsonl"
    config = load_config(args.config, [
        f"dataset_repo={corpus}", f"eval_dataset_repo={held}", f"train_output_file={work / 'llm' / 'data' / 'train'}",
        f"eval_output_file={work / 'llm' / 'data' / 'eval'}", f"output_dir={work / 'llm' / 'run'}", *rest])
    if config.model.model_type != "llm" or not config.model.use_lora:
        raise UserError("build_simple_llm trains a SimpleLLM's LoRA: set model_type: llm and use_lora: true")
    if any(r.lstrip("-").startswith("max_steps") for r in rest):
        raise UserError("build_simple_llm sets max_steps from the token budget: pass --tokens instead")
    extra = [str(work / s) if not Path(s).is_absolute() else s for s in config.pretrain.extra_dataset_repos]
    budget_from = "given by --tokens" if args.tokens else f"what {' + '.join(MATCHED)} read, from their records"
    tokens = args.tokens or compressor_tokens()
    context, continuation = sample_lengths(config)
    steps = max(1, round(tokens / (config.training.per_device_train_batch_size * (context + continuation))))
    config = config.replace(extra_dataset_repos=extra, max_steps=steps)
    check_run(config, Path(args.out), steps)
    ensure_extra_sources(extra, seed=config.seed)  # the same text as build_compressor's, written once for both
    ensure_build_corpora(corpus, held)
    if not Path(config.pretrain.train_output_file).is_dir():
        prepare(config)
    split = load_pretraining(config)
    model = build_model(config)
    trainer = LMTrainer(model=model.train(), args=config.training_arguments(remove_unused_columns=False),
                        train_dataset=split.train, eval_dataset=split.test,
                        data_collator=LMCollator(model.tokenizer.pad_token_id), icae_config=config)
    before = trainer.evaluate()["eval_loss"]  # LoRA B starts at zero: the base model alone
    clock = TrainingClock()
    trainer.add_callback(clock)
    print(f"{steps} step{'s' if steps != 1 else ''} of {config.training.per_device_train_batch_size} x "
          f"{context + continuation} tokens (budget {tokens:,} tokens)")
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    seconds = clock.seconds(trainer.state)
    final = Path(config.training.output_dir) / "final"
    shutil.rmtree(final, ignore_errors=True)
    trainer.save_model(str(final))
    command = ("python -m icae.scripts.build_simple_llm" + (f" --config {args.config}" if args.config != str(CONFIG)
               else "") + (f" --tokens {args.tokens}" if args.tokens else "") + (" " + " ".join(rest) if rest else ""))
    return ship(final, Path(args.out), lambda staging: write_llm_record(
        staging, config, tokens, budget_from, seconds, before, trainer.state.log_history, command))


if __name__ == "__main__":
    entry(main)
