import textwrap

import pytest
import yaml

from icae.config import Config, ConfigError, load_config, parse_overrides

ORIGINAL_TOOL_CONFIG = """
model_name_or_path: tiny-qwen2
model_type: icae
lora_r: 128
lora_dropout: 0.05
lora_target_modules: [q_proj, v_proj]
train: true
use_position_identifiers: false
do_compress: true
freeze_encoder: false
freeze_decoder: true
max_train_samples: 1000
max_eval_samples: 100
max_out_length: 64
dataset_repo: rajpurkar/squad
token_num: 1000000
min_len: 16
train_output_file: data/train.jsonl
eval_output_file: data/eval.jsonl
long_text_cache: data/cache.jsonl
eval_size: 100
fixed_mem_size: 256
mean_compression_rate: 4
min_tokens_for_lm: 64
leave_tokens_for_lm: 8
lm_ratio: 0.5
add_special_token_for_lm: true
restore_from: null
eval_ae_num_samples: 10
model_max_length: 5120
num_training_steps: 100
gradient_checkpointing: true
save_decoder: false
task: qa
num_samples: 50
use_cpu: true
teacher_forcing: true
output_dir: out
learning_rate: 1e-4
warmup_steps: 300
max_steps: 100
save_steps: 50
eval_strategy: steps
bf16: false
optim: adamw_torch
seed: 42
dataloader_num_workers: 0
max_grad_norm: 2.0
overwrite_output_dir: false
per_device_train_batch_size: 1
per_device_eval_batch_size: 1
gradient_accumulation_steps: 1
num_train_epochs: 3
logging_steps: 10
do_train: true
do_eval: true
eval_steps: 100
fp16: false
dataloader_pin_memory: false
dataloader_drop_last: true
restore_from: ""
use_position_identifiers: true
"""


def test_original_tool_config_loads_unchanged(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(ORIGINAL_TOOL_CONFIG)
    cfg = load_config(path)
    # Every key of the original's four configs, with their repeats (the later value wins, as in PyYAML there).
    assert cfg.model.fixed_mem_size == 256 and cfg.model.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.model.use_position_identifiers is True and cfg.model.restore_from == ""
    assert cfg.training.overwrite_output_dir is False and cfg.training.get("dataloader_drop_last") is True
    assert cfg.data.task == "qa" and cfg.pretrain.lm_ratio == 0.5 and cfg.inference.num_samples == 50
    # "1e-4" is a string to PyYAML; float fields accept it.
    assert cfg.training.get("learning_rate") == pytest.approx(1e-4)
    assert cfg.training.get("gradient_checkpointing") is True and cfg.training.seed == 42
    args = cfg.training_arguments()
    assert args.max_steps == 100 and args.learning_rate == pytest.approx(1e-4)


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """
            fixed_mem_size: 100
            lora_r: "eight"
            model_type: gpt
            not_a_key: 1
            learning_rate: fast
            restore_from: /nonexistent/checkpoint
            """
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    for needle in ["power of 2", "lora_r", "model_type", "not_a_key", "learning_rate"]:
        assert needle in msg, needle
    assert len(err.value.problems) == 5  # restore_from is resolved when the model is built (it may be a hub id)


def test_overrides_apply_after_the_file_and_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fixed_mem_size: 8\nlora_r: 4\n")
    cfg = load_config(path, ["fixed_mem_size=16", "--lora_target_modules=q_proj,k_proj", "--use_position_identifiers", "true"])
    assert cfg.model.fixed_mem_size == 16
    assert cfg.model.lora_r == 4
    assert cfg.model.lora_target_modules == ["q_proj", "k_proj"]
    assert cfg.model.use_position_identifiers is True


def test_bad_override_syntax_and_missing_file():
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_overrides(["fixed_mem_size"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")


def test_non_mapping_yaml_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


@pytest.mark.parametrize("k", [0, 3, 6, 100, -4, 8192, 2**40])
def test_fixed_mem_size_must_be_power_of_two(k):
    with pytest.raises(ConfigError, match="power of 2"):
        load_config(None, {"fixed_mem_size": k})


def test_bool_is_not_an_int_and_int_is_a_float():
    with pytest.raises(ConfigError, match="lora_r"):
        load_config(None, {"lora_r": True})
    assert load_config(None, {"lora_dropout": 0}).model.lora_dropout == 0.0


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, {"fixed_mem_size": 8, "learning_rate": 3e-4, "task": "lm"})
    cfg.save(tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again, Config)
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text())["fixed_mem_size"] == 8


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "icae" / "configs").glob("*.yaml"))
    assert configs, "no shipped configs"
    for path in configs:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# "), f"{path.name} must open with the command that runs it"
        load_config(path)


def test_yaml_no_is_a_strategy_and_resume_accepts_true():
    cfg = load_config(None, ["save_strategy=no", "eval_strategy=no", "resume_from_checkpoint=true"])
    assert cfg.training.extra == {"save_strategy": "no", "eval_strategy": "no"}
    assert cfg.training.resume_from_checkpoint is True
    with pytest.raises(ConfigError, match="output_dir"):
        load_config(None, ["output_dir=false"])


def test_lambda_key_is_accepted():
    assert load_config(None, {"lambda": 0.25}).pretrain.lm_lambda == 0.25
    with pytest.raises(ConfigError, match="lambda"):
        load_config(None, {"lambda": 1.5})


def test_choice_errors_list_the_choices_and_task_keys_are_checked():
    with pytest.raises(ConfigError) as e:
        load_config(None, {"trajectory_format": "chatml", "test_fraction": 1.0, "compress_roles": ["assistant"],
                           "needle_position_ratios": [1.5], "max_history_tokens": 0,
                           "max_assistant_turns": 0})
    msg = str(e.value)
    assert "6 problem(s)" in msg and "max_assistant_turns must be at least 1" in msg
    assert "trajectory_format: expected one of 'auto', 'messages', 'swe_smith', 'swe_agent', 'nebius'" in msg
    assert "test_fraction must be in [0, 1)" in msg and "assistant turns" in msg
    assert "needle_position_ratios" in msg and "max_history_tokens must be positive" in msg


def test_sections_validate_themselves_when_built_directly():
    from icae.config import ModelArguments, TrainingKeys

    with pytest.raises(ConfigError, match="fixed_mem_size must be a power of 2 from 1 to 4096, got 3"):
        ModelArguments(fixed_mem_size=3)
    with pytest.raises(ConfigError) as e:
        TrainingKeys(max_steps=-5, per_device_train_batch_size=0)
    assert len(e.value.problems) == 2
    args = ModelArguments(fixed_mem_size=8)
    with pytest.raises(Exception):  # frozen: a model's arguments cannot drift at run time
        args.mean_compression_rate = 2


@pytest.mark.parametrize("overrides, needle", [
    ({"max_steps": -5}, "max_steps must be -1"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
    ({"max_train_samples": -1}, "max_train_samples must be >= 1"),
    ({"eval_size": -3}, "eval_size must be >= 0"),
    ({"learning_rate": -1e-3}, "learning_rate must be >= 0"),
    ({"per_device_eval_batch_size": 0}, "per_device_eval_batch_size must be >= 1"),
    ({"max_out_length": 0}, "max_out_length must be >= 1"),
    ({"fixed_mem_size": 4096, "model_max_length": 4096}, "must be below model_max_length"),
    ({"qa_prompt_template": "Q:"}, "{question}"),
    ({"save_steps": 0}, "save_steps must be positive"),
])
def test_values_that_cannot_work_are_refused(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("{", "\\{").replace("}", "\\}")):
        load_config(None, overrides)


def test_an_empty_config_file_says_what_a_recipe_needs(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    with pytest.raises(ConfigError) as e:
        load_config(None, {}).require("pretraining", "output_dir", "train_output_file", "eval_output_file")
    assert e.value.problems == [f"{k}: required by pretraining, not set"
                                for k in ("output_dir", "train_output_file", "eval_output_file")]


def test_training_keys_reach_training_arguments():
    cfg = load_config(None, {"seed": 7, "per_device_train_batch_size": 3, "num_training_steps": 11,
                             "output_dir": "o", "overwrite_output_dir": True, "logging_steps": 5})
    args = cfg.training_arguments()
    assert (args.seed, args.per_device_train_batch_size, args.max_steps, args.logging_steps) == (7, 3, 11, 5)
    assert cfg.training.overwrite_output_dir is True and cfg.seed == 7
    assert load_config(None, {"max_steps": 4, "num_training_steps": 11}).training_arguments().max_steps == 4
