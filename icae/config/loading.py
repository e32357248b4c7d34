"""Reading a flat YAML recipe config into a :class:`Config`: every key routed to its section, every problem reported
at once.

A recipe reads one flat YAML file, as the original ICAE tool does, plus ``key=value`` command-line overrides (also
``--key=value`` / ``--key value``), parsed as YAML values. Keys of the original tool keep their names and meanings;
any ``transformers.TrainingArguments`` field is accepted too.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from icae.config.base import check_one_owner
from icae.config.bounds import YAMLTooLarge, library_problems, quote, read_yaml
from icae.config.sections import (
    SECTIONS,
    BenchArguments,
    ConfigError,
    DataArguments,
    InferenceArguments,
    ModelArguments,
    PretrainArguments,
    RepoQAArguments,
    ServeArguments,
    SquadArguments,
    TrainingKeys,
    TrajectoryArguments,
)
from icae.utils.io import atomic_write_text

# Keys spelt differently here because they are Python keywords.
ALIASES = {"lambda": "lm_lambda"}
check_one_owner({**SECTIONS, "training": TrainingKeys}, ALIASES)  # a key two sections declare is refused here


@dataclass(frozen=True)
class Config:
    """A resolved recipe config: one typed section per concern, and the TrainingArguments keys."""

    model: ModelArguments = field(default_factory=ModelArguments)
    data: DataArguments = field(default_factory=DataArguments)
    pretrain: PretrainArguments = field(default_factory=PretrainArguments)
    inference: InferenceArguments = field(default_factory=InferenceArguments)
    squad: SquadArguments = field(default_factory=SquadArguments)
    repoqa: RepoQAArguments = field(default_factory=RepoQAArguments)
    trajectories: TrajectoryArguments = field(default_factory=TrajectoryArguments)
    bench: BenchArguments = field(default_factory=BenchArguments)
    serve: ServeArguments = field(default_factory=ServeArguments)
    training: TrainingKeys = field(default_factory=TrainingKeys)

    @property
    def seed(self) -> int:
        return self.training.seed

    def to_dict(self) -> dict[str, Any]:
        """The flat form, as in a YAML config file; ``load_config`` reads it back unchanged."""
        flat: dict[str, Any] = {}
        for name in SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, name)))
        training = dataclasses.asdict(self.training)
        flat.update(training.pop("extra"))
        flat.update(training)
        return flat

    def replace(self, **flat: Any) -> "Config":
        """A copy with flat keys changed (``config.replace(restore_from=None)``), validated like a loaded config."""
        return load_config(None, {**self.to_dict(), **flat})

    def save(self, path: str | Path) -> None:
        """Write the resolved config atomically as flat YAML."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def require(self, recipe: str, *keys: str) -> None:
        """Raise one ConfigError naming every key of ``keys`` that the config leaves unset (None or empty)."""
        flat = self.to_dict()
        missing = [k for k in keys if flat.get(k) in (None, "", [])]
        if missing:
            raise ConfigError([f"{k}: required by {recipe}, not set" for k in missing], f"{recipe} config")

    def training_arguments(self, **overrides: Any):
        """``transformers.TrainingArguments`` from the training keys (plus ``overrides``)."""
        from transformers import TrainingArguments

        kwargs = dict(self.training.extra)
        kwargs.update(seed=self.training.seed, max_steps=self.training.steps,
                      per_device_train_batch_size=self.training.per_device_train_batch_size,
                      per_device_eval_batch_size=self.training.per_device_eval_batch_size)
        if self.training.output_dir is not None:
            kwargs["output_dir"] = self.training.output_dir
        kwargs.setdefault("ddp_find_unused_parameters", True)  # the special tokens a batch does not use stay unused
        kwargs.update(overrides)
        return TrainingArguments(**kwargs)


@functools.lru_cache(maxsize=None)
def _training_fields() -> dict[str, Any]:
    """TrainingArguments' keys and their annotations, resolved once (read only)."""
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}
    typed = typing.get_type_hints(TrainingKeys)
    fields.update({f.name: typed[f.name] for f in dataclasses.fields(TrainingKeys) if f.name != "extra"})
    return fields


@functools.lru_cache(maxsize=None)
def _section_fields() -> dict[str, tuple[str, Any]]:
    """Each section key -> (its section, its annotation)."""
    return {f.name: (name, typing.get_type_hints(cls)[f.name])
            for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a (simple) type annotation; returns (ok, value possibly coerced).

    Coercions are the ones YAML makes necessary: ``1e-4`` is a string to PyYAML, and ints are valid floats.
    Annotations this checker does not understand accept anything (the consumer validates those).
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is not type(None):
                ok, coerced = _coerce(value, arg)
                if ok:
                    return True, coerced
        return False, value
    if origin is Literal:
        return value in args, value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, args[0] if args else Any) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
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
        try:
            out[key] = read_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key] = raw  # not a YAML scalar: the string itself (the section's type check decides)
        except YAMLTooLarge as e:
            raise ConfigError([f"{key}: {e}"], "command line") from None
        i += 1
    return out


MAX_CONFIG_BYTES = 1 << 20  # a recipe config is a few kB; this reads no further


def _read_text(path: str | Path) -> str:
    """The text of a config file, or one ConfigError saying why it cannot be read (missing, a directory, a symlink
    loop, no permission, not a regular file, too large, not UTF-8)."""
    p = Path(path)
    try:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            what = "a link to a missing file" if p.is_symlink() else "not found"
            raise ConfigError([f"config file {what}: {path}"], str(path)) from None
        if stat.S_ISDIR(mode):
            raise ConfigError([f"{path} is a directory, not a config file: pass the YAML file inside it"], str(path))
        if not stat.S_ISREG(mode):
            raise ConfigError([f"{path} is not a regular file (a device or a pipe): pass a YAML file"], str(path))
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:  # no permission, a symlink loop, /proc/self/mem (EIO)
        raise ConfigError([f"cannot read config file {path}: {e.strerror or e}"], str(path)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"larger than {MAX_CONFIG_BYTES} bytes: not a recipe config"], str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"not UTF-8 text ({e})"], str(path)) from None


def _read_file(path: str | Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        loaded = read_yaml(text)
    except (yaml.YAMLError, YAMLTooLarge) as e:
        raise ConfigError([f"invalid YAML: {e}"], str(path)) from None
    if loaded is None:
        raise ConfigError(["the file is empty: a recipe config names at least its model and data (see icae/configs/ "
                           "for one per recipe, `icae keys` for every key)"], str(path))
    if not isinstance(loaded, dict):
        raise ConfigError([f"top level must be a mapping of keys to values, got {type(loaded).__name__}"], str(path))
    return loaded


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Load a flat YAML config, apply overrides, validate, and return a :class:`Config`.

    Raises :class:`ConfigError` naming every problem at once: unknown keys, wrong types, bad values.
    """
    source = str(path) if path is not None else "config"
    raw: dict[str, Any] = _read_file(path) if path is not None else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw.update(overrides or {})
    raw = {ALIASES.get(k, k): v for k, v in raw.items()}

    owners = _section_fields()
    training_fields = _training_fields()
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    training: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if not isinstance(key, str):
            problems.append(f"key {quote(key)} is not a string")
            continue
        if key in owners:
            section, annotation = owners[key]
            target = values[section]
        elif key in training_fields:
            annotation, target = training_fields[key], training
        else:
            problems.append(f"unknown key {quote(key)} (`icae keys` lists every key)")
            continue
        ok, coerced = _coerce(value, annotation)
        if ok:
            target[key] = coerced
            problems += library_problems({key: coerced}, {key: annotation})
        else:
            problems.append(f"{key}: expected {_type_name(annotation)}, got {quote(value)} ({type(value).__name__})")
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        try:
            built[name] = cls(**values[name])
        except ConfigError as e:
            problems += e.problems
    typed = {k: training.pop(k) for k in list(training) if k in TrainingKeys.__dataclass_fields__}
    try:
        built["training"] = TrainingKeys(**typed, extra=training)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems, source)
    return Config(**built)


def config_from_cli(argv: list[str] | None = None, description: str = "") -> Config:
    """Shared entry point of the recipes: ``--config_path FILE`` plus overrides."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config_path", default=None, help="YAML config file (see icae/configs/).")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return load_config(args.config_path, rest)


__all__ = ["Config", "ConfigError", "load_config", "parse_overrides", "config_from_cli", "ALIASES"]
