"""Property-based tests (hypothesis): whatever a user writes into a config, an override, a SQuAD or RepoQA file or a
trajectory record, and whatever they pass to the API's argument checks, it either loads or is refused with a
UserError (ValueError/TypeError from the API), never another exception. Sized to run in seconds."""

import json
import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icae.config import load_config, parse_overrides
from icae.config.bounds import read_yaml
from icae.config.loading import _training_fields
from icae.config.sections import SECTIONS
from icae.errors import UserError
from icae.models import arguments

# No example database: nothing is written into the working tree.
SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECTION_KEYS = sorted(f for cls in SECTIONS.values() for f in cls.__dataclass_fields__)
TRAINING_KEYS = ["seed", "max_steps", "learning_rate", "lr_scheduler_type", "eval_strategy", "save_strategy",
                 "per_device_train_batch_size", "num_train_epochs", "warmup_steps", "save_total_limit", "optim",
                 "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "report_to", "data_seed"]
KEYS = SECTION_KEYS + TRAINING_KEYS + ["lambda", "nope"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["no", "steps", "cosine", "cosinus", "1e-4", ".nan", "tiny-qwen2", "auto", "[1, 2]"]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                                     st.floats(allow_nan=False), st.text(max_size=20)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
config_values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars,
                                                                                   max_size=3))


def _loads_or_user_error(call):
    try:
        call()
    except UserError:
        pass


# ---------------------------------------------------------------------------------------------- config loader
@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), config_values, max_size=6))
def test_any_config_values_load_or_are_one_user_error(values):
    _loads_or_user_error(lambda: load_config(None, values))


@SETTINGS
@given(st.text(max_size=300))
def test_any_yaml_text_loads_or_is_one_user_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads_or_user_error(lambda: load_config(path))


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), config_values, max_size=6))
def test_any_yaml_mapping_loads_or_is_one_user_error(tmp_path, values):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    _loads_or_user_error(lambda: load_config(path))


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=40), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS),
                                                            st.text(max_size=30))), max_size=6))
def test_any_command_line_overrides_load_or_are_one_user_error(argv):
    _loads_or_user_error(lambda: load_config(None, parse_overrides(argv)))


@SETTINGS
@given(st.integers(2, 12), st.integers(2, 12))
def test_aliases_are_bounded_by_their_expansion_not_their_text(width, depth):
    """width ** depth values from a few lines: refused exactly when the expansion passes the bound."""
    from icae.config.bounds import MAX_YAML_NODES, YAMLTooLarge

    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{d}: &l{d} [" + ", ".join([f"*l{d - 1}"] * width) + "]" for d in range(1, depth)]
    # Values once expanded: the mapping, then each level's list holding `width` copies of the level below.
    size, level = 1, 1 + width
    for d in range(depth):
        size += 1 + level  # key and value
        level = 1 + width * level
    if size > MAX_YAML_NODES:
        with pytest.raises(YAMLTooLarge):
            read_yaml("\n".join(lines))
    else:
        assert len(read_yaml("\n".join(lines))) == depth


def test_training_fields_checked_against_the_library_cover_every_enum():
    """Every TrainingArguments field that names one of transformers' enums is checked (a new one would be, too)."""
    from icae.config.bounds import _enum_of

    enums = {k for k, a in _training_fields().items() if _enum_of(a)}
    assert {"lr_scheduler_type", "eval_strategy", "save_strategy", "logging_strategy", "optim"} <= enums


# ---------------------------------------------------------------------------------------------- data loaders
squad_like = st.fixed_dictionaries({"version": st.just("1.1"), "data": st.lists(st.one_of(
    json_values, st.fixed_dictionaries({"title": json_values, "paragraphs": st.one_of(json_values, st.lists(
        st.fixed_dictionaries({"context": st.one_of(st.text(max_size=20), json_values), "qas": st.one_of(
            json_values, st.lists(st.dictionaries(st.sampled_from(["id", "question", "answers", "is_impossible"]),
                                                  json_values), max_size=3))}), max_size=3))})), max_size=3)})


@SETTINGS
@given(st.one_of(json_values, squad_like))
def test_any_squad_json_loads_or_is_one_user_error(tmp_path, data):
    from icae.data.squad import load_squad

    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    _loads_or_user_error(lambda: load_squad(str(path)))


needle_values = st.one_of(json_values, st.sampled_from(["a.py", "f", "10"]), st.integers(-2, 30))
needle_like = st.one_of(
    st.dictionaries(st.sampled_from(["name", "path", "start_byte", "end_byte", "description"]), needle_values),
    st.fixed_dictionaries({"name": st.sampled_from(["f", None]), "path": st.sampled_from(["a.py", "b.py", 3]),
                           "start_byte": needle_values, "end_byte": needle_values, "description": needle_values}))
content_like = st.one_of(json_values, st.just({"a.py": "def f(x):\n    return x\n"}))
dependency_like = st.one_of(json_values, st.dictionaries(st.sampled_from(["a.py", "b.py"]), st.one_of(
    json_values, st.lists(st.sampled_from(["a.py", "b.py", "c"]), max_size=2))))
repo_like = st.one_of(
    st.dictionaries(st.sampled_from(["repo", "content", "dependency", "needles"]), json_values),
    st.fixed_dictionaries({"repo": json_values, "content": content_like, "dependency": dependency_like,
                           "needles": st.one_of(json_values, st.lists(needle_like, max_size=3))}))


@SETTINGS
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["python", "go"]), st.one_of(json_values, st.lists(
    repo_like, max_size=3)), max_size=2)))
def test_any_repoqa_json_loads_or_is_one_user_error(tmp_path, data):
    from icae.data.repoqa import build_tasks, load_repoqa
    from icae.models.loading import tiny_tokenizer

    path = tmp_path / "repoqa.json"
    path.write_text(json.dumps(data))

    def load():
        loaded = load_repoqa(str(path))
        build_tasks(TOKENIZER, loaded, 64, [0.0, 0.5, 1.0])

    global TOKENIZER
    TOKENIZER = TOKENIZER or tiny_tokenizer()
    _loads_or_user_error(load)


TOKENIZER = None
message_like = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "message_type", "is_demo", "action"]),
                               st.one_of(json_values, st.sampled_from(["assistant", "user", "tool", "system", "ai",
                                                                       "observation", "wizard"])))
record_like = st.one_of(json_values, *(st.fixed_dictionaries({key: st.one_of(json_values, st.lists(message_like,
                                                                                                    max_size=4))})
                                       for key in ("messages", "history", "trajectory")))


@SETTINGS
@given(st.lists(record_like, min_size=1, max_size=3), st.sampled_from(["auto", "messages", "swe_agent", "nebius"]))
def test_any_trajectory_records_load_or_are_one_user_error(tmp_path, records, fmt):
    from icae.data.trajectories import load_trajectories

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _loads_or_user_error(lambda: load_trajectories(str(path), fmt))
    single = tmp_path / "one.traj"
    single.write_text(json.dumps(records[0]))
    _loads_or_user_error(lambda: load_trajectories(str(single), fmt))


# ---------------------------------------------------------------------------------------------- API argument checks
api_values = st.one_of(scalars, st.lists(scalars, max_size=3), st.just(float("nan")), st.just(torch.tensor(3)))


def _checked_or_value_error(call):
    try:
        call()
    except (ValueError, TypeError):
        pass


@SETTINGS
@given(api_values, st.dictionaries(st.sampled_from(["max_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                                                    "stop_token_ids"]), api_values, max_size=4))
def test_any_api_arguments_pass_or_are_a_value_or_type_error(rate, sampling):
    from icae.models.decoding import SamplingParams

    _checked_or_value_error(lambda: arguments.check_compression_rate(rate))

    def sampling_checked():
        arguments.check_sampling(sampling)
        SamplingParams.of(**sampling)  # what passed the checks is what generate builds

    _checked_or_value_error(sampling_checked)


@SETTINGS
@given(st.one_of(api_values, st.lists(st.one_of(st.text(max_size=10), scalars), max_size=4), st.text(max_size=20)))
def test_any_contexts_pass_or_are_a_value_or_type_error(contexts):
    def checked():
        arguments.check_texts(contexts)
        if isinstance(contexts, str) or (isinstance(contexts, list) and contexts and
                                         all(isinstance(c, str) for c in contexts)):
            for c in [contexts] if isinstance(contexts, str) else contexts:
                c.encode("utf-8")  # what passed the check is valid Unicode

    _checked_or_value_error(checked)


@SETTINGS
@given(st.lists(st.lists(st.integers(-2**40, 2**40), max_size=5), max_size=3))
def test_any_id_rows_pass_or_name_the_id(rows):
    tensors = [torch.tensor(r, dtype=torch.long) for r in rows]
    bad = [x for r in rows for x in r if not 0 <= x < 4096]
    if bad:
        with pytest.raises(ValueError, match=f"token id {bad[0]} is outside"):
            arguments.check_id_rows(tensors, 4096)
    else:
        arguments.check_id_rows(tensors, 4096)


def test_nan_floats_are_refused_not_passed_on():
    with pytest.raises(ValueError, match="temperature must be a number, got NaN"):
        arguments.check_sampling({"temperature": math.nan})
