"""The training record of a curriculum build names each stage's shares, as the legs carry them."""

from icae.config import load_config
from icae.training.record import write_record


def _legs(shares):
    return [{"stage": i, "context_length": n, "steps": 10, "batch_size": 2, "train_seconds": 120.0,
             "segment_sample_ratio": r, "extra_dataset_share": s}
            for i, (n, r, s) in enumerate(zip((128, 2048), (0.0, 0.5), shares))]


def test_one_context_per_step_is_said_in_the_singular(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [2048], "curriculum_steps": [10], "restore_from": None})
    legs = [{"stage": 0, "context_length": 2048, "steps": 10, "batch_size": 1, "train_seconds": 60.0}]
    write_record(tmp_path, cfg, 4, 60.0, [], "python -m icae.scripts.build_compressor --rate 4", legs)
    assert "- stage 0: 10 steps of 1 context of 2048 tokens, 1.0 min\n" in (tmp_path / "TRAINING.md").read_text()


def test_a_record_names_each_stage_tool_output_share(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [128, 2048], "curriculum_steps": [10, 10],
                             "curriculum_extra_dataset_shares": [0.3, 0.1], "curriculum_segment_sample_ratios": [0.0, 0.5],
                             "extra_dataset_repos": ["tool_outputs_train.jsonl"], "extra_dataset_share": 0.3,
                             "curriculum_mix_from": 1, "restore_from": "tiny-icae-4x-segment"})
    write_record(tmp_path, cfg, 4, 240.0, [], "python -m icae.scripts.build_compressor --rate 4", _legs([None, 0.1]))
    text = (tmp_path / "TRAINING.md").read_text()
    assert "(generated tool outputs, each stage's share below)" in text
    assert "- stage 1: 10 steps of 2 contexts of 2048 tokens, one-segment windows 0.5 of the samples, tool outputs 0.1 " \
           "of the tokens, 2.0 min\n" in text
    assert "- stage 0: 10 steps of 2 contexts of 128 tokens, one-segment windows 0.0 of the samples, 2.0 min\n" in text


def test_without_stage_shares_the_record_gives_the_one_share(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [128, 2048], "curriculum_steps": [10, 10],
                             "extra_dataset_repos": ["tool_outputs_train.jsonl"], "extra_dataset_share": 0.3,
                             "curriculum_mix_from": 1, "restore_from": "tiny-icae-4x-segment"})
    write_record(tmp_path, cfg, 4, 240.0, [], "python -m icae.scripts.build_compressor --rate 4", _legs([None, 0.3]))
    text = (tmp_path / "TRAINING.md").read_text()
    assert "(generated tool outputs, 0.3 of the tokens)" in text
    assert "tool outputs 0.3 of the tokens, 2.0" not in text  # said once, not per stage


def test_a_stage_trained_on_an_accelerator_says_so_and_cpu_stages_do_not(tmp_path):
    cfg = load_config(None, {"curriculum_lengths": [128, 2048], "curriculum_steps": [10, 10], "restore_from": None})
    legs = _legs([None, None])
    legs[0]["device"], legs[1]["device"] = "cpu (2 threads)", "NVIDIA H200"
    write_record(tmp_path, cfg, 8, 240.0, [], "python -m icae.scripts.build_compressor --rate 8", legs)
    text = (tmp_path / "TRAINING.md").read_text()
    assert "2048 tokens, one-segment windows 0.5 of the samples, 2.0 min on NVIDIA H200\n" in text
    assert "128 tokens, one-segment windows 0.0 of the samples, 2.0 min\n" in text
    assert "h of training in all: the stages marked with their accelerator there, the rest on this machine's CPU" in text
    del legs[1]["device"]  # a stage log written before devices were recorded: this machine's CPU
    write_record(tmp_path, cfg, 8, 240.0, [], "python -m icae.scripts.build_compressor --rate 8", legs)
    text = (tmp_path / "TRAINING.md").read_text()
    assert "H200" not in text and "h of training on this machine" in text
