import json

from icae.scripts import demo


def test_demo_pipeline_writes_before_after_and_baseline(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(
        json.dumps({"text": "\n".join(f"def h{i}_{j}(a):\n    return a - {j}\n" for j in range(30))}) + "\n"
        for i in range(6)))
    result = demo.main([
        f"dataset_repo={corpus}", f"train_output_file={tmp_path / 'train'}", f"eval_output_file={tmp_path / 'eval'}",
        f"output_dir={tmp_path / 'run'}", f"output_path={tmp_path / 'metrics'}", "max_steps=6", "eval_steps=3",
        "save_steps=3", "eval_size=8", "eval_ae_num_samples=2", "per_device_train_batch_size=4", "lora_r=8",
    ])
    written = json.loads((tmp_path / "metrics" / "demo_tiny-qwen2-lm.json").read_text())
    for key in ("before", "after", "no_memory_before", "no_memory_after"):
        assert {"ae_loss", "ae_token_accuracy", "ae_bleu1", "ae_exact_match"} <= set(written[key])
    assert result["steps"] == 6 and written["examples"] and written["data"]["eval_samples"] == 8
    assert (tmp_path / "metrics" / "demo_tiny-qwen2-lm_loss.png").stat().st_size > 1000
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
