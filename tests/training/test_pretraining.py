import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from icae.config import ConfigError, load_config
from icae.data.prepare_data_for_pretraining import prepare
from icae.scripts import pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small code corpus prepared once: 16-token contexts (k=4, rate 4) + 8-token continuations."""
    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(10):
        corpus.joinpath(f"m{i}.py").write_text(
            "\n".join(f"def g{i}_{j}(value):\n    return value + {i * j}\n" for j in range(8)))
    cfg = load_config(None, {"dataset_repo": str(corpus), "train_output_file": str(root / "train"),
                             "eval_output_file": str(root / "eval"), "fixed_mem_size": 4, "min_tokens_for_lm": 8,
                             "min_len": 8, "eval_size": 8, "seed": 0})
    prepare(cfg, show_progress=False)
    return root


def args_for(prepared, out, family="tiny-qwen2", **extra):
    values = {
        "model_name_or_path": family, "fixed_mem_size": 4, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "train_output_file": str(prepared / "train"), "eval_output_file": str(prepared / "eval"),
        "output_dir": str(out), "output_path": str(out / "metrics"), "max_steps": 6, "save_steps": 2,
        "logging_steps": 1, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
        "learning_rate": 5e-3, "lr_scheduler_type": "constant", "lm_ratio": 0.5, "min_tokens_for_lm": 8,
        "leave_tokens_for_lm": 2, "eval_ae_num_samples": 2, "max_eval_samples": 4, "report_to": "none",
        "use_cpu": True, "disable_tqdm": True, "seed": 3, "dataloader_num_workers": 0,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]


def losses(log_history):
    return {h["step"]: h["loss"] for h in log_history if "loss" in h}


def test_pretraining_lowers_the_loss_and_logs_both_objectives(prepared, tmp_path, family):
    metrics = pretrain.main(args_for(prepared, tmp_path, family, max_steps=25, max_train_samples=8,
                                     per_device_train_batch_size=8, save_strategy="no"))
    written = json.loads((tmp_path / "metrics" / f"pretrain_{family}.json").read_text())
    history = written["log_history"]
    steps = losses(history)
    assert steps[25] < 0.75 * steps[1]
    logged = [h for h in history if "loss" in h]
    assert all("ae_loss" in h and "lm_loss" in h and h["tokens_per_second"] > 0 for h in logged)
    assert {"eval_ae_loss", "eval_lm_loss", "eval_ae_bleu1", "eval_ae_exact_match"} <= set(metrics)
    assert written["config"]["model_name_or_path"] == family
    saved = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert "memory_embeddings" in saved and not any("base_layer" in k for k in saved)


def test_a_kill_during_checkpoint_rotation_leaves_the_newest_checkpoint_loadable(prepared, tmp_path):
    """SIGKILL while the oldest checkpoint is half deleted (save_total_limit 1): the newest is complete, it loads, and
    the run resumes from it to the end."""
    out = tmp_path / "rot"
    code = (
        "import os, shutil, signal, sys\n"
        "import icae.training.trainer as t\n"
        "real = t.rotate_checkpoints\n"
        "def rotate(run_dir, limit, best, use_mtime=False):\n"
        "    old = sorted(p for p in os.listdir(run_dir) if p.startswith('checkpoint-'))\n"
        "    if len(old) > 1:  # the second save: delete one file of the oldest, then die\n"
        "        os.remove(os.path.join(run_dir, old[0], 'model.safetensors'))\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(run_dir, limit, best, use_mtime=use_mtime)\n"
        "t.rotate_checkpoints = rotate\n"
        "from icae.scripts.pretrain import main\n"
        "main(sys.argv[1:])\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *args_for(prepared, out, save_total_limit=1)], cwd=ROOT,
                         env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert not (out / "checkpoint-2" / "model.safetensors").exists()  # the half-deleted one
    from icae import ICAE

    ICAE.from_pretrained(out / "checkpoint-4").load_checkpoint(out / "checkpoint-4")  # the newest is complete
    pretrain.main(args_for(prepared, out, save_total_limit=1))  # resumes from checkpoint-4 (found in output_dir)
    assert (out / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]


def test_resume_after_sigkill_matches_an_uninterrupted_run(prepared, tmp_path):
    straight = tmp_path / "straight"
    pretrain.main(args_for(prepared, straight))
    killed = tmp_path / "killed"
    code = (
        "import os, signal, sys\n"
        "from transformers import TrainerCallback\n"
        "from icae.scripts.pretrain import main\n"
        "class Kill(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kw):\n"
        "        if state.global_step == 5:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "main(sys.argv[1:], callbacks=[Kill()])\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *args_for(prepared, killed)], cwd=ROOT, env=os.environ.copy(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (killed / "final").exists()
    pretrain.main(args_for(prepared, killed, resume_from_checkpoint=True))
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    curve_a = losses(json.loads((straight / "metrics" / "pretrain_tiny-qwen2.json").read_text())["log_history"])
    curve_b = losses(json.loads((killed / "metrics" / "pretrain_tiny-qwen2.json").read_text())["log_history"])
    assert curve_a.keys() == curve_b.keys() == set(range(1, 7))
    for step in curve_a:
        assert curve_b[step] == pytest.approx(curve_a[step], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_see_different_data_and_end_with_identical_weights(prepared, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "icae/configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           str(ROOT / "tests/training/ddp_probe.py"), str(out),
           *args_for(prepared, out / "run", max_steps=4, save_strategy="no", per_device_train_batch_size=2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert seen0 and seen1 and not seen0 & seen1  # each rank trained on its own shard of the data
    assert ranks[0]["after"] == ranks[1]["after"]  # gradients were averaged: identical trained tensors
    assert ranks[0]["after"] != ranks[0]["before"]


def test_pretraining_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="prepare_data_for_pretraining"):
        pretrain.main([f"train_output_file={tmp_path}/nope", f"eval_output_file={tmp_path}/nope2",
                       f"output_dir={tmp_path}/o", "use_cpu=true"])
    with pytest.raises(ConfigError, match="model_type: icae"):
        pretrain.main(["model_type=llm", f"output_dir={tmp_path}/o", "use_cpu=true"])


def test_the_pretraining_collator_follows_loss_per_sample():
    from icae.config import load_config
    from icae.training.pretraining import make_collator
    from tests.conftest import make_model

    layout = make_model().layout
    assert make_collator(load_config(None, {"loss_per_sample": True}), layout).loss_per_sample is True
    assert make_collator(load_config(None, {}), layout).loss_per_sample is False  # by token, as the original
