import json
from pathlib import Path

import pytest

from icae.data.build_repoqa import build_dataset, write_dataset
from icae.scripts import finetune_repoqa, inference_repoqa
from tests.data.test_build_repoqa import CORE, UTIL


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("repoqa")
    pkg = root / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from toy.core import Scaler\n")
    (pkg / "util.py").write_text(UTIL + "".join(
        f'\n\ndef helper_{i}(items):\n    """Return item {i} of items, or None."""\n    if len(items) > {i}:\n'
        f"        return items[{i}]\n    return None\n" for i in range(6)))
    (pkg / "core.py").write_text(CORE)
    return write_dataset(build_dataset([pkg], seed=0), root / "toy.json.gz")  # 8 needles


def common(dataset, family, model_type, out):
    return [f"model_name_or_path={family}", f"model_type={model_type}", "task=repoqa", f"dataset_repo={dataset}",
            "fixed_mem_size=8", "lora_r=8", "lora_alpha=16", "lora_dropout=0.0", "code_context_size=96",
            "test_fraction=0.25", "max_out_length=8", "per_device_eval_batch_size=3", "use_cpu=true",
            "report_to=none", f"output_dir={out}", "seed=0"]


@pytest.mark.parametrize("model_type", ["icae", "llm"])
@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])
def test_finetune_then_inference(dataset, tmp_path, name, model_type):
    args = common(dataset, name, model_type, tmp_path / "run")
    final = finetune_repoqa.main(args + ["max_steps=2", "per_device_train_batch_size=3", "learning_rate=1e-3",
                                         "save_strategy=no", "disable_tqdm=true"])
    assert (final / "model.safetensors").is_file()
    result = inference_repoqa.main(args + [f"restore_from={final}", f"output_path={tmp_path / 'out'}", "train=false"])
    stem = f"repoqa_{model_type}_{name}_run-final"
    assert Path(result["metrics_path"]).name == f"{stem}_metrics.json"
    metrics = json.loads(Path(result["metrics_path"]).read_text())
    rows = [json.loads(line) for line in Path(result["predictions_path"]).read_text().splitlines()]
    assert metrics["num_samples"] == len(rows) == 2  # 25% of 8 needles held out
    assert set(metrics["pass_at"]) == {f"pass@{i / 10:.1f}" for i in range(11)}
    assert metrics["pass@0.8"] == metrics["pass_at"]["pass@0.8"] == metrics["pass_at_threshold_0.8"]
    assert metrics["mean_bleu"] == metrics["bleu1"] and metrics["model_name_or_path"] == name
    assert {"token_accuracy", "token_accuracy_no_memory", "loss", "loss_no_memory"} <= set(metrics)
    assert metrics["loss"] != metrics["loss_no_memory"]  # the baseline really drops the memory
    assert metrics["mean_similarity"] == pytest.approx(sum(r["similarity"] for r in rows) / 2)
    assert metrics["config"]["restore_from"] == str(final)
    assert {"task_id", "output", "code", "similarity", "best_needle", "retrieved", "gold", "context_tokens",
            "memory_slots", "compress_seconds"} <= set(rows[0])
    assert all(r["context_tokens"] <= 96 for r in rows)
    if model_type == "icae":
        assert metrics["compression_rate_total"] > 3.5  # 4x, up to segment rounding
    else:
        assert metrics["compression_rate_total"] == 1.0
    assert result["pass_at"] == metrics["pass_at"]


def test_fine_tuning_and_inference_share_a_disjoint_split(dataset, tmp_path):
    from icae.config import load_config
    from icae.data.repoqa import load_repoqa_task
    from icae.models.auto import layout_for
    from icae.models.loading import tiny_tokenizer

    config = load_config(None, common(dataset, "tiny-qwen2", "icae", tmp_path))
    split = load_repoqa_task(config, layout_for(config.model, tiny_tokenizer()))
    llm = load_config(None, common(dataset, "tiny-qwen2", "llm", tmp_path))
    again = load_repoqa_task(llm, layout_for(llm.model, tiny_tokenizer()))
    assert [t.task_id for t in split.test] == [t.task_id for t in again.test]
    assert not {t.task_id for t in split.train} & {t.task_id for t in split.test}
    assert len(split.train) + len(split.test) + split.info["skipped_needles"] == 8


def test_other_tasks_are_rejected(dataset, tmp_path):
    from icae.config import ConfigError

    args = common(dataset, "tiny-qwen2", "icae", tmp_path)
    with pytest.raises(ConfigError, match="'repoqa'"):
        inference_repoqa.main([a if not a.startswith("task=") else "task=qa" for a in args])
