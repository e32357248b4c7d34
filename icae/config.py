"""Typed configuration for every `icae` recipe.

A recipe reads one flat YAML file, as the original ICAE tool does. Each key belongs to exactly one section:

- :class:`ModelArguments`: the base model, the compressor's architecture and its adapter;
- :class:`TaskArguments`: data, task and evaluation keys;
- ``training``: any field of :class:`transformers.TrainingArguments` (``learning_rate``, ``max_steps``, ...).

``load_config`` validates everything at once and raises a single :class:`ConfigError` that names every problem
(unknown keys, wrong types, bad values, missing files), so a user fixes a config in one pass.
Command-line overrides are ``key=value`` (or ``--key=value`` / ``--key value``), parsed as YAML values.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

# Keys spelt differently here because they are Python keywords.
ALIASES = {"lambda": "lm_lambda"}


def _help(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with a help string (shown by ``icae config --help`` and in the docs)."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class ModelArguments:
    """The base model and the compressor built on it."""

    model_name_or_path: str = _help(
        "Base causal LM: a Hugging Face hub name, a local directory, or a built-in tiny model "
        "('tiny-qwen2', 'tiny-qwen3', 'tiny-mistral') that is built offline on first use.",
        "tiny-qwen2",
    )
    model_type: Literal["icae", "llm"] = _help(
        "'icae' compresses the context into memory slots; 'llm' is the SimpleLLM baseline on the full context.",
        "icae",
    )
    torch_dtype: Literal["float32", "bfloat16", "float16", "auto"] = _help(
        "dtype of the frozen base weights. Trained tensors (LoRA, memory embeddings) follow the base dtype.",
        "float32",
    )
    attn_implementation: Optional[str] = _help(
        "Attention kernel passed to from_pretrained ('sdpa', 'eager', 'flash_attention_2'); None: transformers' default.",
        None,
    )
    fixed_mem_size: int = _help("Memory slots per segment (k). Must be a power of 2.", 256)
    mean_compression_rate: int = _help(
        "Tokens per memory slot: a segment holds at most fixed_mem_size * mean_compression_rate tokens.", 4
    )
    use_position_identifiers: bool = _help(
        "Give memory tokens position ids spread uniformly over the span they summarise (off: contiguous ids).",
        False,
    )
    do_compress: bool = _help(
        "If false, an ICAE feeds the context to the decoder as ordinary tokens (no compression): an ablation.",
        True,
    )
    use_lora: bool = _help("Add a LoRA adapter (always true for ICAE's encoder; optional for SimpleLLM).", True)
    lora_r: int = _help("LoRA rank.", 128)
    lora_alpha: int = _help("LoRA scaling numerator (scale = lora_alpha / lora_r).", 32)
    lora_dropout: float = _help("Dropout on the LoRA branch, in [0, 1).", 0.05)
    lora_target_modules: list[str] = _help(
        "Module names that receive LoRA (e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).",
        default_factory=lambda: ["q_proj", "v_proj"],
    )
    train: bool = _help("Build the model for training (original key). Inference recipes set it to false.", True)
    freeze_encoder: bool = _help(
        "ICAE: freeze the encoder's LoRA adapter (the memory and special-token embeddings still train, as in the "
        "original tool). With freeze_decoder false, this trains the decoder side only.", False
    )
    freeze_decoder: bool = _help(
        "ICAE: true decodes with the frozen base model (the paper's design); false adds a second LoRA adapter on the "
        "same base weights, active only while decoding and trained with the encoder's (the original tool's option). "
        "SimpleLLM: no effect (its LoRA adapter is its decoder and trains whenever train is true, as in the original).",
        True,
    )
    min_tokens_to_compress: int = _help(
        "Contexts shorter than this many tokens are fed as ordinary tokens instead of being compressed (0: always).",
        0,
    )
    add_special_token_for_lm: bool = _help(
        "LM layout: insert the learned LM token between the memory and the continuation.", False
    )
    model_max_length: int = _help(
        "Longest input, in tokens, that a recipe feeds (context for SimpleLLM, each decoder sequence).", 4096
    )
    restore_from: Optional[str] = _help(
        "A checkpoint directory (saved by ICAE.save_pretrained or a trainer) whose trained tensors are loaded.",
        None,
    )
    save_decoder: bool = _help(
        "Original key. The decoder is the frozen base model, so checkpoints never hold it; accepted, no effect.",
        False,
    )


@dataclass
class TaskArguments:
    """Data, task and evaluation settings shared by the recipes."""

    task: Literal["ae", "qa", "lm", "pretrain", "repoqa", "trajectories"] = _help(
        "What a recipe does: ae (reconstruct), qa (answer), lm (continue), pretrain, repoqa, trajectories.", "ae"
    )
    dataset_repo: Optional[str] = _help(
        "Text source: a Hugging Face dataset name, or a local file or directory (.txt/.md/.py... files are documents; "
        ".jsonl/.json/.parquet files hold records with a text field).",
        None,
    )
    dataset_config_name: Optional[str] = _help("Hugging Face dataset configuration (subset) name.", None)
    eval_dataset_repo: Optional[str] = _help(
        "Evaluation source for fine-tuning/inference recipes (local file or hub name); None: dataset_repo.", None
    )
    eval_split: str = _help("Split of a Hugging Face dataset used for evaluation/inference.", "validation")
    qa_prompt_template: str = _help(
        "QA prompt after the memory and the FT token; {question} is replaced by the question.",
        "\nQuestion: {question}\nAnswer:",
    )
    dataset_split: str = _help("Split of a Hugging Face dataset to read.", "train")
    text_field: str = _help("Field holding the text in dataset records (.jsonl/.json/.parquet, hub datasets).", "text")
    file_extensions: list[str] = _help(
        "In a directory source, files with these extensions are documents (a code tree: every source file).",
        default_factory=lambda: [".py", ".txt", ".md", ".rst"],
    )
    context_length: Optional[int] = _help(
        "Pretraining sample: tokens compressed (None: fixed_mem_size * mean_compression_rate, one segment).", None
    )
    continuation_length: Optional[int] = _help(
        "Pretraining sample: tokens after the context, the LM objective's continuation (None: min_tokens_for_lm).",
        None,
    )
    train_output_file: Optional[str] = _help("Where data preparation writes the training split.", None)
    eval_output_file: Optional[str] = _help("Where data preparation writes the evaluation split.", None)
    long_text_cache: Optional[str] = _help("Cache file for long texts during data preparation.", None)
    output_path: Optional[str] = _help(
        "Directory for metrics and predictions; None: icae/data/metrics and icae/data/predictions.", None
    )
    token_num: Optional[int] = _help("Number of tokens to prepare for pretraining.", None)
    min_len: int = _help("Samples whose context is shorter than this (tokens) are dropped in data preparation.", 16)
    eval_size: int = _help("Number of held-out samples in data preparation.", 100)
    max_train_samples: Optional[int] = _help("Use at most this many training samples.", None)
    max_eval_samples: Optional[int] = _help("Use at most this many evaluation samples.", None)
    num_samples: Optional[int] = _help("Number of samples an inference recipe evaluates (None: all).", None)
    max_out_length: int = _help("Maximum new tokens generated per answer.", 128)
    min_tokens_for_lm: int = _help("Minimum continuation length for the LM objective.", 64)
    leave_tokens_for_lm: int = _help("Continuation tokens excluded from the LM loss at its start.", 8)
    lm_ratio: float = _help("Fraction of pretraining samples that use the LM objective (the rest: AE).", 0.0)
    lm_lambda: Optional[float] = _help(
        "If set, every sample trains both objectives: loss = (1 - lambda) * AE + lambda * LM (YAML key `lambda` too);"
        " lm_ratio is then ignored.",
        None,
    )
    eval_ae_num_samples: int = _help("Held-out samples reconstructed for AE BLEU/EM during pretraining.", 16)
    teacher_forcing: bool = _help("Evaluate with the gold history (teacher forcing) rather than generated turns.", True)
    num_training_steps: Optional[int] = _help("Original key; alias of max_steps when max_steps is not set.", None)
    test_fraction: float = _help(
        "Share of the tasks held out for testing when a recipe splits one dataset by seed (RepoQA needles, "
        "trajectories); fine-tuning uses the rest.",
        0.2,
    )
    # RepoQA (Search Needle Function)
    code_context_size: int = _help("RepoQA: tokens of code context around each needle (the paper's 16k).", 2048)
    needle_position_ratios: list[float] = _help(
        "RepoQA: where the needle sits in its context, 0.0 (start) to 1.0 (end); needle i of a repo takes ratio "
        "i mod len.",
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
    )
    languages: Optional[list[str]] = _help("RepoQA: languages of the release JSON to use (None: all).", None)
    # Agent trajectories
    trajectory_format: Literal["auto", "messages", "swe_smith", "swe_agent", "nebius"] = _help(
        "Trajectories: record format (messages: OpenAI chat JSONL; swe_smith; swe_agent .traj; nebius rows; auto).",
        "auto",
    )
    compress_roles: list[str] = _help(
        "Trajectories: roles whose turns are compressed when at least min_tokens_to_compress tokens long "
        "(assistant turns never are).",
        default_factory=lambda: ["tool"],
    )
    reuse_kv_cache: bool = _help(
        "Trajectory inference: keep each trajectory's KV cache across turns and prefill only what is new, as a deployed "
        "agent does (one trajectory at a time); false: prefill each turn's whole history, batched across trajectories.",
        True,
    )
    max_history_tokens: int = _help(
        "Trajectories: decoder input limit; a trajectory stops at the last assistant turn that fits (the original "
        "tool stopped at 32k).",
        32768,
    )


@dataclass
class BenchArguments:
    """What ``python -m icae.bench`` measures (each list is a grid axis)."""

    bench_context_lengths: list[int] = _help("Context lengths in tokens.", default_factory=lambda: [512, 1024, 2048])
    bench_compression_rates: list[int] = _help("Compression rates (mean_compression_rate) to compare.",
                                               default_factory=lambda: [4])
    bench_batch_sizes: list[int] = _help("Batch sizes for answering.", default_factory=lambda: [1])
    bench_new_tokens: list[int] = _help("Tokens generated per answer (forced: no early stop).",
                                        default_factory=lambda: [64])
    bench_prompt_tokens: int = _help("Prompt tokens after the memory (a question).", 16)
    bench_repeats: int = _help("Repeats per point; medians are reported. The three cases run interleaved.", 3)
    bench_train_batch_sizes: list[int] = _help("Batch sizes of the one-step training throughput measure.",
                                               default_factory=lambda: [1, 8])
    bench_train_context_length: Optional[int] = _help(
        "Context length of the training-throughput step (None: the shortest bench_context_lengths).", None
    )
    bench_device: str = _help("'cpu', 'cuda' or 'auto' (cuda when available).", "auto")


@dataclass
class Config:
    """A resolved recipe config: model, task, benchmark and transformers.TrainingArguments keyword arguments."""

    model: ModelArguments = field(default_factory=ModelArguments)
    task: TaskArguments = field(default_factory=TaskArguments)
    training: dict[str, Any] = field(default_factory=dict)
    bench: BenchArguments = field(default_factory=BenchArguments)

    def to_dict(self) -> dict[str, Any]:
        """The flat form, as in a YAML config file; ``load_config`` reads it back unchanged."""
        flat = dataclasses.asdict(self.model)
        flat.update(dataclasses.asdict(self.task))
        flat.update(dataclasses.asdict(self.bench))
        flat.update(self.training)
        return flat

    def save(self, path: str | Path) -> None:
        """Write the resolved config atomically as flat YAML."""
        from icae.utils.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def training_arguments(self, **overrides: Any):
        """Build ``transformers.TrainingArguments`` from the training keys (plus ``overrides``)."""
        from transformers import TrainingArguments

        kwargs = dict(self.training)
        if "max_steps" not in kwargs and self.task.num_training_steps is not None:
            kwargs["max_steps"] = self.task.num_training_steps
        kwargs.update(overrides)
        return TrainingArguments(**kwargs)


class ConfigError(ValueError):
    """Raised once per config with every problem found, one per line."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{lines}")


def _training_fields() -> dict[str, Any]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}
    fields["resume_from_checkpoint"] = Optional[typing.Union[bool, str]]  # true: the latest checkpoint in output_dir
    return fields


def _coerce(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a (simple) type annotation; returns (ok, value possibly coerced).

    Coercions are the ones YAML makes necessary: ``1e-4`` is a string to PyYAML, and ints are valid floats.
    Annotations this checker does not understand accept anything (the consumer validates those).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, coerced = _coerce(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in args, value
    if origin in (list, tuple):
        if isinstance(value, str) and annotation is not str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, value
        inner = args[0] if args else Any
        items = [_coerce(v, inner) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if isinstance(annotation, type) and issubclass(annotation, __import__("enum").Enum):
        if isinstance(value, bool):
            value = "yes" if value else "no"  # YAML 1.1 reads an unquoted `save_strategy: no` as a bool
        try:
            annotation(value)
            return True, value
        except ValueError:
            return False, value
    return True, value


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check_values(model: ModelArguments, task: TaskArguments) -> list[str]:
    problems = []
    k = model.fixed_mem_size
    if k <= 0 or k & (k - 1):
        problems.append(f"fixed_mem_size must be a positive power of 2 (1, 2, 4, ..., 256), got {k}")
    if model.mean_compression_rate < 1:
        problems.append(f"mean_compression_rate must be >= 1, got {model.mean_compression_rate}")
    if model.lora_r <= 0:
        problems.append(f"lora_r must be positive, got {model.lora_r}")
    if model.lora_alpha <= 0:
        problems.append(f"lora_alpha must be positive, got {model.lora_alpha}")
    if not 0.0 <= model.lora_dropout < 1.0:
        problems.append(f"lora_dropout must be in [0, 1), got {model.lora_dropout}")
    if not model.lora_target_modules:
        problems.append("lora_target_modules must name at least one module")
    if model.model_max_length <= 0:
        problems.append(f"model_max_length must be positive, got {model.model_max_length}")
    if model.restore_from is not None and not Path(model.restore_from).is_dir():
        problems.append(f"restore_from: no such checkpoint directory: {model.restore_from}")
    if task.lm_lambda is not None and not 0.0 <= task.lm_lambda <= 1.0:
        problems.append(f"lambda (lm_lambda) must be in [0, 1], got {task.lm_lambda}")
    for name in ("context_length", "continuation_length", "token_num"):
        if getattr(task, name) is not None and getattr(task, name) <= 0:
            problems.append(f"{name} must be positive, got {getattr(task, name)}")
    if task.leave_tokens_for_lm < 0 or task.min_tokens_for_lm < 1:
        problems.append("leave_tokens_for_lm must be >= 0 and min_tokens_for_lm >= 1")
    if not 0.0 <= task.lm_ratio <= 1.0:
        problems.append(f"lm_ratio must be in [0, 1], got {task.lm_ratio}")
    if not 0.0 <= task.test_fraction < 1.0:
        problems.append(f"test_fraction must be in [0, 1), got {task.test_fraction}")
    if task.max_history_tokens <= 0:
        problems.append(f"max_history_tokens must be positive, got {task.max_history_tokens}")
    if "assistant" in task.compress_roles:
        problems.append("compress_roles: assistant turns are what the model learns; they cannot be compressed")
    if task.code_context_size <= 0:
        problems.append(f"code_context_size must be positive, got {task.code_context_size}")
    bad_ratios = [r for r in task.needle_position_ratios if not 0.0 <= r <= 1.0]
    if bad_ratios or not task.needle_position_ratios:
        problems.append(f"needle_position_ratios must be a non-empty list of values in [0, 1], got "
                        f"{task.needle_position_ratios}")
    for name in ("max_out_length", "eval_size"):
        if getattr(task, name) < 0:
            problems.append(f"{name} must be >= 0, got {getattr(task, name)}")
    return problems


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """Parse ``key=value``, ``--key=value`` and ``--key value`` arguments; values are YAML scalars/lists."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:] if arg.startswith("--") else arg
        if "=" in key:
            key, raw = key.split("=", 1)
        elif arg.startswith("--") and i + 1 < len(argv):
            raw = argv[i + 1]
            i += 1
        else:
            raise ConfigError([f"cannot parse argument {arg!r}: expected key=value or --key value"], "command line")
        out[key] = yaml.safe_load(raw) if raw != "" else ""
        i += 1
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a flat YAML config, apply overrides, validate, and return a :class:`Config`.

    Raises :class:`ConfigError` naming every problem at once.
    """
    problems: list[str] = []
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError([f"config file not found: {path}"], source)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError([f"invalid YAML: {e}"], source) from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"top level must be a mapping of keys to values, got {type(loaded).__name__}"], source)
        raw.update(loaded)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw.update(overrides or {})
    raw = {ALIASES.get(k, k): v for k, v in raw.items()}

    sections = {"model": ModelArguments, "task": TaskArguments, "bench": BenchArguments}
    section_fields = {
        name: {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
        for name, cls in sections.items()
    }
    training_fields = _training_fields()
    values: dict[str, dict[str, Any]] = {"model": {}, "task": {}, "bench": {}}
    training: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is not a string")
            continue
        owner = next((s for s, fs in section_fields.items() if key in fs), None)
        if owner is not None:
            annotation = section_fields[owner][key]
            target = values[owner]
        elif key in training_fields:
            annotation = training_fields[key]
            target = training
        else:
            problems.append(f"unknown key {key!r}")
            continue
        ok, coerced = _coerce(value, annotation)
        if not ok:
            problems.append(f"{key}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")
        else:
            target[key] = coerced
    model = ModelArguments(**values["model"])
    task = TaskArguments(**values["task"])
    bench = BenchArguments(**values["bench"])
    problems.extend(_check_values(model, task))
    for name in ("bench_context_lengths", "bench_compression_rates", "bench_batch_sizes", "bench_new_tokens",
                 "bench_train_batch_sizes"):
        if not getattr(bench, name) or any(v <= 0 for v in getattr(bench, name)):
            problems.append(f"{name} must be a non-empty list of positive integers, got {getattr(bench, name)}")
    if bench.bench_repeats < 1:
        problems.append(f"bench_repeats must be >= 1, got {bench.bench_repeats}")
    if bench.bench_device not in ("cpu", "cuda", "auto"):
        problems.append(f"bench_device must be cpu, cuda or auto, got {bench.bench_device!r}")
    if problems:
        raise ConfigError(problems, source)
    return Config(model=model, task=task, training=training, bench=bench)


def config_from_cli(argv: list[str] | None = None, description: str = "") -> Config:
    """Shared entry point of the recipes: ``--config_path FILE`` plus overrides."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config_path", default=None, help="YAML config file (see icae/configs/).")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return load_config(args.config_path, rest)
