"""Curriculum legs on a lent GPU, several side by side (how `tiny-icae-8x`'s stage 10 was trained; docs/fidelity.md).

Each job is a one-stage curriculum (``build_compressor``) that starts from a shipped compressor. Phase 1 prepares each
job's stage data and times 30 steps with every job running (so the contention is in the timing); phase 2 trains each
job for the steps that fit before the deadline, on phase 1's data, and writes each final stage (or, for a job stopped
at the deadline, its latest checkpoint) as ``$OUT/<job>.tar``. A stage that comes back is shipped by copying it to
``runs/build_compressor/<rate>x/stage<i>-<length>/final`` (its ``stage_log.json`` renumbered to ``i``), adding the stage
to the recipe and running ``build_compressor`` here: every stage is then done and the asset is written with its record.

Prepared here, from the repository root (the machine reaches no registry; the wheels are the pins it lacks):

    echo /.gpu/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude; mkdir -p .gpu
    tar cJf .gpu/corpus.tar.xz -C runs/build_compressor base_corpus.jsonl stdlib_n_z.jsonl tool_outputs_train.jsonl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform any -d .whl transformers==5.24.0 peft==0.21.2 datasets==5.2.0 \
        dill==0.4.1 multiprocess==0.70.19 nltk==3.10.4
    python scripts/device/curriculum_legs.py 300 --cpu --steps 40      # the same path here, on one small job

Run there (carry .whl and .gpu):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 scripts/device/curriculum_legs.py 550

Usage: curriculum_legs.py SECONDS [--cpu --steps N]. SECONDS is the whole budget of the call.
"""
import json, os, subprocess, sys, tarfile, time
from pathlib import Path

START = time.time()
BUDGET = float(sys.argv[1])
CPU = "--cpu" in sys.argv
FIXED = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else None
OUT = Path(os.environ.get("OUT", "/tmp/gpu_out"))
ROOT = Path(os.environ.get("GPU_WORK", "/tmp/gw"))
CORPUS = ROOT / "corpus"
# name, rate, restore, length, batch, one-segment ratio, tool-output share, lr: the four jobs run on 2026-11-30, from the
# compressors shipped then (8x: stage 9; j8c became tiny-icae-8x's stage 10; docs/fidelity.md has each one's result)
JOBS = [
    ("j8a", 8, "tiny-icae-8x", 1024, 16, 0.3, 0.3, 1e-3),
    ("j8b", 8, "tiny-icae-8x", 1024, 16, 0.5, 0.3, 2e-3),
    ("j8c", 8, "tiny-icae-8x", 2048, 8, 0.3, 0.3, 1e-3),
    ("j4a", 4, "tiny-icae-4x", 2048, 8, 0.6, 0.1, 2e-3),
]
if CPU:  # the local dry run: the same path on a small job
    JOBS = [("j8a", 8, "tiny-icae-8x", 128, 2, 0.3, 0.3, 1e-3)]


def log(*a):
    print(f"[{time.time() - START:6.1f}s]", *a, flush=True)


def command(job, work, out, steps, extra):
    name, rate, restore, length, batch, ratio, share, lr = job
    return [sys.executable, "-m", "icae.scripts.build_compressor", "--rate", str(rate),
            "--config", f"icae/configs/compressor_long_{rate}x.yaml", "--work", str(work), "--out", str(out),
            f"restore_from={restore}", f"curriculum_lengths=[{length}]", f"curriculum_steps=[{steps}]",
            f"curriculum_batch_sizes=[{batch}]", f"curriculum_segment_sample_ratios=[{ratio}]",
            f"curriculum_extra_dataset_shares=[{share}]", "curriculum_mix_from=0", f"learning_rate={lr}",
            f"use_cpu={'true' if CPU else 'false'}", "per_device_eval_batch_size=32", *extra]


def work_dir(phase, job):
    d = ROOT / phase / job[0]
    d.mkdir(parents=True, exist_ok=True)
    for f in CORPUS.iterdir():
        if not (d / f.name).exists():
            (d / f.name).symlink_to(f)
    return d


def run_all(phase, steps_of, extra_of, deadline=None):
    procs = {}
    for job in JOBS:
        w = work_dir(phase, job)
        logf = open((OUT if phase == "p2" else ROOT) / f"{phase}_{job[0]}.log", "w")
        cmd = command(job, w, ROOT / f"out_{phase}" / job[0], steps_of(job), extra_of(job))
        procs[job[0]] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                          env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1" if CPU else "3"}), logf)
    for name, (p, f) in procs.items():
        try:
            p.wait(timeout=None if deadline is None else max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            log(phase, name, "past the deadline: stopped (its latest checkpoint is kept)")
            p.kill()
            p.wait()
        f.close()
        log(phase, name, "rc", p.returncode)
        if p.returncode:
            print(Path(f.name).read_text()[-3000:], flush=True)
    return {name: p.returncode for name, (p, f) in procs.items()}


def stage_dir(phase, job):
    return ROOT / phase / job[0] / f"{job[1]}x" / f"stage0-{job[3]}"


OUT.mkdir(parents=True, exist_ok=True)
CORPUS.mkdir(parents=True, exist_ok=True)
with tarfile.open(os.environ.get("CORPUS_TAR", ".gpu/corpus.tar.xz")) as t:
    t.extractall(CORPUS)
log("corpus unpacked")
if not CPU:
    import torch
    log("torch", torch.__version__, torch.cuda.get_device_name(0))
rc = run_all("p1", lambda j: 30, lambda j: ["logging_steps=10", "eval_strategy=no", "save_steps=1000"])
speed = {}
for job in JOBS:
    if rc[job[0]]:
        continue
    hist = json.loads((stage_dir("p1", job) / "final" / "stage_log.json").read_text())["log_history"]
    t = {h["step"]: h["train_seconds"] for h in hist if "train_seconds" in h and "loss" in h}
    speed[job[0]] = (t[30] - t[10]) / 20
log("seconds per step", speed)
if not speed:
    sys.exit("every phase-1 job failed")
JOBS = [j for j in JOBS if j[0] in speed]
left = BUDGET - (time.time() - START) - 100  # model loading, the final eval, save and tar
# Phase 1's timing ran beside the other jobs' data preparation, not their training: on 2026-11-30 phase 2's steps were
# 1.6x (one 2,048-token job) to 4.8x (the 4x job) slower, and every job met the deadline; plan on half the estimate (a
# job stopped at the deadline leaves its latest checkpoint, and the same command resumes it).
steps = {j[0]: FIXED or max(100, int(left / speed[j[0]] / 2) // 100 * 100) for j in JOBS}
log("phase 2 steps", steps, "training seconds", round(left))
for job in JOBS:  # reuse phase 1's prepared data
    d = stage_dir("p2", job)
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").symlink_to(stage_dir("p1", job) / "data")
rc = run_all("p2", lambda j: steps[j[0]], lambda j: [
    f"logging_steps={max(10, steps[j[0]] // 40)}", "eval_strategy=steps", f"eval_steps={steps[j[0]]}",
    "eval_ae_num_samples=32", f"save_steps={max(50, steps[j[0]] // 4)}", "save_total_limit=1"],
    deadline=START + BUDGET - 20)
for job in JOBS:
    final = stage_dir("p2", job) / "final"
    src = final if final.is_dir() else max((stage_dir("p2", job) / "run").glob("checkpoint-*"),
                                           key=lambda p: int(p.name.split("-")[1]), default=None)
    if src is None:
        continue
    with tarfile.open(OUT / f"{job[0]}.tar", "w") as t:
        for f in src.iterdir():
            if f.is_file() and not f.name.startswith(("optimizer", "scheduler", "rng")):
                t.add(f, arcname=f"{job[0]}/{f.name}")
log("done", rc)
