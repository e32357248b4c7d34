"""The flat config namespace has a guard: a key two sections declare is refused when the package is imported."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from icae.config import SECTIONS, TrainingKeys
from icae.config.base import check_one_owner

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class _Model:
    context_length: int = 1
    lora_r: int = 8


@dataclasses.dataclass(frozen=True)
class _Bench:
    context_length: int = 2  # the same flat key as _Model's
    repeats: int = 3


@dataclasses.dataclass(frozen=True)
class _Serve:
    port: int = 0


def test_two_sections_declaring_one_key_are_refused_naming_both():
    with pytest.raises(TypeError) as e:
        check_one_owner({"model": _Model, "bench": _Bench, "serve": _Serve})
    assert "'context_length' is declared by model (_Model) and bench (_Bench)" in str(e.value)
    assert "repeats" not in str(e.value) and "port" not in str(e.value)  # only the shared key is named


def test_an_alias_spelt_like_a_declared_key_is_refused_and_disjoint_sections_pass():
    with pytest.raises(TypeError, match=r"alias 'port' \(for 'repeats'\) is also declared by serve \(_Serve\)"):
        check_one_owner({"bench": _Bench, "serve": _Serve}, {"port": "repeats"})
    assert check_one_owner({"model": _Model, "serve": _Serve}, {"lambda": "lm_lambda"}) is None


def test_the_guard_runs_when_the_loader_is_imported():
    """A section added with a key another section declares breaks the import of the loader (a fresh interpreter)."""
    code = ("import dataclasses, importlib\n"
            "import icae.config.loading as loading, icae.config.sections as sections\n"
            "Dup = dataclasses.make_dataclass('Dup', [('fixed_mem_size', int, dataclasses.field(default=1))])\n"
            "sections.SECTIONS['dup'] = Dup\n"
            "importlib.reload(loading)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 1, run.stderr
    assert "TypeError: config keys must each have one section" in run.stderr
    assert "'fixed_mem_size' is declared by model (ModelArguments) and dup (Dup)" in run.stderr


def test_no_section_key_hides_a_training_arguments_key():
    """The loader gives a key to its section before TrainingArguments: a section key spelt like a TrainingArguments
    field would silently take it (only TrainingKeys, the typed part of training, may)."""
    from transformers import TrainingArguments

    training = {f.name for f in dataclasses.fields(TrainingArguments)}
    shadowed = sorted(f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls) if f.name in training)
    assert shadowed == []
    original_only = {"num_training_steps", "overwrite_output_dir"}  # the original tool's; transformers 5 has neither
    assert {f.name for f in dataclasses.fields(TrainingKeys)} - {"extra"} - original_only <= training


def test_help_names_only_models_that_resolve_here():
    """A built-in or shipped model named in a key's help (`icae keys`) is one the loader knows by that name."""
    import re

    from icae.models.loading import (CONTROL_CHECKPOINTS, SEGMENT_COMPRESSORS, SHIPPED_COMPRESSORS, SHIPPED_MODELS,
                                     TINY_MODELS)

    known = {*TINY_MODELS, *SHIPPED_MODELS, *SHIPPED_COMPRESSORS, *SEGMENT_COMPRESSORS, *CONTROL_CHECKPOINTS}
    named = {name for cls in [*SECTIONS.values(), TrainingKeys] for f in dataclasses.fields(cls)
             for name in re.findall(r"\b(?:tiny|mini)-[a-z0-9]+(?:-[a-z0-9]+)*", f.metadata.get("help", ""))}
    assert {"tiny-qwen2", "tiny-qwen2-lm"} <= named  # the model key's help was read
    assert sorted(named - known) == []
