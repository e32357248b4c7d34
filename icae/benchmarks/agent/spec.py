"""The benchmark's spec: which held-out tasks, which agents, how each keeps its observations. Read from YAML (see
``icae/configs/bench_agent/tiny.yaml``); every problem is collected and raised as one :class:`SpecError` (exit 2).

An agent is an offline policy (``oracle``, ``wrong``: the ceiling and the floor, no model) or a served model driven
over the OpenAI protocol: ``base_url`` of a running server, or ``serve`` (an ``icae serve`` config and overrides) that
the harness starts on a free port and stops after. ``observations`` says how its tool outputs reach the model:

- ``compressed``: sent whole to an ICAE server, which turns them into memory slots;
- ``full``: sent whole to a server that reads every token (SimpleLLM, ``model_type: llm``);
- ``truncate``: each observation of at least ``min_tokens`` tokens cut to ``budget_tokens`` tokens, or to 1 /
  ``budget_rate`` of its tokens (the first ones, or the last with ``keep: last``) before it is sent;
- ``llmlingua``: each such observation compressed by LLMLingua to the same budget (its own environment, ``make
  peers``; reported as not run, with the reason, where that environment is missing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from icae.errors import UserError

POLICIES = ("oracle", "wrong", "served")
OBSERVATIONS = ("compressed", "full", "truncate", "llmlingua")
MODES = ("tools", "text")
STATEMENTS = ("plain", "tokens")  # icae.data.trajectory_tools.STATEMENTS
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
AGENT_KEYS = {"name", "policy", "serve", "base_url", "model", "api_key", "observations", "budget_tokens",
              "budget_rate", "keep", "min_tokens", "mode", "tokenizer", "kv_dtype", "rate", "mem_size"}
TOP_KEYS = {"name", "tasks", "seed", "statement", "chat_template", "mode", "max_steps", "max_tokens", "window",
            "window_tasks", "window_max_steps", "output_dir", "agents"}


class SpecError(UserError):
    """A bench-agent spec that cannot be run as written."""


@dataclass(frozen=True)
class AgentSpec:
    name: str
    policy: str = "served"
    serve: dict | None = None  # {"config": path, "overrides": ["key=value", ...]}: the harness serves it
    base_url: str | None = None  # a running server's http://host:port/v1
    model: str | None = None  # the served model's name (default: the server's first)
    api_key: str = "none"
    observations: str = "compressed"
    budget_tokens: int | None = None
    budget_rate: float | None = None
    keep: str = "first"
    min_tokens: int = 32  # observations shorter than this are sent whole (as serve_tiny's min_tokens_to_compress)
    mode: str | None = None  # tools / text; default: the spec's
    tokenizer: str | None = None  # for truncation and estimated positions; default: the served config's base
    kv_dtype: str | None = None  # bytes per KV value; default: the served config's torch_dtype, else float32
    rate: float = 1.0  # estimated positions only (no usage from the server): the compressor's rate, 1: none
    mem_size: int = 8  # estimated positions only: slots per segment

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise SpecError(f"agent {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.name, str) or not self.name.strip():
            out.append("name must be a non-empty string")
        if self.policy not in POLICIES:
            out.append(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.policy == "served":
            if (self.serve is None) == (self.base_url is None):
                out.append("a served agent needs exactly one of serve ({config: ..., overrides: [...]}) or base_url")
            if self.serve is not None and (not isinstance(self.serve, dict) or not self.serve.get("config")
                                           or set(self.serve) - {"config", "overrides"}
                                           or not isinstance(self.serve.get("overrides", []), list)):
                out.append("serve must be {config: <icae serve YAML>, overrides: [key=value, ...]}")
        elif self.serve is not None or self.base_url is not None:
            out.append(f"policy {self.policy} runs offline: drop serve/base_url")
        if self.observations not in OBSERVATIONS:
            out.append(f"observations must be one of {', '.join(OBSERVATIONS)}, got {self.observations!r}")
        budgeted = self.observations in ("truncate", "llmlingua")
        if budgeted and (self.budget_tokens is None) == (self.budget_rate is None):
            out.append(f"observations: {self.observations} needs exactly one of budget_tokens or budget_rate")
        if budgeted and self.serve is None and not self.tokenizer:
            out.append(f"observations: {self.observations} without serve (at a base_url, or offline) needs tokenizer: "
                       "(the model's base) to count each observation's budget")
        if not budgeted and (self.budget_tokens is not None or self.budget_rate is not None):
            out.append(f"budget_tokens/budget_rate apply to truncate and llmlingua, not {self.observations}")
        if self.budget_tokens is not None and (not isinstance(self.budget_tokens, int) or self.budget_tokens < 1):
            out.append(f"budget_tokens must be an integer >= 1, got {self.budget_tokens!r}")
        if self.budget_rate is not None and (not isinstance(self.budget_rate, (int, float)) or self.budget_rate <= 1):
            out.append(f"budget_rate must be a number > 1 (4: keep a quarter), got {self.budget_rate!r}")
        if self.keep not in ("first", "last"):
            out.append(f"keep must be first or last, got {self.keep!r}")
        if self.mode is not None and self.mode not in MODES:
            out.append(f"mode must be tools or text, got {self.mode!r}")
        if self.kv_dtype is not None and self.kv_dtype not in DTYPE_BYTES:
            out.append(f"kv_dtype must be one of {', '.join(DTYPE_BYTES)}, got {self.kv_dtype!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 1:
            out.append(f"min_tokens must be an integer >= 1, got {self.min_tokens!r}")
        if not isinstance(self.rate, (int, float)) or self.rate < 1:
            out.append(f"rate must be a number >= 1, got {self.rate!r}")
        return out

    @property
    def served(self) -> bool:
        return self.policy == "served"

    @property
    def slug(self) -> str:
        """The agent's file name stem: its name in lower case, runs of other characters as one ``-``."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "agent"

    def describe(self) -> str:
        """How its observations reach the model, for the table."""
        if not self.served:
            return f"offline ({self.policy} policy)"
        if self.observations in ("compressed", "full"):
            return {"compressed": "compressed by the server", "full": "whole"}[self.observations]
        budget = f"{self.budget_tokens} tokens" if self.budget_tokens else f"1/{self.budget_rate:g} of its tokens"
        return {"compressed": "compressed by the server", "full": "whole",
                "truncate": f"truncated to {budget} (keep {self.keep})",
                "llmlingua": f"LLMLingua to {budget}"}[self.observations]


@dataclass(frozen=True)
class BenchSpec:
    name: str
    agents: tuple[AgentSpec, ...]
    tasks: int = 20
    seed: int = 0
    statement: str = "plain"  # how each task is stated (icae.data.trajectory_tools.instruction): plain or tokens
    # The chat template every agent reads (a file): each agent's server (``serve``) gets it as its chat_template, and
    # the offline agents' positions are counted with it. None: each server's own, counts with the tokenizer's. Not
    # with ``base_url`` agents: their servers' templates are not the harness's to set.
    chat_template: str | None = None
    mode: str = "tools"
    max_steps: int = 20
    max_tokens: int = 256  # per reply
    window: int = 2048  # decoder positions: the fixed window that "steps that fit" counts against
    window_tasks: int = 0  # > 0: a second run of this many tasks with window_max_steps, for steps that fit
    window_max_steps: int = 40
    output_dir: str = "runs/bench_agent"
    source: str = field(default="spec", compare=False)

    def __post_init__(self):
        problems = []
        for key in ("tasks", "max_steps", "max_tokens", "window", "window_max_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{key} must be an integer >= 1, got {value!r}")
        if not isinstance(self.window_tasks, int) or self.window_tasks < 0:
            problems.append(f"window_tasks must be an integer >= 0, got {self.window_tasks!r}")
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            problems.append(f"chat_template: no such file: {self.chat_template}")
        for agent in self.agents:
            if self.chat_template is not None and agent.serve and any(
                    str(o).startswith("chat_template=") for o in agent.serve.get("overrides", [])):
                problems.append(f"agent {agent.name!r}: chat_template is set at the spec's top for every agent; "
                                "leave it out of the agent's overrides")
            if self.chat_template is not None and agent.base_url is not None:
                problems.append(f"agent {agent.name!r}: its server at base_url {agent.base_url} renders with its own "
                                "chat template, not the spec's chat_template: serve it (serve: {config: ...}) or "
                                "drop chat_template")
        if self.statement not in STATEMENTS:
            problems.append(f"statement must be one of {', '.join(STATEMENTS)}, got {self.statement!r}")
        if self.mode not in MODES:
            problems.append(f"mode must be tools or text, got {self.mode!r}")
        names = [a.name for a in self.agents]
        slugs = [a.slug for a in self.agents]
        if len(set(slugs)) != len(slugs):
            problems.append(f"agent names must differ (also as file names): {names}")
        if problems:
            raise SpecError(f"{self.source}: " + "; ".join(problems))


def load_spec(path: str | Path, overrides: dict | None = None) -> BenchSpec:
    """The spec at ``path`` (``overrides`` replace top-level keys, e.g. from the command line); one SpecError naming
    every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"--spec: no such file: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys, got {type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    problems = [f"unknown key {k!r} (known: {', '.join(sorted(TOP_KEYS))})" for k in raw if k not in TOP_KEYS]
    agents, entries = [], raw.pop("agents", None) or []
    if not isinstance(entries, list) or not entries:
        problems.append("agents: list at least one agent (name, policy or serve/base_url, observations)")
        entries = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"agents[{i}] must be a mapping, got {entry!r}")
            continue
        unknown = sorted(set(entry) - AGENT_KEYS)
        if unknown:
            problems.append(f"agents[{i}] ({entry.get('name')}): unknown keys {unknown} (known: {sorted(AGENT_KEYS)})")
            continue
        if "name" not in entry:
            problems.append(f"agents[{i}]: no name")
            continue
        try:
            agents.append(AgentSpec(**entry))
        except SpecError as e:
            problems.append(str(e))
    raw = {k: v for k, v in raw.items() if k in TOP_KEYS}
    raw.setdefault("name", path.stem)
    try:
        spec = BenchSpec(agents=tuple(agents), source=str(path), **raw)
    except SpecError as e:
        problems.append(str(e).removeprefix(f"{path}: "))
        spec = None
    except TypeError as e:
        problems.append(str(e))
        spec = None
    if problems:
        raise SpecError(f"{path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return spec
