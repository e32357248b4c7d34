"""Train the shipped pretrained compressors: ``tiny-icae-4x`` / ``tiny-icae-8x`` and the single-segment ones they
start from, ``tiny-icae-4x-segment`` / ``tiny-icae-8x-segment``.

    python -m icae.scripts.build_compressor --rate 4        # one run, about 2 h on 2 CPU cores -> tiny-icae-4x-segment
    python -m icae.scripts.build_compressor --rate 4 --config icae/configs/compressor_long_4x.yaml   # -> tiny-icae-4x
    python -m icae.scripts.build_compressor --rate 4 max_steps=200 --out /tmp/try   # any key of the config

The single-segment recipe is ``icae/configs/compressor_tiny_<rate>x.yaml`` (the one that broke the frozen decoder's
plateau, see docs/fidelity.md): the shipped ``tiny-qwen2-lm`` base, a LoRA encoder and a LoRA decoder adapter
(``freeze_decoder: false``), position identifiers, k = 8 slots per segment, the AE objective with a 0.1 share of LM
(``lambda``), lr 2e-3, one segment per sample. It trains on the base LM's corpus (standard-library packages, tests
and modules a-m, never the RepoQA/trajectory packages) and evaluates on modules n-z, which neither the base nor the
compressor ever reads.

The long-memory recipe ``icae/configs/compressor_long_<rate>x.yaml`` goes on from the single-segment compressor
through a curriculum of multi-segment contexts (``curriculum_lengths``: 128 to 1,024 tokens), each decoded whole from
all its slots, with generated tool outputs in the mix (``python -m icae.scripts.write_tool_outputs``, run by the build
when the file is missing): see :mod:`icae.training.curriculum` and docs/fidelity.md.

Steps: write the corpora -> prepare the samples -> pretrain (checkpoints every save_steps: an interrupted build
resumes; a curriculum resumes at its first unfinished stage) -> copy the final weights into the asset directory with
the training record (``TRAINING.md``, ``training_log.json``, ``loss.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from icae.config import ConfigError, load_config
from icae.data.corpus import ensure_build_corpora
from icae.data.tool_outputs import TRAIN_RECORDS, ensure_extra_sources
from icae.data.prepare_data_for_pretraining import prepare, sample_lengths
from icae.models.loading import ASSETS
from icae.errors import entry
from icae.training import curriculum
from icae.training.pretraining import build_trainer
from icae.training.trainer import resolve_resume
from icae.training.record import TrainingClock, ship, write_record
from icae.utils.io import atomic_write_json, temp_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGE_LOG = "stage_log.json"


def check_stage_data(config, stage: curriculum.Stage) -> None:
    """Refuse a stage's data prepared with another mix than the config now asks (a stage's data is prepared once and
    reused by every later leg: an edited share or length would otherwise train on the old data without a word).
    Data prepared before a key was recorded is taken as it is."""
    from icae.data.split_paths import INFO_NAME

    info_path = Path(config.pretrain.train_output_file) / INFO_NAME
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    pre = config.pretrain
    wanted = {"context_length": sample_lengths(config)[0], "segment_sample_ratio": pre.segment_sample_ratio,
              "extra_dataset_share": pre.extra_dataset_share if pre.extra_dataset_repos else None}
    problems = [f"stage {stage.index}'s data ({config.pretrain.train_output_file}) was prepared with {key} "
                f"{info[key]}, the config asks {value}" for key, value in wanted.items() if key in info and info[key] != value]
    if problems:
        raise ConfigError(problems + [f"delete {stage.directory / 'data'} (and {stage.directory / 'run'}, to train the "
                                      "stage anew) to prepare it again, or give the stage its earlier values"],
                          "build config")


def device_name(trainer) -> str:
    """What a stage trained on, for its record: the accelerator's name, or the CPU threads torch used."""
    import torch

    device = trainer.args.device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def train_stage(config, stage: curriculum.Stage, tool_outputs: int) -> None:
    """Prepare (once), train (resuming from the stage's latest checkpoint) and save one stage's final weights, with its
    log history (each entry with ``train_seconds``, summed over the stage's legs) beside them."""
    if not Path(config.pretrain.train_output_file).is_dir():
        ensure_extra_sources(config.pretrain.extra_dataset_repos, tool_outputs, config.seed)
        prepare(config)
    check_stage_data(config, stage)
    trainer = build_trainer(config)
    clock = TrainingClock()
    trainer.add_callback(clock)
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    staging = temp_dir(stage.directory, ".final.")
    try:
        trainer.save_model(str(staging))
        seconds = clock.seconds(trainer.state)
        atomic_write_json(staging / STAGE_LOG, {"stage": stage.index, "context_length": stage.context_length,
                                                "train_seconds": round(seconds, 1), "device": device_name(trainer),
                                                "log_history": trainer.state.log_history})
        staging.rename(stage.final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="icae build-compressor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, choices=[4, 8], required=True)
    parser.add_argument("--config", default=None,
                        help="the recipe (default icae/configs/compressor_tiny_<rate>x.yaml; the long-context "
                             "curriculum: icae/configs/compressor_long_<rate>x.yaml)")
    parser.add_argument("--work", default="runs/build_compressor", help="corpora, prepared data and checkpoints")
    parser.add_argument("--out", default=None, help="the asset directory (default icae/assets/tiny-icae-<rate>x for a "
                                                    "curriculum, icae/assets/tiny-icae-<rate>x-segment for one run)")
    parser.add_argument("--tool_outputs", type=int, default=TRAIN_RECORDS,
                        help="records of generated training tool outputs, when the recipe's extra_dataset_repos names "
                             "a missing tool_outputs*.jsonl in the work directory")
    args, rest = parser.parse_known_args(argv)
    work = Path(args.work) / f"{args.rate}x"
    out = Path(args.out) if args.out else None
    corpus, held = Path(args.work) / "base_corpus.jsonl", Path(args.work) / "stdlib_n_z.jsonl"
    recipe = Path(args.config) if args.config else CONFIGS / f"compressor_tiny_{args.rate}x.yaml"
    config = load_config(recipe, [
        f"dataset_repo={corpus}", f"eval_dataset_repo={held}", f"train_output_file={work / 'data' / 'train'}",
        f"eval_output_file={work / 'data' / 'eval'}", f"output_dir={work / 'run'}", *rest])
    ensure_build_corpora(corpus, held)
    extra = [str(Path(args.work) / s) if not Path(s).is_absolute() else s for s in config.pretrain.extra_dataset_repos]
    config = config.replace(extra_dataset_repos=extra)  # relative sources live in the work directory
    stages = curriculum.plan(config, work) if config.pretrain.curriculum_lengths else None
    if stages is None:  # one run, as the single-segment compressors were built
        return build_single(config, args, rest, out or ASSETS / f"tiny-icae-{args.rate}x-segment")
    out = out or ASSETS / f"tiny-icae-{args.rate}x"
    restore, history, seconds, legs = config.model.restore_from, [], 0.0, []
    for stage in stages:
        stage_cfg = curriculum.stage_config(config, stage, restore)
        if stage.done:
            print(f"stage {stage.index} ({stage.context_length} tokens): done, in {stage.final}")
        else:
            print(f"stage {stage.index}: {stage.max_steps} steps on contexts of {stage.context_length} tokens "
                  f"({stage.context_length // (config.model.fixed_mem_size * config.model.mean_compression_rate)} "
                  f"segments), from {restore}")
            train_stage(stage_cfg, stage, args.tool_outputs)
        log = json.loads((stage.final / STAGE_LOG).read_text())
        offset = sum(s.max_steps for s in stages[: stage.index])
        history += [{**h, "step": h.get("step", 0) + offset, "stage": stage.index,
                     "context_length": stage.context_length} for h in log["log_history"]]
        seconds += log["train_seconds"]
        legs.append({"stage": stage.index, "context_length": stage.context_length, "steps": stage.max_steps,
                     "batch_size": stage.batch_size, "train_seconds": log["train_seconds"],
                     "device": log.get("device"),
                     "segment_sample_ratio": stage_cfg.pretrain.segment_sample_ratio,
                     "extra_dataset_share": stage_cfg.pretrain.extra_dataset_share
                     if stage_cfg.pretrain.extra_dataset_repos else None})
        restore = str(stage.final)
    command = (f"python -m icae.scripts.build_compressor --rate {args.rate}" + (f" --config {args.config}" if
               args.config else "") + (" " + " ".join(rest) if rest else ""))
    return ship(Path(restore), out, lambda staging: write_record(staging, config, args.rate, seconds, history, command,
                                                                 legs), skip=(STAGE_LOG,))


def build_single(config, args, rest, out: Path) -> Path:
    """The single-run build (no curriculum): one pretraining run, resumed from its checkpoints."""
    if not Path(config.pretrain.train_output_file).is_dir():
        ensure_extra_sources(config.pretrain.extra_dataset_repos, args.tool_outputs, config.seed)
        prepare(config)
    trainer = build_trainer(config)
    clock = TrainingClock()
    trainer.add_callback(clock)
    trainer.train(resume_from_checkpoint=resolve_resume(config, trainer.args.output_dir))
    seconds = clock.seconds(trainer.state)  # every leg of a resumed build
    final = temp_dir(Path(config.training.output_dir), ".final.")
    try:
        trainer.save_model(str(final))
        command = f"python -m icae.scripts.build_compressor --rate {args.rate}" + (" " + " ".join(rest) if rest else "")
        return ship(final, out, lambda staging: write_record(staging, config, args.rate, seconds,
                                                             trainer.state.log_history, command))
    finally:
        shutil.rmtree(final, ignore_errors=True)


if __name__ == "__main__":
    entry(main)
