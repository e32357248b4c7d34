"""SIGKILL at random moments, 20 times in a row (while starting, training, saving a checkpoint, rotating, evaluating,
saving the final weights, and after the last checkpoint), each run started again in the same output_dir: the final
weights and metrics equal an uninterrupted run's bit for bit, and no run trains past max_steps (#26.2)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_pretraining import args_for, prepared  # noqa: F401 - the module's prepared corpus

ROOT = Path(__file__).resolve().parents[2]
STEPS, SAVE = 40, 4  # about as long training as starting a process takes
KILLS = 20


def _start(prepared, out, metrics):  # noqa: F811
    argv = args_for(prepared, out, max_steps=STEPS, save_steps=SAVE, save_total_limit=2, output_path=str(metrics))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    return subprocess.Popen([sys.executable, "-m", "icae.scripts.pretrain", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(process) -> None:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def _steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def _results(metrics: Path) -> list[dict]:
    """Every metrics file the runs wrote, oldest name first (a run never replaces another's)."""
    files = sorted(metrics.glob("pretrain_*.json"), key=lambda p: (len(p.name), p.name))
    return [json.loads(p.read_text()) for p in files]


@pytest.mark.slow
def test_twenty_random_kills_resume_to_the_uninterrupted_run_bit_for_bit(prepared, tmp_path):  # noqa: F811
    straight, straight_metrics = tmp_path / "straight", tmp_path / "straight_metrics"
    started = time.monotonic()
    _finish(_start(prepared, straight, straight_metrics))
    full = time.monotonic() - started

    out, metrics = tmp_path / "killed", tmp_path / "killed_metrics"
    rng = random.Random(26)
    kills, after_last, upper = 0, 0, full
    while kills < KILLS:
        process, began = _start(prepared, out, metrics), time.monotonic()
        try:
            _, err = process.communicate(timeout=rng.uniform(0.1, 1.0) * upper)
            assert process.returncode == 0, err[-3000:]
            upper = time.monotonic() - began  # it finished first: a run started again takes this long
        except subprocess.TimeoutExpired:
            last_saved = STEPS in _steps(out)
            process.send_signal(signal.SIGKILL)
            process.communicate()
            kills += 1
            after_last += last_saved
        assert all(step <= STEPS for step in _steps(out)), _steps(out)  # never a step past max_steps
    _finish(_start(prepared, out, metrics))

    assert after_last >= 1, "no kill landed after the last checkpoint: widen the delays"
    assert _steps(out) == [STEPS - SAVE, STEPS]
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(out / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    (expected,), runs = _results(straight_metrics), _results(metrics)
    for result in runs:  # every run that finished: the same evaluation, the same per-step losses, bit for bit
        assert result["eval"] == expected["eval"]
        losses = {h["step"]: h["loss"] for h in result["log_history"] if "loss" in h}
        assert losses == {h["step"]: h["loss"] for h in expected["log_history"] if "loss" in h}
