"""What a config may hold before any model loads: YAML of bounded size, values the libraries accept, readable quotes.

- :func:`read_yaml`: YAML text to Python values, refusing aliases that expand past :data:`MAX_YAML_NODES` values
  (a 444-byte "billion laughs" file is a few nodes that expand to billions: it is refused by counting, without being
  expanded) and recursive aliases.
- :func:`library_problems`: the TrainingArguments values that transformers would only refuse after the model has
  loaded (a scheduler or strategy name it does not know, a NaN learning rate, a seed numpy cannot take).
- :func:`quote`: a value as a message shows it, cut to a readable length.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from typing import Any

import yaml

MAX_YAML_NODES = 100_000  # values a config expands to; a recipe config has a few hundred
MAX_SEED = 2**32 - 1  # numpy's seeds (Trainer seeds numpy, torch and random with it)
QUOTE_CHARS = 80


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the full length said), so that a message stays readable."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class YAMLTooLarge(ValueError):
    """YAML whose aliases expand past the bound, or refer to themselves."""


def _expanded_size(root: yaml.Node) -> int:
    """Values the node graph stands for once every alias is expanded, counted once per distinct node (memoised), so
    the count costs the size of the file, not of its expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YAMLTooLarge("an alias refers to a value that contains it (a recursive alias)")
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = min(total, MAX_YAML_NODES + 1)  # capped: the sums stay small however deep the nesting
        return sizes[key]

    return size(root)


def read_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing YAML that expands past :data:`MAX_YAML_NODES` values (raises
    :class:`YAMLTooLarge`; YAML errors are ``yaml.YAMLError``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise YAMLTooLarge(f"its aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); write the "
                               "values out instead")
        return loader.construct_document(node)
    except RecursionError:
        raise YAMLTooLarge("values nested too deeply") from None
    finally:
        loader.dispose()


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The Enum of a ``SomeEnum | str`` annotation (transformers' way to accept names), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, enum.Enum):
                return arg
    return None


def library_problems(values: dict[str, Any], annotations: dict[str, Any]) -> list[str]:
    """Problems of ``values`` (flat config keys) that transformers and numpy would raise only once a run starts: a
    name outside an ``Enum | str`` field's choices, a float that is NaN or infinite, a seed outside [0, 2**32 - 1]."""
    out = []
    for key, value in values.items():
        choices = _enum_of(annotations.get(key))
        if choices is not None and not isinstance(value, enum.Enum):
            named = "no" if value is False else value  # YAML 1.1 reads an unquoted `no` as false
            allowed = [c.value for c in choices]
            if named not in allowed:
                out.append(f"{key}: {quote(value)} is not one of {', '.join(map(str, allowed))}")
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{key}: must be a finite number, got {value}")
        if key in ("seed", "data_seed") and isinstance(value, int) and not isinstance(value, bool) \
                and not 0 <= value <= MAX_SEED:
            out.append(f"{key}: must be in [0, 2**32 - 1] (numpy's seeds), got {quote(value)}")
    return out
