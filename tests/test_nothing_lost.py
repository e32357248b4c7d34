"""Issue #26, case by case through the real entry points: nothing the project did not write is deleted, nothing is
overwritten, a finished run does not train again, and every hostile input is one message with exit code 2 (a
ValueError or TypeError naming the argument, from the Python API)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from icae.cli import main
from tests.conftest import make_model, small_config
from tests.training.test_pretraining import args_for, prepared  # noqa: F401 - the module's prepared corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model_name_or_path=tiny-qwen2", "fixed_mem_size=4", "lora_r=8", "lora_alpha=16", "lora_dropout=0.0",
        "use_cpu=true"]
# 444 bytes of YAML whose aliases expand to 10**9 strings (a "billion laughs").
BOMB = "\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]" for p, n in zip("abcdefgh", "bcdefghi")]) + "\n"


def _squad(qa_or_paragraph, data=None):
    if data is not None:
        return json.dumps({"version": "1.1", "data": data})
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [qa_or_paragraph]}]})


def _repo(**needle_changes):
    content = "def f(x):\n    return x\n"
    needle = {"name": "f", "path": "a.py", "start_byte": 0, "end_byte": len(content), "description": "returns x"}
    needle.update(needle_changes)
    return {"repo": "r", "content": {"a.py": content}, "dependency": {}, "needles": [needle]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("n26")
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("years of work\n")
    (root / "notes.txt").write_text("keep me\n")
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": "def f(x):\n    return x + %d\n" % i * 40}) + "\n"
                                               for i in range(6)))
    (root / "bomb.yaml").write_text(BOMB)
    os.symlink(root / "loop_b.yaml", root / "loop_a.yaml")
    os.symlink(root / "loop_a.yaml", root / "loop_b.yaml")
    paragraph = {"context": "Alder is a town.", "qas": [{"question": "What is Alder?",
                                                          "answers": [{"text": "a town", "answer_start": 9}]}]}
    (root / "squad_no_id.json").write_text(_squad(paragraph))
    (root / "squad_null_context.json").write_text(_squad({"context": None, "qas": []}))
    (root / "squad_str_answers.json").write_text(_squad({"context": "c", "qas": [
        {"id": "q1", "question": "q?", "answers": ["a town"]}]}))
    (root / "squad_str_data.json").write_text(_squad(None, data=["an article"]))
    (root / "repoqa_null.json").write_text(json.dumps({"python": [{**_repo(), "needles": None}]}))
    (root / "repoqa_str.json").write_text(json.dumps({"python": [_repo(start_byte="10")]}))
    (root / "repoqa_none.json").write_text(json.dumps({"python": [{**_repo(), "needles": []}]}))
    (root / "wizard.traj").write_text(json.dumps({"history": [
        {"role": "system", "content": "s"}, {"role": "wizard", "content": "abracadabra"},
        {"role": "assistant", "content": "ls"}]}))
    (root / "not_prepared").mkdir()
    (root / "not_prepared" / "data.bin").write_bytes(b"\0" * 16)
    return root


CASES = [
    # 1. data preparation never deletes what it did not write
    (["prepare", *TINY, "dataset_repo={root}/corpus.jsonl", "train_output_file={root}/mine",
      "eval_output_file={root}/e1"], "train_output_file: {root}/mine is a directory that data preparation did not write"),
    (["prepare", *TINY, "dataset_repo={root}/corpus.jsonl", "train_output_file={root}/t1",
      "eval_output_file={root}/notes.txt"], "eval_output_file: {root}/notes.txt is a file that data preparation"),
    (["prepare", *TINY, "dataset_repo={root}/corpus.jsonl", "train_output_file={root}/same",
      "eval_output_file={root}/./same"], "are the same path"),
    # 5. values the libraries refuse, checked before any model loads; unreadable configs; an alias bomb
    (["pretrain", *TINY, "learning_rate=.nan"], "learning_rate: must be a finite number, got nan"),
    (["pretrain", *TINY, "lr_scheduler_type=cosinus"], "lr_scheduler_type: 'cosinus' is not one of linear, cosine"),
    (["pretrain", *TINY, "eval_strategy=sometimes"], "eval_strategy: 'sometimes' is not one of no, steps, epoch"),
    (["pretrain", *TINY, f"seed={2**40}"], "seed: must be in [0, 2**32 - 1]"),
    (["pretrain", "--config_path", "{root}"], "is a directory, not a config file"),
    (["pretrain", "--config_path", "{root}/loop_a.yaml"], "Too many levels of symbolic links"),
    (["pretrain", "--config_path", "/proc/self/mem"], "cannot read config file /proc/self/mem"),
    (["pretrain", "--config_path", "{root}/bomb.yaml"], "aliases expand to more than"),
    (["config", f"fixed_mem_size={'x' * 5000}"], "fixed_mem_size: expected int, got 'xxxx"),
    (["config", f"lr_scheduler_type={'y' * 5000}"], "characters) is not one of"),
    # 6. malformed data: the file, the record and what to change
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad_no_id.json"], "data[0].paragraphs[0].qas[0]: "
                                                                                    "missing ['id']"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad_null_context.json"],
     "data[0].paragraphs[0]: expected {'context': text"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad_str_answers.json"],
     "(id 'q1'): 'answers' must be a list of {'text'"),
    (["inference-squad", *TINY, "task=qa", "dataset_repo={root}/squad_str_data.json"], "data[0]: expected an article"),
    (["inference-repoqa", *TINY, "task=repoqa", "dataset_repo={root}/repoqa_null.json"],
     "python[0] (r): 'needles' must be a list"),
    (["inference-repoqa", *TINY, "task=repoqa", "dataset_repo={root}/repoqa_str.json"],
     "start_byte and end_byte integers (got start_byte '10'"),
    (["inference-repoqa", *TINY, "task=repoqa", "dataset_repo={root}/repoqa_none.json"], "no repo has a needle"),
    (["inference-trajectories", *TINY, "task=trajectories", "dataset_repo={root}/wizard.traj"],
     "unknown roles ['wizard']"),
    (["pretrain", *TINY, "output_dir={root}/o", "train_output_file={root}/not_prepared",
      "eval_output_file={root}/not_prepared"], "train_output_file: {root}/not_prepared is not a split written by data "
                                               "preparation"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[f"{c[0][0]} #{i}" for i, c in enumerate(CASES)])
def test_each_case_is_one_message_and_exit_2(files, argv, needle, capsys):
    argv = [a.replace("{root}", str(files)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle.replace("{root}", str(files)) in err and "Traceback" not in err
    assert len(err) < 3000 and "lol" not in err and "x" * 100 not in err  # no value printed at length
    assert (files / "mine" / "thesis.tex").read_text() == "years of work\n"
    assert (files / "notes.txt").read_text() == "keep me\n"
    assert not (files / "t1").exists() and not (files / "same").exists()  # refused before anything is written


def test_a_finished_run_started_again_only_evaluates_and_saves(prepared, tmp_path):  # noqa: F811
    """#26.2 and #26.3: a run of 4 steps started again in its output_dir loads checkpoint-4 without training (no
    step 5), gives the same metrics, and its metrics go to a new file beside the first run's."""
    from icae.scripts import pretrain

    out = tmp_path / "run"
    first = pretrain.main(args_for(prepared, out, max_steps=4))
    weights = load_file(str(out / "final" / "model.safetensors"))
    again = pretrain.main(args_for(prepared, out, max_steps=4))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert again == first
    for name, tensor in load_file(str(out / "final" / "model.safetensors")).items():
        assert torch.equal(tensor, weights[name]), name
    one, two = (json.loads((out / "metrics" / n).read_text()) for n in ("pretrain_tiny-qwen2.json",
                                                                         "pretrain_tiny-qwen2_2.json"))
    assert one["eval"] == two["eval"] == first
    assert max(h["step"] for h in two["log_history"]) == 4


def test_eval_size_0_trains_without_evaluation(tmp_path, capsys):
    """#26.6: the documented eval_size 0 prepares no held-out split; pretraining then trains without evaluating, and
    asking it to evaluate on the empty split is one message."""
    from icae.config import load_config
    from icae.data.prepare_data_for_pretraining import prepare
    from icae.scripts import pretrain

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": "def f(x):\n    return x + %d\n" % i * 30}) + "\n" for i in range(4)))
    prepare(load_config(None, {"dataset_repo": str(corpus), "train_output_file": str(tmp_path / "train"),
                               "eval_output_file": str(tmp_path / "eval"), "fixed_mem_size": 4, "min_tokens_for_lm": 8,
                               "min_len": 8, "eval_size": 0}), show_progress=False)
    argv = args_for(tmp_path, tmp_path / "run", max_steps=1, save_strategy="no")
    assert pretrain.main(argv) == {}
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert main(["pretrain", *args_for(tmp_path, tmp_path / "run2", max_steps=1, eval_strategy="steps",
                                       eval_steps=1)]) == 2
    assert "holds no sample (prepared with eval_size: 0): set eval_strategy: no" in capsys.readouterr().err


def test_roundtrip_results_never_replace_earlier_ones(tmp_path):
    """#26.3: an earlier run's metrics file is kept; the new one goes to the next free name."""
    from icae.scripts import roundtrip

    (tmp_path / "metrics").mkdir()
    earlier = tmp_path / "metrics" / "roundtrip_tiny-qwen2.json"
    earlier.write_text('{"earlier": true}\n')
    roundtrip.main(["max_steps=1", f"output_dir={tmp_path / 'run'}", f"output_path={tmp_path / 'metrics'}",
                    "max_train_samples=2", "max_out_length=4"])
    assert json.loads(earlier.read_text()) == {"earlier": True}
    assert json.loads((tmp_path / "metrics" / "roundtrip_tiny-qwen2_2.json").read_text())["num_texts"] == 2


def test_a_giant_record_respects_token_num(tmp_path):
    """#26.7: one 3 MB record with token_num 500: about 500 tokens are prepared (whole windows), not the ~700 000 of
    the whole record."""
    from icae.config import load_config
    from icae.data.prepare_data_for_pretraining import build_samples
    from icae.models.loading import load_tokenizer

    giant = tmp_path / "giant.jsonl"
    giant.write_text(json.dumps({"text": "def f(x):\n    return x + 1\n" * 110_000}) + "\n")
    config = load_config(None, {"dataset_repo": str(giant), "fixed_mem_size": 4, "min_tokens_for_lm": 8,
                                "token_num": 500, "eval_size": 0})
    train, _, info = build_samples(config, load_tokenizer("tiny-qwen2"), show_progress=False)
    window = 16 + 8
    assert 500 <= info["tokens"] < 500 + window and len(train) == -(-500 // window)
    # The windows are those of the whole text's tokenisation.
    whole = load_tokenizer("tiny-qwen2")("def f(x):\n    return x + 1\n" * 400, add_special_tokens=False)["input_ids"]
    assert train[1]["input_ids"] == whole[window: window + 16]


def test_a_file_size_limit_during_a_checkpoint_save_is_one_message(tmp_path):
    """#26.7: ulimit -f hit while writing a checkpoint (the trainer's, and save_pretrained's): exit 2 and what to do,
    and the earlier checkpoint is untouched."""
    code = (
        "import resource, sys\n"
        "from icae.scripts import entry\n"
        "from tests.conftest import make_model\n"
        "model = make_model()\n"
        "model.save_pretrained(sys.argv[1])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "entry(lambda argv: model.save_pretrained(sys.argv[1]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ckpt")], cwd=ROOT, env=os.environ.copy(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "the disk is full or a file-size limit (ulimit -f) was reached" in run.stderr
    assert "Traceback" not in run.stderr
    from icae import ICAE

    ICAE.from_pretrained(tmp_path / "ckpt")  # the earlier checkpoint still loads, checksum and all


def test_the_trainers_checkpoint_save_hitting_a_file_size_limit(prepared, tmp_path):  # noqa: F811
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from icae.scripts import entry\n"
        "from icae.scripts.pretrain import main\n"
        "entry(main, sys.argv[1:])\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *args_for(prepared, tmp_path / "run", max_steps=2,
                                                                save_steps=1)],
                         cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "checkpoint-1" in run.stderr and "the disk is full or a file-size limit (ulimit -f)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not list((tmp_path / "run").glob("**/checkpoint-1"))  # the half-written checkpoint is removed


# ---------------------------------------------------------------------------------------------- 4. checkpoints
@pytest.fixture
def ckpt(tmp_path):
    make_model(freeze_decoder=False).save_pretrained(tmp_path / "ckpt", small_config(freeze_decoder=False))
    return tmp_path / "ckpt"


def _restore(ckpt, *extra):
    return ["inference-squad", *TINY, "task=qa", "dataset_repo=nowhere.json", f"restore_from={ckpt}",
            "freeze_decoder=false", *extra]


def _rewrite(path, edit):
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(edit(meta)))


CHECKPOINT_CASES = {
    "meta a list": (lambda c: (c / "icae_meta.json").write_text("[1, 2]"), [], "expected a JSON object, got a list"),
    "fingerprint a string": (lambda c: _rewrite(c / "icae_meta.json", lambda m: {**m, "base_fingerprint": "abc"}),
                             [], "base_fingerprint must be a JSON object, got str"),
    "meta deleted, other base": (lambda c: (c / "icae_meta.json").unlink(), ["model_name_or_path=tiny-mistral"],
                                 "trained on base model 'tiny-qwen2' (its icae_meta.json"),
    "flipped bytes": (lambda c: _flip(c / "model.safetensors"), [], "its sha256 differs from the one recorded"),
    "all NaN": (lambda c: _nan(c), [], "tensors with NaN or infinite values: ['memory_embeddings']"),
    "a decoder tensor missing": (lambda c: _drop_decoder_tensor(c), [], "missing tensors: ['decoder_lora."),
}


def _flip(path):
    data = bytearray(path.read_bytes())
    for i in range(64):  # 64 bytes in the tensor data, far past the header
        data[-1 - 97 * i] ^= 0xFF
    path.write_bytes(bytes(data))


def _nan(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    state["memory_embeddings"] = torch.full_like(state["memory_embeddings"], float("nan"))
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    _rewrite(ckpt / "icae_meta.json", lambda m: {k: v for k, v in m.items() if k != "sha256"})


def _drop_decoder_tensor(ckpt):
    state = load_file(str(ckpt / "model.safetensors"))
    state.pop(sorted(k for k in state if k.startswith("decoder_lora."))[0])
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    _rewrite(ckpt / "icae_meta.json", lambda m: {k: v for k, v in m.items() if k != "sha256"})


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_checkpoint_cases_are_one_message_and_exit_2(ckpt, case, capsys):
    damage, extra, needle = CHECKPOINT_CASES[case]
    damage(ckpt)
    assert main(_restore(ckpt, *extra)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    if case == "a decoder tensor missing":
        assert "set it so" not in err  # freeze_decoder is already false: the tensor is named instead


def test_checkpoints_carry_a_checksum_and_keep_umask_permissions(tmp_path):
    import hashlib

    old = os.umask(0o022)
    try:
        make_model().save_pretrained(tmp_path / "c", small_config())
    finally:
        os.umask(old)
    for name in ("model.safetensors", "icae_meta.json", "icae_config.yaml"):
        assert (tmp_path / "c" / name).stat().st_mode & 0o777 == 0o644, name
    meta = json.loads((tmp_path / "c" / "icae_meta.json").read_text())
    assert meta["sha256"] == {"model.safetensors": hashlib.sha256((tmp_path / "c" / "model.safetensors").read_bytes())
                              .hexdigest()}
    assert meta["base_model"] == "tiny-qwen2" and "model_name_or_path: tiny-qwen2" in (
        tmp_path / "c" / "icae_config.yaml").read_text()


def test_a_checkpoint_without_a_checksum_still_loads(ckpt):
    """Checkpoints written before checksums (the shipped compressors among them) load, with the other checks."""
    from icae import ICAE

    _rewrite(ckpt / "icae_meta.json", lambda m: {k: v for k, v in m.items() if k != "sha256"})
    model = ICAE.from_pretrained(ckpt)
    saved = load_file(str(ckpt / "model.safetensors"))
    assert torch.equal(model.trainable_state_dict()["memory_embeddings"], saved["memory_embeddings"])


# ---------------------------------------------------------------------------------------------- 8. the Python API
@pytest.mark.parametrize("call, error, needle", [
    (lambda m: m.compress("def f(x): return x " * 4, compression_rate=0), ValueError, "compression_rate must be >= 1"),
    (lambda m: m.compress("def f(x): return x " * 4, compression_rate=-4), ValueError, "got -4"),
    (lambda m: m.compress("def f(x): return x", compression_rate="4"), TypeError, "compression_rate must be a positive"),
    (lambda m: m.compress(["ok", None]), TypeError, r"contexts\[1\]: expected a text like the other items, got "
                                                    "NoneType"),
    (lambda m: m.reconstruct(["def f(x): return x"], max_new_tokens="10"), TypeError,
     "max_new_tokens must be an int, got str '10'"),
    (lambda m: m.generate(m.compress("def f(x)"), max_new_tokens=2.5), TypeError, "max_new_tokens must be an int"),
    (lambda m: m.compress(["ok", "half \ud800 a pair"]), ValueError, r"contexts\[1\]: a lone surrogate"),
    (lambda m: m.reconstruct("x \udfff"), ValueError, "contexts: a lone surrogate"),
    (lambda m: m.compress_ids([torch.tensor([5, 10**6, 7])]), ValueError,
     r"rows\[0\]: token id 1000000 is outside the vocabulary \[0, 4096\) \(vocab_size 4096\)"),
    (lambda m: m.compress_ids([torch.tensor([5.0, 6.0])]), TypeError, r"rows\[0\]: expected a 1-D integer tensor"),
])
def test_api_arguments_are_named(call, error, needle):
    with pytest.raises(error, match=needle):
        call(make_model())


def test_api_argument_checks_on_simple_llm():
    model = make_model(model_type="llm")
    with pytest.raises(ValueError, match=r"token id 4096 is outside the vocabulary"):
        model.compress_ids([torch.tensor([1, 4096])])
    with pytest.raises(TypeError, match=r"contexts\[0\]"):
        model.compress([3, "text"])
