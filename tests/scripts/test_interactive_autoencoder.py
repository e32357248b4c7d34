import io
import json

import pytest

from icae.cli import main as cli
from icae.models import loading
from icae.scripts import interactive_autoencoder
from tests.conftest import make_model, small_config


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    cfg = small_config("tiny-qwen2", fixed_mem_size=4, mean_compression_rate=4)
    make_model("tiny-qwen2", fixed_mem_size=4).save_pretrained(tmp_path / "c", cfg)
    monkeypatch.setitem(loading.SHIPPED_COMPRESSORS, "tiny-icae-4x", tmp_path / "c")
    return tmp_path / "c"


def test_a_file_gives_one_json_object(shipped, tmp_path, capsys):
    text = "def add(a, b):\n    return a + b\n" * 6  # several segments of 16 tokens
    (tmp_path / "in.py").write_text(text)
    [result] = interactive_autoencoder.main(["--input", str(tmp_path / "in.py"), "--json"])
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed == result and set(printed) == {"input_tokens", "slots", "compression_rate", "reconstruction", "bleu1"}
    n = printed["input_tokens"]
    assert printed["slots"] == 4 * -(-n // 16) and printed["compression_rate"] == pytest.approx(n / printed["slots"])
    from icae.metrics import bleu1

    assert printed["bleu1"] == pytest.approx(bleu1(text, printed["reconstruction"]))


def test_whole_is_the_default_and_per_segment_decodes_each_segment_alone(shipped, tmp_path, monkeypatch):
    from icae.training import evaluation

    text = "def add(a, b):\n    return a + b\n" * 6
    (tmp_path / "in.py").write_text(text)
    seen = []
    real = evaluation.reconstruct
    monkeypatch.setattr(interactive_autoencoder, "reconstruct",
                        lambda model, t, per_segment: seen.append(per_segment) or real(model, t, per_segment))
    interactive_autoencoder.main(["--input", str(tmp_path / "in.py")])
    interactive_autoencoder.main(["--input", str(tmp_path / "in.py"), "--whole"])
    interactive_autoencoder.main(["--input", str(tmp_path / "in.py"), "--per_segment"])
    assert seen == [False, False, True]
    with pytest.raises(SystemExit):
        interactive_autoencoder.main(["--input", str(tmp_path / "in.py"), "--whole", "--per_segment"])


def test_stdin_prompt_loop_and_whole_text(shipped, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("x = 1\\nprint(x)\nanother line of text here\nquit\nnever read\n"))
    results = interactive_autoencoder.main(["--whole"])
    assert len(results) == 2 and results[0]["input_tokens"] > 3  # "\n" typed in the loop is a newline
    assert "tokens ->" in capsys.readouterr().out


def test_empty_input_and_bad_files_are_clear_errors(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("   \n"))
    assert cli(["reconstruct", "--input", "-"]) == 2
    assert "the input is empty" in capsys.readouterr().err
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    assert cli(["reconstruct", "--input", str(tmp_path / "bin")]) == 2
    assert "cannot read it as UTF-8" in capsys.readouterr().err
    assert cli(["reconstruct", "--input", str(tmp_path / "bin"), "--checkpoint", str(tmp_path / "none")]) == 2
