import json
import sys

import pytest

from icae.scripts import demo
from tests.conftest import png_size


def test_demo_reports_shipped_compressors_and_a_live_run(tmp_path, shipped_stand_ins):
    corpus, held = tmp_path / "corpus.jsonl", tmp_path / "held.jsonl"
    corpus.write_text("".join(json.dumps({"text": "\n".join(f"def h{i}_{j}(a):\n    return a - {j}\n"
                                                            for j in range(30))}) + "\n" for i in range(6)))
    held.write_text(json.dumps({"text": "\n".join(f"def g{j}(b):\n    return b * {j}\n" for j in range(40))}) + "\n")
    result = demo.main([
        f"dataset_repo={corpus}", f"eval_dataset_repo={held}", f"train_output_file={tmp_path / 'train'}",
        f"eval_output_file={tmp_path / 'eval'}", f"output_dir={tmp_path / 'run'}", f"output_path={tmp_path / 'metrics'}",
        "max_steps=6", "eval_size=8", "eval_ae_num_samples=2", "per_device_train_batch_size=4", "lora_r=8",
    ])
    written = json.loads((tmp_path / "metrics" / "demo_tiny-qwen2-lm.json").read_text())
    for key in ("before", "after", "no_memory_before", "no_memory_after"):
        assert {"ae_loss", "ae_token_accuracy", "ae_bleu1", "ae_exact_match"} <= set(written[key])
    assert set(written["shipped"]) == {"tiny-icae-4x", "tiny-icae-8x"}
    four, eight = written["shipped"]["tiny-icae-4x"], written["shipped"]["tiny-icae-8x"]
    assert (four["rate"], four["tokens"], eight["tokens"]) == (4, 16, 32)  # k=4 slots of 4 and 8 tokens each
    assert four["samples"] == eight["samples"] == 8 and len(four["examples"]) == 3
    assert four["memory"]["ae_loss"] != four["no_memory"]["ae_loss"]  # the baseline really drops the slots
    assert four["passage"]["slots"] == 4 * 5 and eight["passage"]["slots"] == 4 * 5  # five segments, each k=4 slots
    assert result["steps"] == 6 and written["data"]["eval_samples"] == 8
    assert png_size(tmp_path / "metrics" / "demo_tiny-qwen2-lm_loss.png") == (660, 385)  # (6, 3.5) at 110 dpi
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_the_command_line_reaches_the_demo(monkeypatch, capsys):
    """``python -m icae.scripts.demo ...`` reads its arguments (entry() calls main(None)): a bad key is refused with
    exit 2 before anything runs, and --help prints the usage."""
    from icae.scripts import demo, entry

    monkeypatch.setattr(sys, "argv", ["demo", "no_such_key=1"])
    with pytest.raises(SystemExit) as raised:
        entry(demo.main)
    assert raised.value.code == 2 and "no_such_key" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["demo", "--help"])
    with pytest.raises(SystemExit) as raised:
        entry(demo.main)
    assert raised.value.code == 0 and "--config_path" in capsys.readouterr().out
