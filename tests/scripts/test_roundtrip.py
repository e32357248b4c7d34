import json

import pytest

from icae.scripts import roundtrip


def test_roundtrip_runs_end_to_end_and_writes_metrics(tmp_path):
    result = roundtrip.main([
        "max_steps=40", f"output_dir={tmp_path / 'run'}", f"output_path={tmp_path / 'metrics'}", "max_train_samples=3",
        "max_out_length=8",
    ])
    written = json.loads((tmp_path / "metrics" / "roundtrip_tiny-qwen2.json").read_text())
    assert set(written["before"]) == set(written["after"]) >= {"ae_loss", "bleu1", "exact_match", "positional_match"}
    assert written["after"]["ae_loss"] < written["before"]["ae_loss"]
    assert written["reload_identical"] is True and result["num_texts"] == 3
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_full_roundtrip_reconstructs_every_training_text_exactly(tmp_path, family):
    """The shipped round-trip config (600 steps, about 35 s each) must learn its 8 texts exactly (measured: it does)."""
    from pathlib import Path

    config = Path(roundtrip.__file__).resolve().parents[1] / "configs" / f"roundtrip_tiny_{family}.yaml"
    result = roundtrip.main(["--config_path", str(config), f"output_dir={tmp_path / 'run'}",
                             f"output_path={tmp_path / 'metrics'}"])
    assert result["after"]["exact_match"] == 1.0 and result["before"]["exact_match"] == 0.0
    assert result["reload_identical"] is True
