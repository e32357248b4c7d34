"""output_dir as the original tool treats it: a run with checkpoints resumes; files without a checkpoint are refused
unless overwrite_output_dir; a checkpoint of another recipe is refused, naming each key."""

import pytest

from icae.config import ConfigError, load_config
from icae.training.trainer import resolve_resume
from tests.conftest import make_model


def config(tmp_path, **extra):
    return load_config(None, {"model_name_or_path": "tiny-qwen2", "fixed_mem_size": 4, "lora_r": 8, "lora_alpha": 16,
                              "lora_dropout": 0.0, "output_dir": str(tmp_path), **extra})


def test_an_empty_or_new_output_dir_starts_fresh(tmp_path):
    assert resolve_resume(config(tmp_path / "new"), str(tmp_path / "new")) is None
    (tmp_path / "empty").mkdir()
    assert resolve_resume(config(tmp_path / "empty"), str(tmp_path / "empty")) is None


def test_files_without_a_checkpoint_are_refused_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="overwrite_output_dir: true"):
        resolve_resume(config(tmp_path), str(tmp_path))
    assert resolve_resume(config(tmp_path, overwrite_output_dir=True), str(tmp_path)) is None


def test_a_checkpoint_resumes_and_a_changed_recipe_is_refused(tmp_path, capsys):
    cfg = config(tmp_path)
    make_model(fixed_mem_size=4, lora_r=8).save_pretrained(tmp_path / "checkpoint-3", cfg)
    assert resolve_resume(cfg, str(tmp_path)).endswith("checkpoint-3")  # as the original: the latest one
    assert resolve_resume(config(tmp_path, overwrite_output_dir=True), str(tmp_path)) is None
    harmless = config(tmp_path, logging_steps=7, resume_from_checkpoint=True)
    assert resolve_resume(harmless, str(tmp_path)).endswith("checkpoint-3")
    assert "logging_steps: None -> 7" in capsys.readouterr().out  # listed, allowed
    with pytest.raises(ConfigError) as e:
        resolve_resume(config(tmp_path, lora_alpha=64, mean_compression_rate=2, resume_from_checkpoint=True),
                       str(tmp_path))
    assert len(e.value.problems) == 2
    assert "lora_alpha: checkpoint" in str(e.value) and "trained with 16, got 64" in str(e.value)
    assert "mean_compression_rate" in str(e.value)
