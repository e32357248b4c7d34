"""The agent benchmark's metrics against values computed by hand."""

import pytest

from icae.metrics.agent import first_step_over, kv_cache_mib, kv_shape, summarize, wilson_interval


def test_wilson_interval_by_hand():
    # z = 1.96, z^2/n = 0.384146 at n = 10. 0/10: [0, (z^2/n) / (1 + z^2/n)] = [0, 0.277533]; 10/10 mirrors it.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    # 5/10: centre 0.5, half width 1.96 / 1.384146 * sqrt(0.025 + 0.0096037) = 0.2634 (the textbook 0.2366-0.7634).
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # 8/10: centre (0.8 + 0.192073) / 1.384146 = 0.716740, half 1.41600 * sqrt(0.016 + 0.0096037) = 0.226577.
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 1/1: z^2 = 3.841459; centre (1 + 1.920729) / 4.841459 = 0.603275, half 1.96 / 4.841459 * 0.98 = 0.396725.
    assert wilson_interval(1, 1) == pytest.approx((0.2065, 1.0), abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_first_step_over_a_window_on_a_made_sequence():
    positions = [850, 1040, 1230, 1420, 1610, 1800, 1990, 2180, 2370]
    assert first_step_over(positions, 2048) == 8  # 1990 fits, 2180 does not: 7 steps fit
    assert first_step_over(positions, 1990) == 8  # exactly the window still fits
    assert first_step_over(positions, 1989) == 7
    assert first_step_over(positions, 800) == 1  # not even the first request
    assert first_step_over(positions, 4096) is None and first_step_over([], 2048) is None
    with pytest.raises(ValueError):
        first_step_over(positions, 0)


def test_kv_cache_mib_on_made_configs():
    tiny = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 128}
    assert kv_shape(tiny) == (2, 2, 32)
    # 2048 positions x 2 layers x 2 (K, V) x 2 heads x 32 dims x 4 bytes = 2048 x 1,024 bytes = 2 MiB.
    assert kv_cache_mib(2048, *kv_shape(tiny), 4) == pytest.approx(2.0)
    # Qwen2.5-0.5B: 24 layers, 2 KV heads, head dim 896 / 14 = 64, bfloat16: 24 x 2 x 2 x 64 x 2 = 12,288 bytes a
    # position, so 1,000 positions are 12,288,000 bytes = 11.71875 MiB.
    qwen = {"num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_size": 896}
    assert kv_cache_mib(1000, *kv_shape(qwen), 2) == pytest.approx(11.71875)
    # head_dim given explicitly (not hidden / heads), no KV heads (multi-head: all of them), nested text_config
    assert kv_shape({"text_config": {"num_hidden_layers": 3, "num_attention_heads": 8, "hidden_size": 512,
                                     "head_dim": 128}}) == (3, 8, 128)


def _episode(success, steps, match, seconds, positions, tokens=None):
    return {"success": success, "steps": steps, "reference_match": match, "seconds": seconds,
            "requests": [{"prompt_tokens": t, "decoder_positions": p, "kv_mib": None if p is None else p / 1000}
                         for p, t in zip(positions, tokens or positions)]}


def test_summarize_by_hand():
    episodes = [_episode(True, 5, 1.0, 2.0, [100, 900, 1100], [100, 1500, 2000]),
                _episode(False, 4, 0.25, 4.0, [300, 700, 1200, 1300]),
                _episode(False, 2, 0.0, 3.0, [None, None])]
    s = summarize(episodes, window=1000)
    assert (s["episodes"], s["successes"], s["success_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert s["success_ci95"] == pytest.approx(list(wilson_interval(1, 3)))
    assert s["mean_steps"] == pytest.approx(11 / 3) and s["reference_match"] == pytest.approx(1.25 / 3)
    assert s["leading_right"] is None  # episodes recorded without it (older legs): not read as 0
    assert summarize([e | {"leading_right": k} for e, k in zip(episodes, (5, 1, 0))], 1000)["leading_right"] == 2
    # the means run over requests that counted them: 7 token counts, 7 position counts
    assert s["mean_prompt_tokens"] == pytest.approx((100 + 1500 + 2000 + 300 + 700 + 1200 + 1300) / 7)
    assert s["mean_decoder_positions"] == pytest.approx((100 + 900 + 1100 + 300 + 700 + 1200 + 1300) / 7)
    assert s["peak_decoder_positions"] == 1300 and s["peak_kv_mib"] == pytest.approx(1.3)
    assert s["seconds_per_task"] == pytest.approx(3.0)
    # episode 1 passes 1000 at its 3rd request (2 steps fit), episode 2 at its 3rd too; episode 3 counted nothing
    assert s["steps_fit"] == [2, 2] and s["episodes_over_window"] == 2
    assert summarize(episodes[:1], window=5000)["steps_fit"] == [None]
    refused = _episode(False, 3, 0.0, 1.0, [1000, 2000, 3000]) | {"refused_at": 4}  # the server refused step 4
    assert summarize([refused], window=5000)["steps_fit"] == [3]
    assert summarize([refused], window=2500)["steps_fit"] == [2]  # passed the window before the server refused
    with pytest.raises(ValueError):
        summarize([], 2048)


def test_edges_the_made_cases_do_not_reach():
    # n/n at n = 16: the formula's upper end is 1 plus a rounding error; the interval stays inside [0, 1]
    assert wilson_interval(16, 16)[1] == 1.0 and wilson_interval(0, 16)[0] == 0.0
    with pytest.raises(ValueError, match=r"0 <= successes <= n and n >= 1, got 3/2"):
        wilson_interval(3, 2)
    assert first_step_over([1, 2], 1) == 2  # a window of one position is a window
    with pytest.raises(ValueError, match="window must be at least 1, got 0"):
        first_step_over([1], 0)
    head_dim = kv_shape({"num_hidden_layers": 1, "num_attention_heads": 3, "hidden_size": 96})[2]
    assert head_dim == 32 and isinstance(head_dim, int)  # a count of dimensions, not 32.0
    with pytest.raises(ValueError, match="^no episode to summarize$"):
        summarize([], 2048)


def test_a_summary_without_counts_says_none_and_names_its_window():
    s = summarize([_episode(False, 2, 0.0, 1.0, [None, None], [None, None])], window=2048)
    assert (s["mean_prompt_tokens"], s["mean_decoder_positions"], s["peak_decoder_positions"], s["peak_kv_mib"]) == (
        None, None, None, None)
    assert s["window"] == 2048 and s["steps_fit"] == []
