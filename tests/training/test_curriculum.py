"""The multi-segment curriculum: its stages are what the config says, and each stage's data has its length."""

import json

import pytest

from icae.config import ConfigError, load_config
from icae.data.prepare_data_for_pretraining import build_samples
from icae.models.loading import load_tokenizer
from icae.training import curriculum
from tests.data.test_prepare import config_for, corpus  # noqa: F401 - the corpus fixture


def test_stages_follow_the_config(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [64, 128, 256], "curriculum_steps": [30, 20, 10],
                             "curriculum_batch_sizes": [8, 4, 2], "fixed_mem_size": 4, "mean_compression_rate": 4,
                             "restore_from": None, "curriculum_mix_from": 1,
                             "extra_dataset_repos": ["more.jsonl"], "segment_sample_ratio": 0.25})
    stages = curriculum.plan(cfg, tmp_path)
    assert [(s.index, s.context_length, s.max_steps, s.batch_size) for s in stages] == [
        (0, 64, 30, 8), (1, 128, 20, 4), (2, 256, 10, 2)]
    assert [s.directory.name for s in stages] == ["stage0-64", "stage1-128", "stage2-256"]
    assert not any(s.done for s in stages)
    first = curriculum.stage_config(cfg, stages[0], None)
    second = curriculum.stage_config(cfg, stages[1], str(stages[0].final))
    assert (first.pretrain.context_length, first.training.steps, first.training.per_device_train_batch_size) == (64, 30, 8)
    assert (second.pretrain.context_length, second.training.steps) == (128, 20)
    assert second.model.restore_from == str(tmp_path / "stage0-64" / "final")
    assert second.training.output_dir == str(tmp_path / "stage1-128" / "run")
    assert second.pretrain.train_output_file == str(tmp_path / "stage1-128" / "data" / "train")
    # Stage 0 is before curriculum_mix_from: code alone; stage 1 reads the extra sources and segment windows.
    assert (first.pretrain.extra_dataset_repos, first.pretrain.segment_sample_ratio) == ([], 0.0)
    assert (second.pretrain.extra_dataset_repos, second.pretrain.segment_sample_ratio) == (["more.jsonl"], 0.25)
    assert second.pretrain.curriculum_lengths == []  # a stage is an ordinary run
    assert second.training.per_device_train_batch_size == 4
    assert second.pretrain.eval_output_file == str(tmp_path / "stage1-128" / "data" / "eval")
    assert (second.pretrain.curriculum_mix_from, second.pretrain.curriculum_segment_sample_ratios) == (0, [])


def test_a_late_stage_can_go_back_to_a_shorter_length_with_its_own_segment_ratio(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [64, 256, 128], "curriculum_steps": [3, 2, 1],
                             "curriculum_segment_sample_ratios": [0.0, 0.2, 0.5], "segment_sample_ratio": 0.1,
                             "curriculum_mix_from": 1, "restore_from": None})
    stages = curriculum.plan(cfg, tmp_path)
    assert [s.directory.name for s in stages] == ["stage0-64", "stage1-256", "stage2-128"]
    ratios = [curriculum.stage_config(cfg, s, None).pretrain.segment_sample_ratio for s in stages]
    assert ratios == [0.0, 0.2, 0.5]  # stage 0 is before curriculum_mix_from: no segment windows whatever it says
    without = load_config(None, {"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1],
                                 "segment_sample_ratio": 0.3, "curriculum_mix_from": 1, "restore_from": None})
    assert [curriculum.stage_config(without, s, None).pretrain.segment_sample_ratio
            for s in curriculum.plan(without, tmp_path)] == [0.0, 0.3]


def test_a_late_stage_can_read_less_of_the_extra_text(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [64, 128, 128], "curriculum_steps": [3, 2, 1],
                             "curriculum_extra_dataset_shares": [0.3, 0.3, 0.1], "extra_dataset_share": 0.25,
                             "extra_dataset_repos": ["more.jsonl"], "curriculum_mix_from": 1, "restore_from": None})
    stages = [curriculum.stage_config(cfg, s, None).pretrain for s in curriculum.plan(cfg, tmp_path)]
    assert [(p.extra_dataset_repos, p.extra_dataset_share) for p in stages] == [
        ([], 0.3), (["more.jsonl"], 0.3), (["more.jsonl"], 0.1)]  # stage 0 reads no extra text whatever its share
    assert stages[2].curriculum_extra_dataset_shares == []  # a stage is an ordinary run
    without = load_config(None, {"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_mix_from": 1,
                                 "extra_dataset_share": 0.4, "extra_dataset_repos": ["more.jsonl"], "restore_from": None})
    assert [curriculum.stage_config(without, s, None).pretrain.extra_dataset_share
            for s in curriculum.plan(without, tmp_path)] == [0.4, 0.4]


def test_a_stage_extra_share_sets_how_much_code_is_read(corpus, tmp_path):  # noqa: F811 - the fixture
    extra = tmp_path / "more.jsonl"
    extra.write_text("".join(json.dumps({"text": "$ ls -la\n" + "drwxr-xr-x  2 user user 4096 file_%d.py\n" % i * 8})
                             + "\n" for i in range(2)))
    tok = load_tokenizer("tiny-qwen2-lm")
    infos = []
    for share in (0.5, 0.2):
        cfg = config_for(tmp_path, corpus, context_length=64, extra_dataset_repos=[str(extra)],
                         extra_dataset_share=share, eval_size=0, token_num=None)
        infos.append(build_samples(cfg, tok, show_progress=False)[2])
    for info, share in zip(infos, (0.5, 0.2)):
        # the code budget is extra * (1 - share) / share tokens: the extra text is `share` of what is read
        window = info["context_length"] + info["continuation_length"]  # read in whole windows, a document's last one cut
        assert info["tokens"] - info["extra_tokens"] < round(info["extra_tokens"] * (1 - share) / share) + 2 * window
    assert infos[1]["tokens"] > infos[0]["tokens"]  # a smaller extra share reads more code
    assert [(i["extra_dataset_share"], i["segment_sample_ratio"]) for i in infos] == [(0.5, 0.0), (0.2, 0.0)]  # recorded


def test_no_curriculum_is_one_stage_at_the_context_length(tmp_path):
    cfg = load_config(None, {"context_length": 96, "max_steps": 7, "per_device_train_batch_size": 3})
    assert [(s.context_length, s.max_steps, s.batch_size) for s in curriculum.plan(cfg, tmp_path)] == [(96, 7, 3)]
    one_segment = load_config(None, {"fixed_mem_size": 4, "mean_compression_rate": 8, "max_steps": 2})
    assert [s.context_length for s in curriculum.plan(one_segment, tmp_path)] == [32]  # k * rate tokens


@pytest.mark.parametrize("values, problem", [
    ({"curriculum_lengths": [64, 128], "curriculum_steps": [10]}, "one value per curriculum_lengths"),
    ({"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_segment_sample_ratios": [0.2]},
     "one value per"),
    ({"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_segment_sample_ratios": [0.2, 1.0]},
     "numbers in \\[0, 1\\)"),
    ({"curriculum_lengths": [64, 0], "curriculum_steps": [1, 1]}, "integers >= 1"),
    ({"curriculum_lengths": [64], "curriculum_steps": [5], "curriculum_batch_sizes": [1, 2]}, "one value per"),
    ({"segment_sample_ratio": 1.0}, "segment_sample_ratio"),
    ({"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_extra_dataset_shares": [0.2]},
     "curriculum_extra_dataset_shares \\(1, or none\\) must give one value per"),
    ({"curriculum_lengths": [64, 128], "curriculum_steps": [1, 1], "curriculum_extra_dataset_shares": [0.2, 0.0]},
     "curriculum_extra_dataset_shares must hold numbers in \\(0, 1\\)"),
])
def test_bad_curricula_are_refused(values, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(None, values)


def test_stage_data_has_the_stage_length_and_the_mix(tmp_path, corpus):  # noqa: F811
    tok = load_tokenizer("tiny-qwen2")
    extra = tmp_path / "tool_outputs.jsonl"
    extra.write_text("\n".join(json.dumps({"text": f"$ ls -la\ntotal {i}\n" + "-rw-r--r-- 1 root root 10 file.py\n" * 9})
                               for i in range(6)) + "\n")
    base = {"min_len": 48, "eval_size": 2, "fixed_mem_size": 4, "mean_compression_rate": 4}
    for length in (48, 96):
        cfg = config_for(tmp_path, corpus, context_length=length, **base)
        train, held, info = build_samples(cfg, tok, show_progress=False)
        lengths = [len(s["input_ids"]) for s in train + held]
        assert max(lengths) == length and min(lengths) >= 48
    plain, _, _ = build_samples(config_for(tmp_path, corpus, context_length=96, **base), tok, show_progress=False)
    mixed, held, info = build_samples(config_for(tmp_path, corpus, context_length=96, extra_dataset_repos=[str(extra)],
                                                 segment_sample_ratio=0.25, **base), tok, show_progress=False)
    texts = [tok.decode(s["input_ids"]) for s in mixed]
    assert sum("-rw-r--r-- 1 root root" in t for t in texts) >= 6 and not any("-rw-r--r--" in tok.decode(s["input_ids"])
                                                                              for s in plain)  # tool outputs joined
    segment = [s for s in mixed if len(s["input_ids"]) == 16]  # one-segment windows: fixed_mem_size * rate tokens
    assert info["segment_samples"] == len(segment) == round((len(mixed) - len(segment)) * 0.25 / 0.75)
    held_text = {tuple(s["input_ids"]) for s in held}
    assert not any(tuple(s["input_ids"][:16]) == h[:16] for s in segment for h in held_text)  # never held-out text


def test_extra_dataset_share_cuts_the_main_source(tmp_path, corpus):  # noqa: F811
    tok = load_tokenizer("tiny-qwen2")
    extra = tmp_path / "tool_outputs.jsonl"
    extra.write_text("\n".join(json.dumps({"text": "-rw-r--r-- 1 root root 10 file.py\n" * 12}) for _ in range(3)) + "\n")
    base = {"min_len": 4, "eval_size": 2, "extra_dataset_repos": [str(extra)], "context_length": 32}
    whole = build_samples(config_for(tmp_path, corpus, **base), tok, show_progress=False)[2]
    half = build_samples(config_for(tmp_path, corpus, extra_dataset_share=0.5, **base), tok, show_progress=False)[2]
    assert whole["extra_tokens"] == half["extra_tokens"] > 0
    main_whole, main_half = whole["tokens"] - whole["extra_tokens"], half["tokens"] - half["extra_tokens"]
    # Documents are read until the main source reaches the extra tokens (share 0.5): the last one crosses the line.
    assert half["extra_tokens"] <= main_half < main_whole and half["documents"] < whole["documents"]
