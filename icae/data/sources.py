"""Reading documents from a Hugging Face dataset or from local files and directories.

Local sources: a text file (.txt, .md, .py, any extension) is one document; .jsonl / .json (a list of records) /
.parquet files hold records whose ``text_field`` is a document; a directory is walked in sorted order, its files with
one of ``extensions`` being documents and its record files read as above. Anything else is a hub dataset name.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

from icae.errors import UserError

RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")
WHOLE_TEXT_CHARS = 1_000_000  # documents up to this size are tokenised whole, whatever the token budget


class SourceError(UserError):
    """A source that cannot be read or holds no text."""


def json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """``(line number, value)`` of each non-empty line of a JSONL file (1-based); a bad line is a SourceError naming
    the file and the line."""
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield i, json.loads(line)
                    except ValueError as e:
                        raise SourceError(f"{path}:{i}: not a JSON line ({e})") from None
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e})") from None


def json_file(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e})") from None
    except ValueError as e:
        raise SourceError(f"{path}: not a JSON file ({e})") from None


def _records(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix == ".parquet":
        from datasets import Dataset

        try:
            ds = Dataset.from_parquet(str(path))
        except Exception as e:  # pyarrow raises its own types for a file that is not parquet
            raise SourceError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        if text_field not in ds.column_names:
            raise SourceError(f"{path}: no column {text_field!r} (columns: {ds.column_names}); set text_field")
        yield from ds[text_field]
        return
    if path.suffix == ".json":
        data = json_file(path)
        if not isinstance(data, list):
            raise SourceError(f"{path}: a .json source must be a list of records, got {type(data).__name__}")
        records = ((f"record {i}", r) for i, r in enumerate(data, 1))
    else:
        records = ((f"line {i}", r) for i, r in json_lines(path))
    for where, rec in records:
        if not isinstance(rec, dict) or text_field not in rec:
            raise SourceError(f"{path}: {where} has no field {text_field!r}; set text_field")
        if not isinstance(rec[text_field], str):
            raise SourceError(f"{path}: {where}: field {text_field!r} is a {type(rec[text_field]).__name__}, not text")
        yield rec[text_field]


def _local(path: Path, text_field: str, extensions: list[str]) -> Iterator[str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f.suffix in RECORD_SUFFIXES:
            yield from _records(f, text_field)
        elif path.is_file() or f.suffix in extensions:
            try:
                yield f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                if path.is_file():
                    raise SourceError(f"{f}: not UTF-8 text ({e})") from e  # a directory skips binary files


def iter_documents(
    source: str,
    split: str = "train",
    text_field: str = "text",
    extensions: list[str] | None = None,
    config_name: str | None = None,
) -> Iterator[str]:
    """Yield the non-empty documents of ``source`` in a deterministic order."""
    if not source:
        raise SourceError("no dataset_repo given: name a hub dataset or a local file/directory")
    path = Path(source).expanduser()
    if path.exists():
        docs = _local(path, text_field, extensions or [".py", ".txt", ".md", ".rst"])
    elif source.startswith((".", "/", "~")) or Path(source).suffix in (*RECORD_SUFFIXES, ".txt"):
        raise SourceError(f"no such file or directory: {source}")
    else:
        docs = _hub(source, split, text_field, config_name)
    for doc in docs:
        if isinstance(doc, str) and doc.strip():
            yield doc


def hub_dataset(name: str, split: str, config_name: str | None = None):
    """A Hugging Face dataset split, or a :class:`SourceError` naming the dataset, the split and the reason."""
    from datasets import load_dataset

    try:
        return load_dataset(name, config_name, split=split)
    except Exception as e:  # the hub client raises many types; the user needs the name and the reason
        raise SourceError(f"could not load dataset {name!r} (split {split!r}): {type(e).__name__}: {e}") from e


def _hub(name: str, split: str, text_field: str, config_name: str | None) -> Iterator[str]:
    ds = hub_dataset(name, split, config_name)
    if text_field not in ds.column_names:
        raise SourceError(f"dataset {name!r}: no column {text_field!r} (columns: {ds.column_names}); set text_field")
    yield from ds[text_field]


def token_prefix(tokenizer, text: str, needed: int | None) -> list[int]:
    """The first ``needed`` token ids of ``text`` (all of them when None), tokenising only a prefix of the text that
    holds them: one 50 MB record costs what its first ``needed`` tokens cost, not 13 M tokens.

    A text under ``WHOLE_TEXT_CHARS`` is tokenised whole (all its windows are used, as before budgets were bounded
    per record). A longer one is tokenised by prefixes of 8 characters per token needed, doubling until a prefix holds
    ``needed`` tokens and a margin: tokens far from the cut are the ones the whole text gives (byte-level BPE
    pre-splits at word boundaries)."""
    if needed is None or len(text) <= WHOLE_TEXT_CHARS:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    margin = 16  # tokens near the cut may merge differently with what follows it: never used
    size = max(8 * needed + 256, WHOLE_TEXT_CHARS)
    while size < len(text):
        ids = tokenizer(text[:size], add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) >= needed + margin:
            return ids[:needed]
        size *= 2
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def split_tasks(tasks: list, test_fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle by ``seed`` and hold out ``test_fraction`` of the tasks (at least one when there are two or more);
    both parts keep the original order. Fine-tuning and inference with the same seed see the same split."""
    n = len(tasks)
    n_test = round(n * test_fraction)
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    test = set(order[:n_test])
    return [t for i, t in enumerate(tasks) if i not in test], [t for i, t in enumerate(tasks) if i in test]
