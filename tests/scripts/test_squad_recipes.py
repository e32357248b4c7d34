import json
from pathlib import Path

import pytest

from icae.data.squad import write_fixture
from icae.scripts import finetune_SQuAD, inference_SQuAD


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("squad"), n_train=6, n_eval=3, seed=0, version="2.0")


def common(train, dev, family, model_type, out):
    return [f"model_name_or_path={family}", f"model_type={model_type}", "fixed_mem_size=8", "lora_r=8",
            "lora_alpha=16", "lora_dropout=0.0", f"dataset_repo={train}", f"eval_dataset_repo={dev}",
            "max_out_length=6", "per_device_eval_batch_size=4", "use_cpu=true", "report_to=none", f"output_dir={out}"]


@pytest.mark.parametrize("model_type", ["icae", "llm"])
def test_finetune_then_inference(fixture_files, tmp_path, family, model_type):
    if family == "tiny-qwen3":
        pytest.skip("the recipes are checked on Qwen2 and Mistral; Qwen3 is covered by the model tests")
    train, dev = fixture_files
    args = common(train, dev, family, model_type, tmp_path / "run")
    final = finetune_SQuAD.main(args + ["task=qa", "max_steps=4", "per_device_train_batch_size=4",
                                        "learning_rate=1e-3", "save_strategy=no", "disable_tqdm=true"])
    assert (final / "model.safetensors").is_file()
    result = inference_SQuAD.main(args + ["task=qa", f"restore_from={final}", f"output_path={tmp_path / 'out'}",
                                          "train=false"])
    stem = f"squad_qa_{model_type}_{family}_run-final"
    assert Path(result["metrics_path"]).name == f"{stem}_metrics.json"
    metrics = json.loads(Path(result["metrics_path"]).read_text())
    rows = [json.loads(line) for line in Path(result["predictions_path"]).read_text().splitlines()]
    assert metrics["num_samples"] == len(rows) == 15  # 3 articles x (4 answerable + 1 unanswerable)
    assert {"exact_match", "f1", "bleu1", "has_answer_f1", "no_answer_f1", "compression_rate_total",
            "compression_seconds", "generation_seconds", "per_sample_seconds", "samples_per_second"} <= set(metrics)
    assert metrics["config"]["restore_from"] == str(final)
    assert {"id", "question", "gold", "prediction", "exact_match", "f1", "bleu1", "token_accuracy",
            "token_accuracy_no_memory"} <= set(rows[0])
    assert metrics["f1"] == pytest.approx(sum(r["f1"] for r in rows) / len(rows))
    # The original tool's names beside this project's: its QA task is "lm".
    assert (metrics["task"], metrics["model_type"], metrics["restore_from"]) == ("lm", model_type, str(final))
    assert (metrics["mean_em"], metrics["mean_f1"], metrics["mean_bleu"]) == (metrics["exact_match"], metrics["f1"],
                                                                             metrics["bleu1"])
    if model_type == "icae":
        assert metrics["compression_rate_total"] > 2  # ~4x on contexts of 30+ tokens
        # its decoder also reads the contexts as tokens: the full-context end of "context value kept"
        assert metrics["token_accuracy_full_context"] == pytest.approx(
            sum(r["token_accuracy_full_context"] for r in rows) / len(rows))
        assert "context_value_kept" in metrics
    else:
        assert metrics["compression_rate_total"] == 1.0
        assert "context_value_kept" not in metrics and "token_accuracy_full_context" not in rows[0]
    assert result["recipe_task"] == "qa" and result["task"] == "lm"  # the original tool calls its QA task "lm"


@pytest.mark.parametrize("model_type", ["icae", "llm"])
def test_ae_inference_reconstructs_each_context_once(fixture_files, tmp_path, model_type):
    train, dev = fixture_files
    result = inference_SQuAD.main(common(train, dev, "tiny-qwen2", model_type, tmp_path / "run")
                                  + ["task=ae", f"output_path={tmp_path / 'out'}", "num_samples=7"])
    assert result["num_samples"] == 2  # 7 questions over 2 distinct contexts
    assert {"bleu1", "exact_match"} <= set(result)


def test_inference_rejects_other_tasks(fixture_files, tmp_path):
    from icae.config import ConfigError

    with pytest.raises(ConfigError, match="'ae' or 'qa'"):
        inference_SQuAD.main(common(*fixture_files, "tiny-qwen2", "icae", tmp_path) + ["task=lm"])
