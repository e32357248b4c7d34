import json
import statistics
import time

import pytest
import torch

from icae.benchmarks.measure import PeakMemory
from icae.scripts import bench
from icae.models.icae import ICAE
from tests.conftest import make_model, png_size


def test_bench_runs_and_reports_every_field(tmp_path):
    result = bench.main([
        "model_name_or_path=tiny-qwen2", "fixed_mem_size=8", "lora_r=4", "bench_context_lengths=[64,128]",
        "bench_compression_rates=[4,8]", "bench_batch_sizes=[1,2]", "bench_new_tokens=[4]", "bench_repeats=2",
        "bench_train_batch_sizes=[1,2]", "bench_train_context_length=32", f"output_path={tmp_path}",
        "bench_device=cpu",
    ])
    assert len(result["points"]) == 2 * 2 * 2
    for p in result["points"]:
        assert len(p["all_seconds"]["full"]) == len(p["all_seconds"]["icae"]) == 2  # interleaved repeats
        # The reported figures are the medians of the repeats (not the first, not the mean of something else).
        for case in ("full", "icae", "cached"):
            assert p[f"{case}_seconds"] == statistics.median(p["all_seconds"][case])
        assert all(i >= c for i, c in zip(p["all_seconds"]["icae"], p["all_seconds"]["compress"]))  # icae includes it
        # Slots follow the segment arithmetic: ceil(L / (k * rate)) segments of k = 8 slots.
        assert p["memory_slots"] == 8 * -(-p["context_length"] // (8 * p["compression_rate"]))
        assert p["icae_kv_cache_mib"] < p["full_kv_cache_mib"]
    assert [t["batch_size"] for t in result["training"]] == [1, 2]
    assert all(t["tokens_per_second"] > 0 and t["target_tokens"] > 0 for t in result["training"])
    written = json.loads((tmp_path / "bench_tiny-qwen2.json").read_text())
    assert written["points"][0]["context_length"] == 64
    assert png_size(tmp_path / "bench_tiny-qwen2.png") == (1800, 380)  # 2 rates x 2 batches: 4 panels of 4.5 in, 100 dpi
    assert "| 128 | 8x | 2 | 4 |" in bench.markdown_table(result)


def test_kv_cache_size_is_exact():
    model = make_model()  # tiny Qwen2: 2 layers, 2 KV heads, head dim 32, float32
    assert isinstance(model, ICAE)
    assert bench.kv_cache_mib(model, positions=100, batch=3) == pytest.approx(2 * 2 * 2 * 32 * 4 * 100 * 3 / 2**20)


def test_bench_config_errors():
    from icae.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, {"bench_context_lengths": [], "bench_repeats": 0, "bench_device": "tpu"})
    assert len(err.value.problems) == 3


def test_decoding_from_slots_costs_what_decoding_from_tokens_costs():
    """One prefill, then one single-position step per new token, whether the prefix is slots or ordinary tokens;
    the slots are never recomputed while generating (no encoder pass inside generate)."""
    import torch

    model = make_model(fixed_mem_size=8)
    calls = []
    hook = model.backbone.register_forward_hook(lambda mod, args, kwargs, out: calls.append(
        kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        context = list(range(10, 74))  # 64 tokens -> 2 segments -> 16 slots
        memory = model.compress([context])
        calls.clear()
        model.generate(memory, [[5, 6]], mode="ft", max_new_tokens=5, stop_token_ids=[])
        from_slots = list(calls)
        calls.clear()
        same_length = model.token_memory([torch.tensor(context[:16])])  # 16 ordinary tokens
        model.generate(same_length, [[5, 6]], mode="ft", max_new_tokens=5, stop_token_ids=[])
        from_tokens = list(calls)
    finally:
        hook.remove()
    assert from_slots == from_tokens == [16 + 1 + 2, 1, 1, 1, 1]


def test_peak_memory_sees_a_known_allocation():
    meter = PeakMemory(torch.device("cpu"))
    with meter.measure():
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched
        time.sleep(0.1)  # held long enough for the 2 ms sampler to see it, even on a busy machine
        del block
    assert 60 <= meter.peak_mib < 200
