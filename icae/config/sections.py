"""The typed sections of a recipe config. Each is a frozen dataclass that checks its own values in ``__post_init__``,
so a section built directly in Python (``ModelArguments(fixed_mem_size=3)``) is validated exactly like one read from
YAML, and raises one :class:`ConfigError` naming every problem.

A recipe still reads one flat YAML file, as the original tool does; :func:`icae.config.load_config` routes each key
to the section that owns it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from icae.config.base import MAX_MEMORY_SLOTS, ConfigError, Section, _at_least, _help  # noqa: F401 - re-exported
from icae.config.layout_names import canonical_layout
from icae.config.runtime import BenchArguments, ServeArguments  # noqa: F401 - re-exported


@dataclass(frozen=True)
class ModelArguments(Section):
    """The base model and the compressor built on it."""

    model_name_or_path: str = _help(
        "Base causal LM: a Hugging Face hub id, a local directory, or a built-in model ('tiny-qwen2', 'tiny-qwen3', "
        "'tiny-mistral': random, built offline; 'tiny-qwen2-lm': trained, shipped).",
        "tiny-qwen2",
    )
    model_type: Literal["icae", "llm"] = _help(
        "'icae' compresses the context into memory slots; 'llm' is the SimpleLLM baseline on the full context.", "icae"
    )
    torch_dtype: Literal["float32", "bfloat16", "float16", "auto"] = _help(
        "dtype of the frozen base weights. Trained tensors (LoRA, memory embeddings) stay float32.", "float32"
    )
    attn_implementation: Optional[str] = _help(
        "Attention kernel passed to from_pretrained ('sdpa', 'eager', 'flash_attention_2'); None: transformers' default.",
        None,
    )
    fixed_mem_size: int = _help(f"Memory slots per segment (k): a power of 2, 1 to {MAX_MEMORY_SLOTS}.", 256)
    mean_compression_rate: int = _help(
        "Tokens per memory slot: a segment holds at most fixed_mem_size * mean_compression_rate tokens.", 4
    )
    use_position_identifiers: bool = _help(
        "Give memory tokens position ids spread uniformly over the span they summarise (off: contiguous ids).", False
    )
    layout: Literal["native", "original", "seed"] = _help(
        "How contexts become slots and prompts: 'native' (this project's: balanced segments, centred position ids, "
        "learned AE/LM/FT tokens, positions kept in the decoder) or 'original' (exactly the original tool's: segments "
        "of ceil(L/n) tokens, memory ids linspace(1, len, k) truncated, every encoder input and decoder prompt framed "
        "by the base model's chat template, contiguous decoder positions). Checkpoints of the original tool need "
        "'original'. 'seed' is its earlier name, still read as 'original' (with a notice).",
        "native",
    )
    do_compress: bool = _help(
        "If false, an ICAE feeds the context to the decoder as ordinary tokens (no compression): an ablation.", True
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
        "Contexts shorter than this many tokens are fed as ordinary tokens instead of being compressed (0: always).", 0
    )
    add_special_token_for_lm: bool = _help(
        "LM layout: insert the learned LM token between the memory and the continuation.", False
    )
    model_max_length: int = _help(
        "Longest input, in tokens, that a recipe feeds (context for SimpleLLM, each decoder sequence).", 4096
    )
    restore_from: Optional[str] = _help(
        "Weights to start from: a checkpoint directory of this project, a .safetensors file written by the original "
        "tool, or a directory of (sharded) Hugging Face model weights (loaded as the base model's weights).", None
    )
    save_decoder: bool = _help(
        "Original key. Checkpoints hold the decoder's adapter whenever one is trained (freeze_decoder false) and never "
        "the frozen base weights; accepted, no effect.", False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", canonical_layout(self.layout))  # 'seed' -> 'original', said once
        super().__post_init__()

    def problems(self) -> list[str]:
        out = []
        k = self.fixed_mem_size
        if not (isinstance(k, int) and 1 <= k <= MAX_MEMORY_SLOTS and k & (k - 1) == 0):
            out.append(f"fixed_mem_size must be a power of 2 from 1 to {MAX_MEMORY_SLOTS}, got {k}")
        out += _at_least(self, 1, "mean_compression_rate", "lora_r", "lora_alpha", "model_max_length")
        out += _at_least(self, 0, "min_tokens_to_compress")
        if not 0.0 <= self.lora_dropout < 1.0:
            out.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            out.append("lora_target_modules must name at least one module")
        if not self.model_name_or_path:
            out.append("model_name_or_path: name a base model (hub id, local directory or built-in tiny model)")
        if self.model_type == "icae" and isinstance(k, int) and k >= self.model_max_length:
            out.append(f"fixed_mem_size ({k}) must be below model_max_length ({self.model_max_length}): the decoder reads "
                       "the slots and the prompt")
        return out


@dataclass(frozen=True)
class DataArguments(Section):
    """What a recipe reads and how the data is split."""

    task: Literal["ae", "qa", "lm", "pretrain", "repoqa", "trajectories"] = _help(
        "What a recipe does: ae (reconstruct), qa (answer), lm (continue), pretrain, repoqa, trajectories.", "ae"
    )
    dataset_repo: Optional[str] = _help(
        "Text source: a Hugging Face dataset id, or a local file or directory (.txt/.md/.py... files are documents; "
        ".jsonl/.json/.parquet files hold records with a text field).", None
    )
    dataset_config_name: Optional[str] = _help("Hugging Face dataset configuration (subset) name.", None)
    dataset_split: str = _help("Split of a Hugging Face dataset to read.", "train")
    eval_dataset_repo: Optional[str] = _help(
        "Evaluation source (local file or hub id); None: the held-out part of dataset_repo. Pretraining preparation "
        "draws its held-out samples from it.", None
    )
    eval_split: str = _help("Split of a Hugging Face dataset used for evaluation/inference.", "validation")
    text_field: str = _help("Field holding the text in dataset records (.jsonl/.json/.parquet, hub datasets).", "text")
    file_extensions: list[str] = _help(
        "In a directory source, files with these extensions are documents (a code tree: every source file).",
        default_factory=lambda: [".py", ".txt", ".md", ".rst"],
    )
    max_train_samples: Optional[int] = _help("Use at most this many training samples (None: all).", None)
    max_eval_samples: Optional[int] = _help("Use at most this many evaluation samples (None: all).", None)
    test_fraction: float = _help(
        "Share of the tasks held out for testing when a recipe splits one dataset by seed (RepoQA needles, "
        "trajectories); fine-tuning uses the rest.", 0.2
    )

    def problems(self) -> list[str]:
        out = _at_least(self, 1, "max_train_samples", "max_eval_samples", optional=True)
        if not 0.0 <= self.test_fraction < 1.0:
            out.append(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not self.file_extensions:
            out.append("file_extensions must name at least one extension")
        return out


@dataclass(frozen=True)
class PretrainArguments(Section):
    """Pretraining data preparation and objectives (AE, LM)."""

    context_length: Optional[int] = _help(
        "Pretraining sample: tokens compressed (None: fixed_mem_size * mean_compression_rate, one segment).", None
    )
    continuation_length: Optional[int] = _help(
        "Pretraining sample: tokens after the context, the LM objective's continuation (None: min_tokens_for_lm).", None
    )
    token_num: Optional[int] = _help("Number of tokens to prepare for pretraining (None: the whole source).", None)
    min_len: int = _help("Samples whose context is shorter than this (tokens) are dropped in data preparation.", 16)
    eval_size: int = _help("Number of held-out samples in data preparation.", 100)
    train_output_file: Optional[str] = _help("Where data preparation writes the training split.", None)
    eval_output_file: Optional[str] = _help("Where data preparation writes the evaluation split.", None)
    long_text_cache: Optional[str] = _help(
        "A JSON file of the source's documents: written by the first preparation, read instead of the source by the "
        "next ones (as in the original tool, which cached the long texts of a streamed hub dataset).", None
    )
    min_tokens_for_lm: int = _help("Minimum continuation length for the LM objective.", 64)
    leave_tokens_for_lm: int = _help("Continuation tokens excluded from the LM loss at its start.", 8)
    lm_ratio: float = _help("Fraction of pretraining samples that use the LM objective (the rest: AE).", 0.0)
    lm_lambda: Optional[float] = _help(
        "If set, every sample trains both objectives: loss = (1 - lambda) * AE + lambda * LM (YAML key `lambda` too);"
        " lm_ratio is then ignored.", None
    )
    eval_ae_num_samples: int = _help("Held-out samples reconstructed for AE BLEU/EM during pretraining.", 16)
    extra_dataset_repos: list[str] = _help(
        "More training sources (local files/directories or hub ids) whose documents join dataset_repo's, e.g. the "
        "generated tool outputs of `python -m icae.scripts.write_tool_outputs`.", default_factory=list
    )
    extra_dataset_share: Optional[float] = _help(
        "Share of the training tokens that extra_dataset_repos make up: dataset_repo is read only until its tokens are "
        "(1 - share) / share times theirs (and token_num). None: every document of every source.", None
    )
    loss_per_sample: bool = _help(
        "Average each sample's loss over its own tokens, then over the samples (every sample weighs the same), instead "
        "of over all the batch's tokens. With segment_sample_ratio, a 32-token one-segment window beside 2,048-token "
        "contexts otherwise weighs 1/64 of one of them. Pretraining's training loss only (evaluation and fine-tuning "
        "average per token).", False
    )
    segment_sample_ratio: float = _help(
        "Share of the training samples that are one-segment windows (fixed_mem_size * mean_compression_rate tokens) "
        "of the same documents, added beside the context_length samples so that long-context training keeps reading "
        "single segments too.", 0.0
    )
    curriculum_lengths: list[int] = _help(
        "Multi-segment curriculum (python -m icae.scripts.build_compressor): the context_length of each stage, in "
        "order; each stage starts from the previous stage's weights. Empty: one stage at context_length.",
        default_factory=list,
    )
    curriculum_steps: list[int] = _help("Training steps of each curriculum stage (one per curriculum_lengths).",
                                        default_factory=list)
    curriculum_mix_from: int = _help(
        "First curriculum stage whose training text adds extra_dataset_repos and segment samples (earlier stages read "
        "dataset_repo alone).", 0
    )
    curriculum_batch_sizes: list[int] = _help(
        "per_device_train_batch_size of each curriculum stage (empty: the config's for every stage).",
        default_factory=list,
    )
    curriculum_segment_sample_ratios: list[float] = _help(
        "segment_sample_ratio of each curriculum stage from curriculum_mix_from on (one per curriculum_lengths entry; "
        "empty: segment_sample_ratio for every such stage). A late stage can give more of its samples to single "
        "segments to win back one-segment fidelity.", default_factory=list,
    )
    curriculum_extra_dataset_shares: list[float] = _help(
        "extra_dataset_share of each curriculum stage from curriculum_mix_from on (one per curriculum_lengths entry; "
        "empty: extra_dataset_share for every such stage). A late stage can read less of the extra text (tool "
        "outputs) and more of dataset_repo (code).", default_factory=list,
    )

    def problems(self) -> list[str]:
        out = _at_least(self, 1, "context_length", "token_num", optional=True)
        if self.extra_dataset_share is not None and not 0.0 < self.extra_dataset_share < 1.0:
            out.append(f"extra_dataset_share must be in (0, 1) or null, got {self.extra_dataset_share}")
        if not 0.0 <= self.segment_sample_ratio < 1.0:
            out.append(f"segment_sample_ratio must be in [0, 1), got {self.segment_sample_ratio}")
        lengths, steps, sizes = self.curriculum_lengths, self.curriculum_steps, self.curriculum_batch_sizes
        ratios, shares = self.curriculum_segment_sample_ratios, self.curriculum_extra_dataset_shares
        if len(steps) != len(lengths) or any(v and len(v) != len(lengths) for v in (sizes, ratios, shares)):
            out.append(f"curriculum_steps ({len(steps)}), curriculum_batch_sizes ({len(sizes)}, or none), "
                       f"curriculum_segment_sample_ratios ({len(ratios)}, or none) and curriculum_extra_dataset_shares "
                       f"({len(shares)}, or none) must give one value per curriculum_lengths entry ({len(lengths)})")
        if any(not isinstance(r, (int, float)) or not 0.0 <= r < 1.0 for r in ratios):
            out.append(f"curriculum_segment_sample_ratios must hold numbers in [0, 1), got {ratios}")
        if any(not isinstance(r, (int, float)) or not 0.0 < r < 1.0 for r in shares):
            out.append(f"curriculum_extra_dataset_shares must hold numbers in (0, 1), got {shares}")
        for name, values in (("curriculum_lengths", lengths), ("curriculum_steps", steps),
                             ("curriculum_batch_sizes", sizes)):
            if any(not isinstance(v, int) or v < 1 for v in values):
                out.append(f"{name} must hold integers >= 1, got {values}")
        out += _at_least(self, 0, "continuation_length", optional=True)
        out += _at_least(self, 0, "min_len", "eval_size", "leave_tokens_for_lm", "eval_ae_num_samples")
        out += _at_least(self, 1, "min_tokens_for_lm")
        if not 0.0 <= self.lm_ratio <= 1.0:
            out.append(f"lm_ratio must be in [0, 1], got {self.lm_ratio}")
        if self.lm_lambda is not None and not 0.0 <= self.lm_lambda <= 1.0:
            out.append(f"lambda (lm_lambda) must be in [0, 1], got {self.lm_lambda}")
        return out


@dataclass(frozen=True)
class InferenceArguments(Section):
    """What inference recipes generate and where they write."""

    num_samples: Optional[int] = _help("Number of samples an inference recipe evaluates (None: all).", None)
    max_out_length: int = _help("Maximum new tokens generated per answer.", 128)
    teacher_forcing: bool = _help("Evaluate with the gold history (teacher forcing) rather than generated turns.", True)
    output_path: Optional[str] = _help(
        "Directory for metrics and predictions; None: a run directory under output_dir (or ./runs/icae).", None
    )

    def problems(self) -> list[str]:
        return _at_least(self, 1, "num_samples", optional=True) + _at_least(self, 1, "max_out_length")


@dataclass(frozen=True)
class SquadArguments(Section):
    """SQuAD question answering."""

    qa_prompt_template: str = _help(
        "QA prompt after the memory and the FT token; {question} is replaced by the question.",
        "\nQuestion: {question}\nAnswer:",
    )

    def problems(self) -> list[str]:
        return [] if "{question}" in self.qa_prompt_template else [
            f"qa_prompt_template must contain {{question}}, got {self.qa_prompt_template!r}"]


@dataclass(frozen=True)
class RepoQAArguments(Section):
    """RepoQA Search Needle Function."""

    code_context_size: int = _help("RepoQA: tokens of code context around each needle (the paper's 16k).", 2048)
    needle_position_ratios: list[float] = _help(
        "RepoQA: where the needle sits in its context, 0.0 (start) to 1.0 (end); needle i of a repo takes ratio "
        "i mod len.", default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0]
    )
    languages: Optional[list[str]] = _help("RepoQA: languages of the release JSON to use (None: all).", None)

    def problems(self) -> list[str]:
        out = _at_least(self, 1, "code_context_size")
        if not self.needle_position_ratios or any(not 0.0 <= r <= 1.0 for r in self.needle_position_ratios):
            out.append(f"needle_position_ratios must be a non-empty list of values in [0, 1], got "
                       f"{self.needle_position_ratios}")
        return out


@dataclass(frozen=True)
class TrajectoryArguments(Section):
    """Agent trajectories."""

    trajectory_format: Literal["auto", "messages", "swe_smith", "swe_agent", "nebius"] = _help(
        "Trajectories: record format (messages: OpenAI chat JSONL; swe_smith; swe_agent .traj; nebius rows; auto).",
        "auto",
    )
    compress_roles: list[str] = _help(
        "Trajectories: roles whose turns are compressed when at least min_tokens_to_compress tokens long "
        "(assistant turns never are).", default_factory=lambda: ["tool"]
    )
    reuse_kv_cache: bool = _help(
        "Trajectory inference: keep each trajectory's KV cache across turns and prefill only what is new, as a deployed "
        "agent does (one trajectory at a time); false: prefill each turn's whole history, batched across trajectories.",
        True,
    )
    max_history_tokens: int = _help(
        "Trajectories: decoder input limit; a trajectory stops at the last assistant turn that fits (the original "
        "tool stopped at 32k).", 32768
    )
    max_assistant_turns: Optional[int] = _help(
        "Trajectories: keep each trajectory up to its first N assistant turns (1: the first action alone, a cheap "
        "curriculum stage that trains what the task statement asks for; None: every turn that fits).", None
    )

    def problems(self) -> list[str]:
        out = [] if self.max_history_tokens > 0 else [f"max_history_tokens must be positive, got {self.max_history_tokens}"]
        if self.max_assistant_turns is not None and self.max_assistant_turns < 1:
            out.append(f"max_assistant_turns must be at least 1 (or null: every turn), got {self.max_assistant_turns}")
        if "assistant" in self.compress_roles:
            out.append("compress_roles: assistant turns are what the model learns; they cannot be compressed")
        return out


@dataclass(frozen=True)
class TrainingKeys(Section):
    """The ``transformers.TrainingArguments`` keys of a recipe: the few every recipe reads, typed, and the rest as
    given (``extra``), checked against TrainingArguments' own annotations when the config is loaded."""

    seed: int = _help("Random seed of training, data splits and new tensors.", 42)
    per_device_train_batch_size: int = _help("Training batch size per device.", 8)
    per_device_eval_batch_size: int = _help("Evaluation / inference batch size per device.", 8)
    output_dir: Optional[str] = _help("Where checkpoints (and, by default, results) are written.", None)
    overwrite_output_dir: bool = _help(
        "Train into an output_dir that holds files but no checkpoint to resume (refused otherwise, as in the original "
        "tool); a run with checkpoints resumes from the latest unless this is true.", False
    )
    resume_from_checkpoint: Optional[str | bool] = _help(
        "true: continue from the latest checkpoint in output_dir; a path: from that checkpoint.", None
    )
    max_steps: int = _help("Optimizer steps (-1: num_train_epochs decides).", -1)
    num_training_steps: Optional[int] = _help("Original key: max_steps when max_steps is -1.", None)
    extra: dict = field(default_factory=dict, metadata={"help": "Every other TrainingArguments key, as given."})

    def problems(self) -> list[str]:
        out = _at_least(self, 0, "seed") + _at_least(self, 1, "per_device_train_batch_size", "per_device_eval_batch_size")
        if self.max_steps != -1 and self.max_steps < 1:
            out.append(f"max_steps must be -1 (num_train_epochs decides) or >= 1, got {self.max_steps}")
        out += _at_least(self, 1, "num_training_steps", optional=True)
        limits = {"num_train_epochs": 0, "learning_rate": 0, "warmup_steps": 0, "gradient_accumulation_steps": 1,
                  "logging_steps": 0, "eval_steps": 0, "save_steps": 0, "save_total_limit": 1,
                  "dataloader_num_workers": 0, "max_grad_norm": 0, "weight_decay": 0}
        for key, minimum in limits.items():
            value = self.extra.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < minimum:
                out.append(f"{key} must be >= {minimum}, got {value}")
        for key in ("num_train_epochs", "eval_steps", "save_steps", "logging_steps"):
            if self.extra.get(key) == 0:
                out.append(f"{key} must be positive, got 0")
        return out

    @property
    def steps(self) -> int:
        """The optimizer-step budget: max_steps, else the original's num_training_steps, else -1 (epochs decide)."""
        return self.max_steps if self.max_steps != -1 else (self.num_training_steps or -1)

    def get(self, key: str, default: Any = None) -> Any:
        """Any TrainingArguments key as configured (typed fields included), else ``default``."""
        if key in _TYPED_TRAINING:
            return getattr(self, key)
        return self.extra.get(key, default)


_TYPED_TRAINING = {f.name for f in dataclasses.fields(TrainingKeys)} - {"extra"}

# Flat YAML key -> the Config attribute of its section (TrainingKeys is filled by the loader, not by this map).
SECTIONS = {
    "model": ModelArguments,
    "data": DataArguments,
    "pretrain": PretrainArguments,
    "inference": InferenceArguments,
    "squad": SquadArguments,
    "repoqa": RepoQAArguments,
    "trajectories": TrajectoryArguments,
    "bench": BenchArguments,
    "serve": ServeArguments,
}
