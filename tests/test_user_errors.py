"""A table of bad inputs a user can give: each ends with exit code 2 (or, through the API, a ValueError) and a message
that names the problem. No model is trained here; the few checkpoints are tiny."""

import json
import os
import subprocess
import sys

import pytest
import torch

from icae.cli import main
from tests.conftest import make_model, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.yaml").write_text("# nothing here\n")
    (root / "broken.jsonl").write_text('{"text": "def f(): pass"}\n{"text": oops}\n')
    (root / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    (root / "roles.jsonl").write_text(json.dumps({"messages": [{"role": "robot", "content": "x"},
                                                               {"role": "assistant", "content": "y"}]}) + "\n")
    (root / "squad.json").write_text('{"rows": []}')
    make_model().save_pretrained(root / "ckpt", small_config())
    make_model().save_pretrained(root / "cut", small_config())
    weights = root / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    return root


TINY = ["model_name_or_path=tiny-qwen2", "fixed_mem_size=4", "lora_r=8", "lora_alpha=16", "lora_dropout=0.0",
        "use_cpu=true"]
CASES = [
    # bad configs
    (["config", "fixed_mem_size=3"], "power of 2 from 1 to 4096"),
    (["config", "max_steps=-5"], "max_steps must be -1"),
    (["config", "num_samples=0", "eval_size=-1"], "2 problem(s)"),
    (["config", "nope=1"], "unknown key 'nope'"),
    (["pretrain", "--config_path", "{root}/empty.yaml"], "the file is empty"),
    (["pretrain", "model_type=llm"], "set model_type: icae"),
    (["finetune-squad", *TINY], "dataset_repo: required by finetune_SQuAD"),
    (["pretrain", "output_dir={root}/o", "train_output_file={root}/nope", "eval_output_file={root}/nope"],
     "no prepared split"),
    # bad data files
    (["prepare", *TINY, "dataset_repo={root}/broken.jsonl", "train_output_file={root}/t", "eval_output_file={root}/e"],
     "broken.jsonl:2: not a JSON line"),
    (["prepare", *TINY, "dataset_repo={root}/latin1.jsonl", "train_output_file={root}/t", "eval_output_file={root}/e"],
     "latin1.jsonl: not UTF-8"),
    (["inference-trajectories", *TINY, "task=trajectories", "dataset_repo={root}/roles.jsonl"], "unknown roles ['robot']"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "output_path={root}/r"], "SQuAD format"),
    # bad checkpoints and model paths
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "restore_from={root}/cut"],
     "not a readable safetensors file"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "restore_from={root}/nowhere"],
     "no such file or directory"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "restore_from={root}/ckpt",
      "lora_alpha=64"], "lora_alpha: restore_from"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "restore_from={root}/ckpt",
      "model_name_or_path=tiny-mistral"], "trained on base model 'tiny-qwen2'"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "model_name_or_path=./no/such/model"],
     "no such model directory: ./no/such/model"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "lora_target_modules=[query_key_value]"],
     "its linear modules"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "model_max_length=100000"],
     "exceeds the 8192 positions"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad.json", "output_path=/proc/icae-results"],
     "cannot write"),
    # the benchmarks' own flags, checked before any server or model starts
    (["bench-serve", "--clients", "0", "--seconds", "0"], "2 problem(s)"),
    (["bench-serve", "--seconds", "1", "lora_r=0"], "lora_r must be >= 1, got 0"),
    (["bench-serve", "--seconds", "1", "--out", "/proc/icae-results/serve.json"], "--out: cannot write"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_user_errors_exit_2_with_a_message(files, argv, needle, capsys):
    argv = [a.replace("{root}", str(files)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_python_m_entry_points_exit_2_too(files):
    """Not only `icae ...`: every documented `python -m` path turns a user error into one message and exit code 2."""
    for module in ("icae.scripts.pretrain", "icae.data.prepare_data_for_pretraining", "icae.scripts.finetune_repoqa"):
        run = subprocess.run([sys.executable, "-m", module, "--config_path", str(files / "empty.yaml")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 2 and "the file is empty" in run.stderr and "Traceback" not in run.stderr, module


@pytest.mark.parametrize("call, needle", [
    (lambda m: m([[11, 12]], mode="xx"), "mode must be one of"),
    (lambda m: m([[11, 12]], mode=None), "mode must be one of"),
    (lambda m: m.compress(None), "expected texts, a list of token-id lists"),
    (lambda m: m.compress([123]), "a list of int"),
    (lambda m: m.compress([[5, 10**6]]), r"token ids \[1000000\] are outside the vocabulary"),
    (lambda m: m([[11, 12]], mode="ft"), "needs target_ids"),
    (lambda m: m.generate(m.compress([[11, 12]]), max_new_tokens=-1), "max_new_tokens must be >= 0"),
    (lambda m: m.generate([[11, 12]]), "generate reads a Memory"),
    (lambda m: m.generate(m.compress([[11, 12]]), do_sample=True, temperature=0), "temperature must be > 0"),
])
def test_api_errors_name_the_problem(call, needle):
    with pytest.raises(ValueError, match=needle):
        call(make_model())


def test_generation_stops_at_model_max_length():
    model = make_model(model_max_length=24)
    memory = model.compress([list(range(10, 26))])  # 16 tokens -> 4 slots; AE layout: 4 + 1 positions prefilled
    out = model.generate(memory, mode="ae", max_new_tokens=100, stop_token_ids=[])
    assert len(out[0]) == 24 - 5 + 1  # each new token but the last is fed back: the window holds 24 positions


def test_the_suggested_fixes_work(tmp_path):
    """An error that suggests a change is tested by making the change."""
    from icae.config import load_config
    from icae.data.prepare_data_for_pretraining import prepare
    from icae.data.sources import SourceError

    doc = tmp_path / "one.jsonl"
    doc.write_text(json.dumps({"text": "def f(x):\n    return x\n" * 200}) + "\n")  # a single long document
    base = {"model_name_or_path": "tiny-qwen2", "fixed_mem_size": 4, "dataset_repo": str(doc), "eval_size": 1,
            "train_output_file": str(tmp_path / "t"), "eval_output_file": str(tmp_path / "e")}
    with pytest.raises(SourceError, match="eval_size: 0 for no held-out split") as e:
        prepare(load_config(None, base), show_progress=False)
    assert "eval_dataset_repo" in str(e.value)
    assert prepare(load_config(None, {**base, "eval_size": 0}), show_progress=False)["train_samples"] > 0
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"text": "def g(y):\n    return y\n" * 20}) + "\n")
    info = prepare(load_config(None, {**base, "eval_dataset_repo": str(held)}), show_progress=False)
    assert info["train_samples"] > 0 and info["eval_samples"] == 1
    bigger = small_config(model_max_length=100000)
    with pytest.raises(Exception, match="lower model_max_length"):
        from icae.models import build_model

        build_model(bigger)
    assert build_model(small_config(model_max_length=8192)).args.model_max_length == 8192
    assert torch.is_tensor(make_model().memory_embeddings)
