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


def _at_least(obj, minimum: int | float, *names: str, optional: bool = False) -> list[str]:
    out = []
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value is None or value < minimum:
            out.append(f"{name} must be >= {minimum}, got {value}")
    return out
