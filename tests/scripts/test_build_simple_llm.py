"""The equal-compute control's build: its token budget from the compressors' records, its LM batches, and a small
build end to end whose asset a SimpleLLM fine-tune restores."""

import json
import random
import re

import pytest
import torch

from icae.errors import UserError
from icae.models import SimpleLLM, build_model, load_checkpoint
from icae.scripts import build_simple_llm
from icae.training.lm import IGNORE, LMCollator
from tests.conftest import small_config


def _record(path, config, legs=None):
    path.mkdir(parents=True)
    (path / "training_log.json").write_text(json.dumps({"config": config, "legs": legs or []}))
    return str(path)


def test_the_budget_sums_every_run_and_stage_of_the_compressor(tmp_path):
    single = _record(tmp_path / "seg", {"fixed_mem_size": 8, "mean_compression_rate": 4, "max_steps": 10,
                                        "per_device_train_batch_size": 4})
    curriculum = _record(tmp_path / "long", {"fixed_mem_size": 8, "mean_compression_rate": 4, "max_steps": 1,
                                             "per_device_train_batch_size": 1}, legs=[
        {"steps": 5, "batch_size": 2, "context_length": 128, "segment_sample_ratio": 0.0},
        {"steps": 3, "batch_size": 2, "context_length": 64, "segment_sample_ratio": 0.5},  # half 64, half 32 tokens
        {"steps": 1, "batch_size": 1, "context_length": 256}])  # a stage logged before ratios were recorded
    assert build_simple_llm.compressor_tokens([single]) == 10 * 4 * 32
    assert build_simple_llm.compressor_tokens([curriculum]) == 5 * 2 * 128 + 3 * 2 * 48 + 256
    assert build_simple_llm.compressor_tokens([single, curriculum]) == 1280 + 1280 + 288 + 256
    with pytest.raises(UserError, match="no training record .* pass --tokens"):
        build_simple_llm.compressor_tokens([str(tmp_path / "nothing")])


def test_the_shipped_compressors_budget_is_their_records():
    # tiny-icae-4x-segment: 40,000 steps of 16 one-segment (32-token) samples; tiny-icae-4x: its 7 stages.
    segment = 40_000 * 16 * 32
    stages = [(1500, 8, 128, 0.0), (1000, 4, 256, 0.2), (1000, 4, 512, 0.2), (500, 2, 1024, 0.2), (400, 1, 2048, 0.3),
              (600, 2, 2048, 0.5), (800, 2, 2048, 0.5)]
    expected = segment + sum(round(n * b * ((1 - r) * L + r * 32)) for n, b, L, r in stages)
    assert build_simple_llm.compressor_tokens() == expected


def test_lm_batches_train_on_the_whole_window_and_never_on_padding():
    batch = LMCollator(pad_token_id=1)([{"input_ids": [5, 6, 7], "continuation_ids": [8, 9]},
                                        {"input_ids": [10, 11], "continuation_ids": []}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7, 8, 9], [10, 11, IGNORE, IGNORE, IGNORE]]


def _corpus(path, n, seed):
    rnd = random.Random(seed)
    words = ["def", "return", "self", "import", "class", "value", "(", ")", ":", "=", "\n", "    ", "x", "y", "if"]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"path": f"m{i}.py", "text": " ".join(rnd.choice(words) for _ in range(300))}) + "\n")


SMALL = ["context_length=32", "min_len=16", "eval_size=4", "lora_r=4", "lora_alpha=8", "per_device_train_batch_size=2",
         "per_device_eval_batch_size=4", "eval_steps=5", "save_steps=5", "logging_steps=1", "warmup_steps=0"]


def test_a_small_build_writes_a_simple_llm_that_fine_tunes_restore(tmp_path):
    work, out = tmp_path / "work", tmp_path / "assets" / "control"
    work.mkdir()
    _corpus(work / "base_corpus.jsonl", 12, 0)
    _corpus(work / "stdlib_n_z.jsonl", 4, 1)
    _corpus(work / "tool_outputs_train.jsonl", 6, 2)
    # 480 tokens in windows of 32 + 16 at batch 2: 5 steps
    build_simple_llm.main(["--work", str(work), "--out", str(out), "--tokens", "480", *SMALL])
    model = load_checkpoint(str(out), train=False)
    assert isinstance(model, SimpleLLM) and model.args.use_lora and model.args.lora_r == 4
    trained = {k: v for k, v in model.trainable_state_dict().items() if "lora_B" in k}
    assert trained and all(v.abs().sum() > 0 for v in trained.values())  # LoRA B starts at zero: it was trained
    record = (out / "TRAINING.md").read_text()
    assert "5 steps of 2 windows of 32 + 16 tokens: 480 tokens, for a budget of 480 (given by --tokens)" in record
    log = json.loads((out / "training_log.json").read_text())
    evals = [h for h in log["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [5]  # every eval_steps
    before, after = log["held_out_loss_before"], evals[-1]["eval_loss"]  # the base alone, measured before training
    assert before != after
    assert f"before training (the base alone) {before:.3f}" in record and f"after {after:.3f}" in record
    # A SimpleLLM fine-tune of the same LoRA shape starts from it.
    tuned = build_model(small_config("tiny-qwen2-lm", model_type="llm", use_lora=True, lora_r=4, lora_alpha=8,
                                     lora_target_modules=model.args.lora_target_modules, restore_from=str(out)))
    for k, v in tuned.trainable_state_dict().items():
        torch.testing.assert_close(v, model.trainable_state_dict()[k])

    # The same build again: the finished checkpoint is loaded as it is and shipped again, said so.
    build_simple_llm.main(["--work", str(work), "--out", str(out), "--tokens", "480", *SMALL])
    again = json.loads((out / "training_log.json").read_text())["train_seconds"]
    assert again == pytest.approx(log["train_seconds"], abs=2.0) and again > 0  # the first run's clock, not zero
    # Refused before anything runs: a smaller budget over the finished run, windows prepared with another length,
    # an asset path under a file, and max_steps (the budget sets it).
    refusals = [(["--tokens", "96"], "checkpoint-5 is past this budget's 1 steps"),
                (["--tokens", "480", "context_length=16"], "were prepared with context_length 32 (asked: 16)"),
                (["--tokens", "480", "max_steps=3"], "sets max_steps from the token budget: pass --tokens instead")]
    for extra, message in refusals:
        with pytest.raises(UserError, match=re.escape(message)):
            build_simple_llm.main(["--work", str(work), "--out", str(out), *SMALL, *extra])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'a_file'} is a file")):
        build_simple_llm.main(["--work", str(work), "--out", str(tmp_path / "a_file" / "x"), "--tokens", "480", *SMALL])


def test_a_compressor_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="set model_type: llm and use_lora: true"):
        build_simple_llm.main(["--work", str(tmp_path), "--tokens", "10", "model_type=icae"])
    with pytest.raises(UserError, match="--tokens must be >= 1, got 0"):
        build_simple_llm.main(["--work", str(tmp_path), "--tokens", "0"])
