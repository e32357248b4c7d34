import json

from icae.scripts import bench_serve


def test_the_load_benchmark_reports_both_model_types(tmp_path):
    out = tmp_path / "serve.json"
    result = bench_serve.main(["--seconds", "2", "--clients", "2", "--trajectories", "2", "--max_tokens", "2",
                               "--out", str(out), "restore_from=null", "model_max_length=2048"])
    assert json.loads(out.read_text()) == result
    icae, llm = result["results"]["icae"], result["results"]["llm"]
    assert icae["requests"] > 0 and llm["requests"] > 0 and icae["errors"] == llm["errors"] == 0
    assert llm["tokens_saved_total"] == 0 < icae["tokens_saved_total"]  # the full context saves nothing
    assert icae["latency_p50"] <= icae["latency_p95"] <= icae["latency_p99"]
    assert 0 <= icae["prefix_cache_hits_total"] <= icae["requests_total"]
    assert icae["prompt_tokens_total"] - icae["decoder_positions_total"] == icae["tokens_saved_total"]
    for r in (icae, llm):  # no request generated more than --max_tokens tokens
        assert 0 < r["completion_tokens_total"] <= 2 * r["requests"]

    again = bench_serve.main(["--seconds", "1", "--clients", "1", "--trajectories", "2", "--max_tokens", "1",
                              "--out", str(out), "restore_from=null", "model_max_length=2048"])
    assert json.loads(out.read_text()) == result  # the first run's file is kept
    assert json.loads((tmp_path / "serve_2.json").read_text()) == again


def test_each_backend_gets_its_own_icae_server_with_the_engine_flags(tmp_path, monkeypatch):
    started = []

    def fake_run_one(config_path, overrides, convs, args, flags=()):
        started.append((tuple(flags), "model_type=llm" in overrides))
        return {"requests": 1, "requests_per_second": 1.0, "latency_p50": 0.1, "latency_p95": 0.1, "latency_p99": 0.1,
                "peak_rss_mib": 1.0, **{k: 1.0 for k in bench_serve.SERVER_COUNTERS}}

    monkeypatch.setattr(bench_serve, "run_one", fake_run_one)
    result = bench_serve.main(["--backends", "torch", "llamacpp", "--weights", "q8_0", "--seconds", "1",
                               "--trajectories", "1", "--out", str(tmp_path / "s.json")])
    assert list(result["results"]) == ["icae", "icae (llamacpp)", "llm"]
    assert started == [((), False), (("--backend", "llamacpp", "--weights", "q8_0"), False), ((), True)]
