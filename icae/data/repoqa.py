"""RepoQA Search Needle Function: loading the release JSON and building prompts.

The release JSON (optionally gzip-compressed) maps a language to its repos: ``{language: [repo, ...]}``, each repo with
``repo``, ``content`` {path: source}, ``dependency`` {path: [paths]}, ``functions`` and ``needles`` (a function record
with ``path``, ``start_byte``, ``end_byte``, ``name`` and ``description``). The path comes from ``dataset_repo``, else
from the ``REPOQA_DATA_OVERRIDE_PATH`` environment variable, as in the original tool. Build one offline with
``python -m icae.scripts.build_repoqa``.

A task asks for one needle. Its code context is the repo's files ordered so that each file comes after the files it
depends on, each headed by a ``# Path: <path>`` comment (``//`` for C-like languages), cut to ``code_context_size``
tokens around the needle so that the needle starts at ``position_ratio`` of the remaining budget. Layout:

    compressed (ICAE) or read in full (SimpleLLM):  the code context
    prompt:   the function description, then the instruction to repeat that function in a fenced code block
    target:   ```<language>\\n<needle code>\\n``` EOS

RepoQA's template also puts the instruction before the code context; here the memory holds the code alone, so the
same compressed context serves any question about it, and the instruction follows the description in the prompt.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from icae.config import ConfigError
from icae.data.sources import SourceError, split_tasks
from icae.data.tasks import AnswerSample, Split
from icae.models.framing import Layout, token_ids

ENV_PATH = "REPOQA_DATA_OVERRIDE_PATH"
COMMENT_PREFIX = {"python": "#", "ruby": "#", "shell": "#"}  # every other language: //
INSTRUCTION = (
    "Based on the function description and the code context, retrieve the described function and repeat it "
    "exactly, in a code block wrapped in ```:"
)
REPO_KEYS = ("repo", "content", "dependency", "needles")
NEEDLE_KEYS = ("name", "path", "start_byte", "end_byte", "description")


def resolve_path(dataset_repo: str | None) -> Path:
    path = dataset_repo or os.environ.get(ENV_PATH)
    if not path:
        raise SourceError(f"no RepoQA data: set dataset_repo in the config or the {ENV_PATH} environment variable "
                          "(build one offline with `python -m icae.scripts.build_repoqa`)")
    if not Path(path).is_file():
        raise SourceError(f"RepoQA data: no such file: {path}")
    return Path(path)


def check_repoqa(data, source: str) -> None:
    """Raise one :class:`SourceError` naming every structural problem (at most 20) of a release JSON."""
    problems = []
    if not isinstance(data, dict) or not data:
        raise SourceError(f"{source}: expected {{language: [repo, ...]}}, got {type(data).__name__}")
    for language, repos in data.items():
        if not isinstance(repos, list):
            problems.append(f"{language}: expected a list of repos, got {type(repos).__name__}")
            continue
        for i, repo in enumerate(repos):
            where = f"{language}[{i}]"
            if not isinstance(repo, dict):
                problems.append(f"{where}: expected a repo object")
                continue
            where = f"{language}[{i}] ({str(repo.get('repo', '?'))[:60]})"
            missing = [k for k in REPO_KEYS if k not in repo]
            if missing:
                problems.append(f"{where}: missing keys {missing}")
                continue
            content, dependency = repo["content"], repo["dependency"]
            if not isinstance(content, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in content.items()):
                problems.append(f"{where}: 'content' must map file paths to source text")
                continue
            if not isinstance(dependency, dict) or not all(isinstance(v, list) and all(isinstance(d, str) for d in v)
                                                           for v in dependency.values()):
                problems.append(f"{where}: 'dependency' must map file paths to lists of paths")
            if not isinstance(repo["needles"], list):
                problems.append(f"{where}: 'needles' must be a list of functions, got {type(repo['needles']).__name__}")
                continue
            for j, needle in enumerate(repo["needles"]):
                if not isinstance(needle, dict):
                    problems.append(f"{where} needle {j}: expected a function object, got {type(needle).__name__}")
                    continue
                absent = [k for k in NEEDLE_KEYS if k not in needle]
                if absent:
                    problems.append(f"{where} needle {j}: missing keys {absent}")
                    continue
                types_ok = all(isinstance(needle[k], str) for k in ("name", "path", "description")) and all(
                    isinstance(needle[k], int) and not isinstance(needle[k], bool) for k in ("start_byte", "end_byte"))
                if not types_ok:
                    problems.append(f"{where} needle {j}: name, path and description must be texts, start_byte and "
                                    f"end_byte integers (got start_byte {needle['start_byte']!r:.20}, end_byte "
                                    f"{needle['end_byte']!r:.20})")
                elif needle["path"] not in content:
                    problems.append(f"{where} needle {needle['name']!r}: path {needle['path']!r} not in content")
                elif not 0 <= needle["start_byte"] < needle["end_byte"] <= len(content[needle["path"]].encode("utf-8")):
                    problems.append(f"{where} needle {needle['name']!r}: byte span outside its file")
    if not problems and not any(isinstance(repos, list) and any(r.get("needles") for r in repos)
                                for repos in data.values()):
        problems.append("no repo has a needle: nothing to ask (each repo's 'needles' lists the functions to retrieve)")
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SourceError(f"{source}: {len(problems)} problem(s) in RepoQA data:\n  - "
                          + "\n  - ".join(problems[:20]) + more)


def load_repoqa(dataset_repo: str | None = None, languages: list[str] | None = None) -> dict[str, list[dict]]:
    """The release JSON (``.json`` or ``.json.gz``), checked, restricted to ``languages`` if given."""
    path = resolve_path(dataset_repo)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, EOFError) as e:
        raise SourceError(f"{path}: not a readable RepoQA JSON file ({e})") from e
    check_repoqa(data, str(path))
    if languages:
        unknown = sorted(set(languages) - set(data))
        if unknown:
            raise SourceError(f"languages {unknown} not in {path} (it has {sorted(data)})")
        data = {lang: data[lang] for lang in languages}
    return data


def needle_code(repo: dict, needle: dict) -> str:
    source = repo["content"][needle["path"]].encode("utf-8")
    return source[needle["start_byte"] : needle["end_byte"]].decode("utf-8", errors="replace")


def dependency_order(repo: dict) -> list[str]:
    """Files with each one after the files it depends on; ties by path, cycles broken at the smallest path."""
    paths = sorted(repo["content"])
    deps = {p: {d for d in repo.get("dependency", {}).get(p, []) if d in repo["content"] and d != p} for p in paths}
    order, placed = [], set()
    while len(order) < len(paths):
        ready = [p for p in paths if p not in placed and deps[p] <= placed]
        nxt = ready[0] if ready else next(p for p in paths if p not in placed)
        order.append(nxt)
        placed.add(nxt)
    return order


def file_header(language: str, path: str) -> str:
    return f"{COMMENT_PREFIX.get(language, '//')} Path: {path}\n"


def _edge_ids(encode, text: str, n: int, tail: bool) -> list[int]:
    """The last (``tail``) or first ``n`` tokens of ``text``'s tokenisation, tokenising only a window around that end
    (a repo is far longer than a context). The token cut by the window's far edge is dropped."""
    if n <= 0:
        return []
    size = 8 * n + 64
    while size < len(text):
        ids = encode(text[-size:])[1:] if tail else encode(text[:size])[:-1]
        if len(ids) >= n:
            return ids[len(ids) - n :] if tail else ids[:n]
        size *= 2
    ids = encode(text)
    return ids[max(len(ids) - n, 0) :] if tail else ids[:n]


def code_context(tokenizer, repo: dict, needle: dict, language: str, position_ratio: float,
                 budget: int, order: list[str] | None = None) -> dict | None:
    """Token ids of the code context around ``needle`` (None when the needle alone exceeds ``budget``).

    Returns ``{"input_ids", "needle_start", "needle_length"}``: the context is at most ``budget`` tokens; the needle
    takes ``needle_length`` tokens from ``needle_start``, which is ``round(position_ratio * (budget - needle_length))``
    unless the repo has too little code on one side, in which case the other side takes the rest. ``order``: the
    repo's :func:`dependency_order`, when the caller already has it.
    """
    before_parts, after_parts, found = [], [], False
    for path in order or dependency_order(repo):
        header, source = file_header(language, path), repo["content"][path]
        if path != needle["path"]:
            (after_parts if found else before_parts).append(header + source + "\n")
            continue
        raw = source.encode("utf-8")
        before_parts.append(header + raw[: needle["start_byte"]].decode("utf-8", errors="replace"))
        after_parts.append(raw[needle["end_byte"] :].decode("utf-8", errors="replace") + "\n")
        found = True
    encode = functools.partial(token_ids, tokenizer)
    needle_ids = encode(needle_code(repo, needle))
    if len(needle_ids) > budget:
        return None
    rest = budget - len(needle_ids)  # neither side can use more than this
    before_ids = _edge_ids(encode, "".join(before_parts), rest, tail=True)
    after_ids = _edge_ids(encode, "".join(after_parts), rest, tail=False)
    n_before = min(round(position_ratio * rest), len(before_ids))
    n_after = min(rest - n_before, len(after_ids))
    n_before = min(rest - n_after, len(before_ids))  # give the unused share of a short suffix to the prefix
    ids = before_ids[len(before_ids) - n_before :] + needle_ids + after_ids[:n_after]
    return {"input_ids": ids, "needle_start": n_before, "needle_length": len(needle_ids)}


def fenced(code: str, language: str) -> str:
    return f"```{language}\n{code}\n```"


@dataclass
class NeedleTask(AnswerSample):
    """One needle to retrieve: its code context (compressed), the description + instruction, the fenced needle."""

    task_id: str = ""
    language: str = ""
    repo: str = ""
    name: str = ""
    description: str = ""
    position_ratio: float = 0.0
    needle_index: int = 0  # into ``needles``
    needles: list[str] | None = None  # the code of every needle of its repo, for scoring
    needle_start: int = 0  # the needle's first token in ``input_ids``


def build_tasks(tokenizer, data: dict[str, list[dict]], budget: int, position_ratios: list[float],
                layout: Layout | None = None) -> tuple[list, int]:
    """One :class:`NeedleTask` per needle (in file order); returns the tasks and how many needles did not fit in
    ``budget``. ``layout`` (None: native) whose answers have an ``answer_end`` (the original layout): the original's
    task, the bare needle then that end as the target, and, where the layout ``takes_prefix``, the instruction before
    the code context as well (``prefix_ids``)."""
    end = layout.answer_end if layout is not None else None
    prefixed = layout is not None and layout.takes_prefix
    encode = functools.partial(token_ids, tokenizer)
    tasks, skipped = [], 0
    for language, repos in data.items():
        for repo in repos:
            codes = [needle_code(repo, n) for n in repo["needles"]]
            order = dependency_order(repo)
            for i, needle in enumerate(repo["needles"]):
                ratio = position_ratios[i % len(position_ratios)]
                context = code_context(tokenizer, repo, needle, language, ratio, budget, order)
                if context is None:
                    skipped += 1
                    continue
                prompt = f"\n\nFunction description: {needle['description'].strip()}\n\n{INSTRUCTION}\n"
                target = (encode(fenced(codes[i], language)) + [tokenizer.eos_token_id] if end is None
                          else encode(codes[i]) + end)
                tasks.append(NeedleTask(
                    input_ids=context["input_ids"], prompt_ids=encode(prompt), target_ids=target,
                    prefix_ids=encode(INSTRUCTION + "\n\n") if prefixed else [],
                    task_id=f"{language}::{repo['repo']}::{needle['name']}", language=language, repo=repo["repo"],
                    name=needle["name"], description=needle["description"], position_ratio=ratio, needle_index=i,
                    needles=codes, needle_start=context["needle_start"],
                ))
    return tasks, skipped


def load_repoqa_task(config, layout: Layout) -> Split[NeedleTask]:
    """The needles of the configured dataset, split by the training seed (the same split for fine-tuning and
    inference); with ``test_fraction: 0`` every needle is a test task too (a zero-shot run). ``layout``: the model's
    (:mod:`icae.models.framing`), which gives the tokenizer and the task's form."""
    if config.data.task != "repoqa":
        raise ConfigError([f"task: the RepoQA recipes run 'repoqa', got {config.data.task!r}"], "config")
    data = load_repoqa(config.data.dataset_repo, config.repoqa.languages)
    tasks, skipped = build_tasks(layout.tokenizer, data, config.repoqa.code_context_size,
                                 config.repoqa.needle_position_ratios, layout)
    if not tasks:
        raise SourceError(f"{config.data.dataset_repo}: none of the {skipped} needles fits in code_context_size="
                          f"{config.repoqa.code_context_size} tokens: raise code_context_size")
    train, test = split_tasks(tasks, config.data.test_fraction, config.seed)
    return Split(train, test if config.data.test_fraction > 0 else list(tasks), {"skipped_needles": skipped})
