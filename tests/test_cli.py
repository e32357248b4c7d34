import subprocess
import sys

from icae.cli import main


def test_config_command_prints_resolved_config(capsys):
    assert main(["config", "fixed_mem_size=8", "learning_rate=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "fixed_mem_size: 8" in out and "learning_rate: 0.0003" in out


def test_config_errors_are_listed_without_traceback(capsys):
    assert main(["config", "fixed_mem_size=3", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "power of 2" in err and "'nope'" in err and "Traceback" not in err


def test_keys_and_unknown_command(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "fixed_mem_size" in out and "use_position_identifiers" in out
    assert main(["frobnicate"]) == 2


def test_build_tiny(tmp_path, capsys):
    assert main(["build-tiny", "--family", "mistral", "--out", str(tmp_path / "m"), "--hidden_size", "32"]) == 0
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "m").hidden_size == 32


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "icae", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in r.stdout


def test_data_recipes_and_data_errors(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text('def greet(name):\n    """Say hello."""\n    return "hi " + name\n')
    assert main(["build-repoqa", "--source", str(pkg), "--out", str(tmp_path / "r.json")]) == 0
    assert main(["generate-trajectories", "--source", str(pkg), "--num", "1", "--out", str(tmp_path / "t.jsonl")]) == 0
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["inference-trajectories", "task=trajectories", f"dataset_repo={tmp_path / 'bad.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert "no assistant turn" in err and "Traceback" not in err


def test_the_long_memory_commands_are_routed(capsys):
    from icae.cli import main as cli

    assert cli(["fidelity", "--samples", "0"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err
    assert cli(["write-tool-outputs", "--split", "train", "--out", "x.jsonl", "--count", "0"]) == 2
    assert "--count must be >= 1" in capsys.readouterr().err
