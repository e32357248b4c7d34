import json
from pathlib import Path

import pytest
import torch

from icae.data.generate_trajectories import generate
from icae.scripts import finetune_trajectories, inference_trajectories
from icae.scripts.inference_trajectories import summarise
from icae.utils.io import atomic_write_jsonl

MODULE = "".join(f'\n\ndef helper_{i}(items):\n    """Return item {i} of the items."""\n    return items[{i}]\n'
                 for i in range(6))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("trajectories")
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("import os\n" + MODULE)
    rows = generate([pkg], 6, seed=0)
    atomic_write_jsonl(root / "unique.jsonl", rows)
    rows.append(rows[0] | {"id": "repeat"})  # the same observations again: cache hits
    atomic_write_jsonl(root / "t.jsonl", rows)
    return root / "t.jsonl"


def common(dataset, family, model_type, out):
    return [f"model_name_or_path={family}", f"model_type={model_type}", "task=trajectories",
            f"dataset_repo={dataset}", "fixed_mem_size=4", "lora_r=8", "lora_alpha=16", "lora_dropout=0.0",
            "min_tokens_to_compress=24", "max_history_tokens=1500", "test_fraction=0.3", "max_out_length=4",
            "per_device_eval_batch_size=2", "use_cpu=true", "report_to=none", f"output_dir={out}", "seed=1"]


@pytest.mark.parametrize("model_type", ["icae", "llm"])
@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_finetune_then_inference(dataset, tmp_path, name, model_type):
    args = common(dataset, name, model_type, tmp_path / "run")
    final = finetune_trajectories.main(args + ["max_steps=2", "per_device_train_batch_size=2",
                                               "learning_rate=1e-3", "save_strategy=no", "disable_tqdm=true"])
    assert (final / "model.safetensors").is_file()
    result = inference_trajectories.main(args + [f"restore_from={final}", f"output_path={tmp_path / 'out'}",
                                                 "train=false"])
    stem = f"trajectories_{model_type}_{name}_run-final"
    assert Path(result["metrics_path"]).name == f"{stem}_metrics.json"
    metrics = json.loads(Path(result["metrics_path"]).read_text())
    rows = [json.loads(line) for line in Path(result["predictions_path"]).read_text().splitlines()]
    assert metrics["num_trajectories"] == 2 and metrics["num_turns"] == len(rows) == 10  # 30% of 7, 5 turns each
    assert metrics["turn"]["bleu1"] == pytest.approx(sum(r["bleu1"] for r in rows) / len(rows))
    assert all(0 <= r["token_accuracy"] <= 1 and r["scored_tokens"] > 0 for r in rows)
    assert metrics["original_tokens"] == sum(r["original_tokens"] for r in rows)
    assert {"compression_seconds", "generation_seconds", "per_turn_seconds", "turns_per_second",
            "cache_hits", "observations_compressed", "tokens_saved"} <= set(metrics)
    assert metrics["config"]["restore_from"] == str(final)
    first = [r for r in rows if r["turn"] == 2]  # the first assistant turn: nothing compressed before it
    assert all(r["compression_rate"] == 1.0 for r in first)
    # Nothing compressed yet: removing the memory changes nothing. Later turns read 4 compressed observations.
    assert all(r["token_accuracy_no_memory"] == r["token_accuracy"] for r in first)
    assert "token_accuracy_no_memory" in metrics["turn"]
    if model_type == "icae":  # its decoder on the full history too; the first turn reads nothing compressed either
        assert all(r["token_accuracy_full_context"] == r["token_accuracy"] for r in first)
        assert metrics["turn"]["token_accuracy_full_context"] == pytest.approx(
            sum(r["token_accuracy_full_context"] for r in rows) / len(rows))
        assert "context_value_kept" in metrics["turn"]
    else:
        assert "token_accuracy_full_context" not in rows[0] and "context_value_kept" not in metrics["turn"]
    # The original tool's blocks: teacher-forced as mean_accuracy, free generation as *_autoregressive.
    assert metrics["per_turn"]["num_turns"] == metrics["num_turns"] == len(rows)
    assert metrics["per_turn"]["mean_accuracy"] == pytest.approx(metrics["turn"]["token_accuracy"])
    assert metrics["per_turn"]["mean_bleu_autoregressive"] == pytest.approx(metrics["turn"]["bleu1"])
    assert metrics["overall"]["tokens_saved"] == metrics["tokens_saved"]
    assert metrics["overall"]["overall_compression_ratio"] == metrics["compression_rate_total"]
    assert set(metrics["per_trajectory"]) >= {"mean_bleu", "mean_compression_rate", "mean_forward_pass_time_s"}
    if model_type == "icae":
        assert metrics["compression_rate_total"] > 1.2 and metrics["tokens_saved"] > 0
    else:
        assert metrics["compression_rate_total"] == 1.0 and metrics["tokens_saved"] == 0
        assert metrics["observations_compressed"] > 0  # SimpleLLM's observations stay marked (its memory = tokens)
    assert result["num_turns"] == 10


def test_generated_history_and_repeated_observations(dataset, tmp_path):
    """teacher_forcing=false feeds earlier generations back; a repeated trajectory is served from the cache."""
    args = common(dataset, "tiny-qwen2", "icae", tmp_path) + [f"output_path={tmp_path}", "teacher_forcing=false"]
    result = inference_trajectories.main(args + [f"eval_dataset_repo={dataset}"])
    assert result["num_trajectories"] == 7 and result["teacher_forcing"] is False
    unique = inference_trajectories.main(args + [f"eval_dataset_repo={dataset.parent / 'unique.jsonl'}"])
    assert result["observations_compressed"] == unique["observations_compressed"] > 0  # the copy adds none
    assert result["cache_hits"] > unique["cache_hits"]


def test_summarise_against_hand_computed_values():
    def row(traj, em, bleu, acc, original, fed):
        return {"trajectory": traj, "exact_match": em, "bleu1": bleu, "token_accuracy": acc,
                "token_accuracy_no_memory": 0.0, "prefilled_tokens": fed,
                "original_tokens": original, "fed_tokens": fed, "compress_seconds": 0.5, "generate_seconds": 1.5,
                "compression_rate": original / fed, "generated_tokens": 10}

    rows = [row(0, 1.0, 1.0, 1.0, 100, 50), row(0, 0.0, 0.5, 0.5, 300, 100), row(1, 1.0, 1.0, 0.75, 40, 40)]
    s = summarise(rows, {"compressed": 3, "cache_hits": 1}, skipped_turns=2, wall=3.0)
    assert s["turn"]["exact_match"] == pytest.approx(2 / 3)
    assert s["trajectory"]["exact_match"] == pytest.approx((0.5 + 1.0) / 2)  # mean of turns, then of trajectories
    assert s["trajectory"]["token_accuracy"] == pytest.approx((0.75 + 0.75) / 2)
    assert s["trajectory"]["all_turns_exact"] == pytest.approx(0.5)
    assert s["compression_rate_total"] == pytest.approx(440 / 190)
    assert s["compression_rate_mean"] == pytest.approx((2 + 3 + 1) / 3)
    assert s["tokens_saved"] == 250 and s["cache_hit_rate"] == pytest.approx(0.25)
    assert s["per_turn_seconds"]["mean"] == pytest.approx(2.0) and s["turns_per_second"] == pytest.approx(1.0)
    assert s["skipped_turns"] == 2 and s["prefilled_tokens"] == 190


def test_other_tasks_are_rejected(dataset, tmp_path):
    from icae.config import ConfigError

    args = [a if not a.startswith("task=") else "task=qa" for a in common(dataset, "tiny-qwen2", "icae", tmp_path)]
    with pytest.raises(ConfigError, match="'trajectories'"):
        inference_trajectories.main(args)
    short = common(dataset, "tiny-qwen2", "icae", tmp_path) + ["max_history_tokens=50", "max_steps=1"]
    with pytest.raises(ConfigError, match="no training trajectory fits"):
        finetune_trajectories.main(short)


def test_interrupted_fine_tuning_resumes_to_the_same_weights(dataset, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            CountSteps.steps += 1

    def run(out, steps, *extra):
        CountSteps.steps = 0
        args = common(dataset, "tiny-qwen2", "icae", out) + [
            f"max_steps={steps}", "per_device_train_batch_size=2", "learning_rate=1e-3", "lr_scheduler_type=constant",
            "save_strategy=steps", "save_steps=1", "disable_tqdm=true", *extra]
        return load_file(str(finetune_trajectories.main(args, callbacks=[CountSteps()]) / "model.safetensors"))

    straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 2)  # "interrupted" after step 2, checkpoints on disk
    resumed = run(tmp_path / "b", 3, "resume_from_checkpoint=true")
    assert CountSteps.steps == 1  # it went on from checkpoint-2 rather than starting again
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6), name


def test_two_process_fine_tuning(dataset, tmp_path):
    """Span rows (Python objects, not tensors) pass through DistributedDataParallel: 2 CPU processes with gloo."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.training.test_pretraining import _free_port

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "icae/configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           "-m", "icae.scripts.finetune_trajectories",
           *common(dataset, "tiny-qwen2", "icae", tmp_path / "run"), "max_steps=2", "per_device_train_batch_size=1",
           "save_strategy=no", "disable_tqdm=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("fine-tuned on") == 2  # both ranks trained
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_position_identifiers_run_end_to_end(dataset, tmp_path, name):
    """Slots take the positions their observation held, so position ids run past the (shorter) decoder row."""
    args = common(dataset, name, "icae", tmp_path) + ["use_position_identifiers=true", f"output_path={tmp_path}"]
    result = inference_trajectories.main(args)
    assert result["num_turns"] == 10 and result["compression_rate_total"] > 1.2


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_kept_kv_cache_matches_reprefilling_each_history(dataset, tmp_path, name):
    """Both inference modes generate the same turns; the kept cache prefills each position once, and re-prefilling
    reads earlier observations' slots back from the slot cache (hits) instead of compressing them again."""
    args = common(dataset, name, "icae", tmp_path) + [f"output_path={tmp_path}", "teacher_forcing=false"]
    kept = inference_trajectories.main(args + ["reuse_kv_cache=true"])
    kept_rows = Path(kept["predictions_path"]).read_text().splitlines()
    full = inference_trajectories.main(args + ["reuse_kv_cache=false"])
    full_rows = Path(full["predictions_path"]).read_text().splitlines()
    assert kept["predictions_path"] != full["predictions_path"]  # the second run never overwrites the first
    assert [json.loads(r)["prediction"] for r in kept_rows] == [json.loads(r)["prediction"] for r in full_rows]
    assert kept["turn"] == pytest.approx(full["turn"])
    assert kept["observations_compressed"] == full["observations_compressed"]
    assert kept["cache_hits"] == 0 < full["cache_hits"]
    assert kept["prefilled_tokens"] < full["prefilled_tokens"]  # each position once, against every history in full
