"""The shipped compressors' build, on a few steps: an asset that loads by path, its training record, and a resumed build
whose recorded wall-clock counts every leg."""

import json
from pathlib import Path

import pytest

from icae.config import ConfigError, load_config
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


def test_a_curriculum_build_records_each_stage_with_its_segment_share(tmp_path):
    work, out = tmp_path / "work", tmp_path / "new" / "asset"  # an --out whose folder does not exist yet
    build_compressor.main(["--rate", "4", "--work", str(work), "--out", str(out), "max_steps=2", *FEW,
                           "curriculum_lengths=[64,32]", "curriculum_steps=[2,1]", "curriculum_batch_sizes=[2,2]",
                           "curriculum_segment_sample_ratios=[0.0,0.5]", "segment_sample_ratio=0.25",
                           "curriculum_mix_from=0", "min_len=16", "restore_from=null"])
    log = json.loads((out / "training_log.json").read_text())
    assert [(leg["context_length"], leg["steps"], leg["segment_sample_ratio"]) for leg in log["legs"]] == [
        (64, 2, 0.0), (32, 1, 0.5)]
    assert {leg["device"].split(" (")[0] for leg in log["legs"]} == {"cpu"}  # what each stage trained on
    assert [h["step"] for h in log["log_history"] if "loss" in h] == [1, 2, 3]  # stage 1's step counts on from 2
    record = (out / "TRAINING.md").read_text()
    assert "stage 1: 1 steps of 2 contexts of 32 tokens, one-segment windows 0.5 of the samples" in record
    assert "each stage's share below" in record
    assert (work / "4x" / "stage1-32" / "final").is_dir()


def test_a_stage_refuses_data_prepared_with_another_mix(tmp_path):
    from icae.data.split_paths import INFO_NAME
    from icae.training import curriculum

    cfg = load_config(None, {"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_mix_from": 1,
                             "curriculum_extra_dataset_shares": [0.3, 0.1], "curriculum_segment_sample_ratios": [0.0, 0.5],
                             "extra_dataset_repos": ["more.jsonl"], "restore_from": None})
    stage = curriculum.plan(cfg, tmp_path)[1]
    stage_cfg = curriculum.stage_config(cfg, stage, None)
    data = Path(stage_cfg.pretrain.train_output_file)
    data.mkdir(parents=True)
    info = {"context_length": 128, "segment_sample_ratio": 0.5, "extra_dataset_share": 0.1}
    (data / INFO_NAME).write_text(json.dumps(info))
    build_compressor.check_stage_data(stage_cfg, stage)  # prepared as asked: taken
    (data / INFO_NAME).write_text(json.dumps({**info, "extra_dataset_share": 0.3, "segment_sample_ratio": 0.2}))
    with pytest.raises(ConfigError) as refused:
        build_compressor.check_stage_data(stage_cfg, stage)
    assert "prepared with extra_dataset_share 0.3, the config asks 0.1" in str(refused.value)
    assert "prepared with segment_sample_ratio 0.2, the config asks 0.5" in str(refused.value)
    assert f"delete {tmp_path / 'stage1-128' / 'data'}" in str(refused.value)
    (data / INFO_NAME).write_text(json.dumps({"context_length": 128}))  # prepared before the mix was recorded
    build_compressor.check_stage_data(stage_cfg, stage)
