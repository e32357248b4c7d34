"""What every config section is built from: the error, the field helper with its help text, and the base class that
validates a section when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from icae.errors import UserError

MAX_MEMORY_SLOTS = 4096  # fixed_mem_size above this is a typo, not a design (the original tool used 128-512)


class ConfigError(UserError):
    """Raised once per config with every problem found, one per line."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


def _help(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with a help string (shown by ``icae keys``)."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


class Section:
    """Base of the config sections: ``__post_init__`` raises one ConfigError with every problem of ``problems()``."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, type(self).__name__)

    def problems(self) -> list[str]:
        return []


def check_one_owner(sections: dict[str, type], aliases: dict[str, str] | None = None) -> None:
    """A flat YAML key must belong to one section: refuse (``TypeError``, at import time: a programming error, not a
    user's) a key that two sections declare, where the loader would silently give it to one of them, and an alias
    spelt like a declared key. ``sections``: section name -> its dataclass."""
    owners: dict[str, list[str]] = {}
    for name, cls in sections.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(f"{name} ({cls.__name__})")
    problems = [f"{key!r} is declared by {' and '.join(where)}" for key, where in owners.items() if len(where) > 1]
    problems += [f"alias {alias!r} (for {key!r}) is also declared by {' and '.join(owners[alias])}"
                 for alias, key in (aliases or {}).items() if alias in owners]
    if problems:
        raise TypeError("config keys must each have one section (the YAML is flat): " + "; ".join(problems)
                        + "; rename one of each")


def _at_least(obj, minimum: int | float, *names: str, optional: bool = False) -> list[str]:
    out = []
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value is None or value < minimum:
            out.append(f"{name} must be >= {minimum}, got {value}")
    return out
