"""The shipped compressors' build, on a few steps: an asset that loads by path, its training record, and a resumed build
whose recorded wall-clock counts every leg."""

import json

from icae.models import ICAE, load_checkpoint
from icae.scripts import build_compressor
from tests.conftest import png_size

FEW = ["eval_steps=2", "save_steps=2", "token_num=4000", "eval_size=4", "eval_ae_num_samples=4",
       "per_device_train_batch_size=2", "per_device_eval_batch_size=4", "logging_steps=1", "lora_r=4", "lora_alpha=8"]


def test_a_build_writes_a_loadable_asset_and_a_resumed_build_counts_every_leg(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "asset"
    build_compressor.main(["--rate", "8", "--work", str(work), "--out", str(out), "max_steps=4", *FEW])
    first = json.loads((out / "training_log.json").read_text())
    model = load_checkpoint(str(out), train=False)
    assert isinstance(model, ICAE) and model.args.mean_compression_rate == 8 and model.has_decoder_adapter
    record = (out / "TRAINING.md").read_text()
    assert "| 2 |" in record and "| 4 |" in record  # an evaluation row per eval_steps
    assert "build_compressor --rate 8" in record and png_size(out / "loss.png")[0] > 0
    first_leg = [h["train_seconds"] for h in first["log_history"] if "loss" in h]
    assert len(first_leg) == 4 and first_leg == sorted(first_leg)

    # A second run on the same work directory resumes from its step-4 checkpoint and trains 2 steps more.
    build_compressor.main(["--rate", "8", "--work", str(work), "--out", str(out), "max_steps=6", *FEW])
    assert "replacing the existing" in capsys.readouterr().out
    second = json.loads((out / "training_log.json").read_text())
    steps = [h["step"] for h in second["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]
    carried = [h["train_seconds"] for h in second["log_history"] if "loss" in h]
    assert carried[:4] == first_leg  # the first leg's clock, read back from the checkpoint
    assert first_leg[-1] > 0 and carried[4] >= first_leg[-1]  # not restarted from zero
    assert second["train_seconds"] >= carried[-1]
