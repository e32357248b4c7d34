"""Scripts that raise real exceptions from real library calls, for the ``traceback`` kind of
:mod:`icae.data.tool_outputs`.

Each template is ``(imports, statement)``: the statement really fails in the named module. Train's templates call
only modules the training trees hold (top-level modules a-m, standard-library packages); held-out ones only modules
n-z, ``yaml``, ``tqdm``, ``nltk`` and ``json`` (which no compressor trains on). The failing statement sits inside one
to three helper functions named after identifiers of the split's trees, as in a reproduction script.
"""

from __future__ import annotations

from icae.data.tool_kinds import identifier

WORDS = ("config", "user_id", "timeout", "payload", "items", "retries", "path", "version", "token", "status")

TRAIN = [
    ("import calendar", "calendar.monthrange({year}, {month13})"),
    ("import datetime", "datetime.datetime.strptime({date!r}, '%Y/%m/%d')"),
    ("import datetime", "datetime.date({year}, 2, {day30})"),
    ("import fractions", "fractions.Fraction({n}, 0)"),
    ("import base64", "base64.b64decode({odd!r})"),
    ("import ast", "ast.literal_eval({expr!r})"),
    ("import configparser", "configparser.ConfigParser().read_string({ini!r})"),
    ("import csv", "list(csv.reader([{csvline!r}], strict=True))"),
    ("import heapq", "heapq.heappop([])"),
    ("import ipaddress", "ipaddress.ip_address({ip!r})"),
    ("import getopt", "getopt.getopt(['-{letter}', 'x'], 'ab')"),
    ("import enum", "enum.Enum('Color', 'RED GREEN BLUE')({n})"),
    ("import inspect", "inspect.signature({n})"),
    ("import copy\nimport threading", "copy.deepcopy({{'lock': threading.Lock(), {key!r}: {n}}})"),
    ("import hashlib", "hashlib.new({word!r})"),
    ("import codecs", "codecs.lookup({word!r})"),
    ("import difflib", "difflib.SequenceMatcher(None, {n}, {n}).ratio()"),
    ("import gzip", "gzip.open({missing!r} + '.gz').read()"),
    ("import collections", "collections.OrderedDict().popitem()"),
    ("import dataclasses", "dataclasses.asdict({n})"),
    ("import bisect", "bisect.insort([1, 2, 3], {word!r})"),
    ("import argparse", "p = argparse.ArgumentParser(prog={prog!r})\n{pad}p.add_argument('--{key}', type=int, required=True)\n{pad}p.parse_args(['--{key}', {word!r}])"),
    ("import asyncio", "async def _go():\n{pad}    await asyncio.sleep(0)\n{pad}    raise RuntimeError({msg!r})\n{pad}asyncio.run(_go())"),
    ("import asyncio", "asyncio.run(asyncio.wait_for(asyncio.sleep(1), timeout=0.001))"),
    ("import re", "re.compile({regex!r})"),
    ("import tomllib", "tomllib.loads({toml!r})"),
    ("import sqlite3", "sqlite3.connect(':memory:').execute({sql!r})"),
    ("import functools", "functools.reduce(lambda a, b: a + b, [])"),
    ("import locale", "locale.setlocale(locale.LC_ALL, 'xx_XX.UTF-8')"),
    ("", "{{{key!r}: 1, 'name': {word!r}}}[{missing!r}]"),
    ("", "int({word!r})"),
]
HELDOUT = [
    ("import json", "json.loads({badjson!r})"),
    ("import json", "json.load(open({missing!r} + '.json'))"),
    ("import os", "os.environ[{env!r}]"),
    ("import pathlib", "pathlib.Path({missing!r}).read_text()"),
    ("import shlex", "shlex.split({unbalanced!r})"),
    ("import statistics", "statistics.mean([])"),
    ("import statistics", "statistics.stdev([{n}])"),
    ("import uuid", "uuid.UUID({word!r})"),
    ("import zipfile\nimport io", "zipfile.ZipFile(io.BytesIO({bytes_!r}))"),
    ("import tarfile", "tarfile.open({missing!r} + '.tar.gz')"),
    ("import textwrap", "textwrap.wrap({msg!r}, width=0)"),
    ("import shutil", "shutil.copy({missing!r}, 'backup/')"),
    ("import subprocess", "subprocess.run([{missing!r}, '--version'], check=True)"),
    ("import subprocess", "subprocess.run(['python', '-c', 'import sys; sys.exit({exitcode})'], check=True)"),
    ("import pickle", "pickle.loads({bytes_!r})"),
    ("import plistlib", "plistlib.loads({bytes_!r})"),
    ("import string", "string.Template('$' + {key!r}).substitute({{}})"),
    ("import random", "random.choice([])"),
    ("import random", "random.randint({n}, 0)"),
    ("import queue", "queue.Queue().get_nowait()"),
    ("import typing", "typing.Dict[str]"),
    ("import secrets", "secrets.token_hex({word!r})"),
    ("import wave", "wave.open({missing!r} + '.wav')"),
    ("import warnings", "warnings.simplefilter('error')\n{pad}warnings.warn({msg!r}, DeprecationWarning)"),
    ("import yaml", "yaml.safe_load({badyaml!r})"),
    ("import yaml", "yaml.safe_load(open({missing!r} + '.yaml'))"),
    ("import tqdm", "for _ in tqdm.tqdm({n}):\n{pad}    pass"),
    ("import nltk", "nltk.word_tokenize({msg!r})"),
    ("from nltk.stem import PorterStemmer", "PorterStemmer().stem({n})"),
    ("", "{{{key!r}: 1, 'name': {word!r}}}[{missing!r}]"),
    ("", "sorted([{n}, {word!r}])"),
]


def _values(ctx, name: str) -> dict:
    rng = ctx.rng
    word = rng.choice([name, *WORDS])
    return {
        "year": rng.randint(1990, 2030), "month13": rng.choice([0, 13, 14, 42]), "day30": rng.choice([30, 31]),
        "date": f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "n": rng.randint(1, 99),
        "odd": "".join(rng.choice("abcdefXYZ0123") for _ in range(rng.choice([5, 9, 13]))),
        "expr": rng.choice([f"{name}(1)", f"[1, 2, {name}]", "{'a': 1,", "__import__('os')"]),
        "ini": f"{name} = 1\n{rng.choice(WORDS)} = 2\n", "csvline": f'{name},"{word}', "letter": rng.choice("xyzq"),
        "ip": rng.choice(["999.1.1.1", "10.0.0", f"{name}.local", "::g"]), "key": rng.choice(WORDS), "word": word,
        "missing": rng.choice([f"{name}", f"data/{name}", f"/tmp/{name}_cache", f"config/{name}"]),
        "prog": name.lower(), "msg": f"{name} failed: {rng.choice(WORDS)} is not set", "pad": "",
        "regex": rng.choice([f"({name}", f"[{name}", f"{name}\\", f"(?P<{name}>x)(?P<{name}>y)", "*" + name]),
        "toml": rng.choice([f"{name} = ", f"[{name}\nkey = 1", f"{name} = 'x'\n{name} = 'y'"]),
        "sql": rng.choice([f"SELEC * FROM {name}", f"SELECT * FROM {name}", f"INSERT INTO {name} VALUES (1"]),
        "badjson": rng.choice([f"{{'{name}': 1}}", f'{{"{name}": 1,}}', f'{{"{name}": [1, 2}}', "", f'["{name}"'])
        + rng.choice(["", "\n"]),
        "env": name.upper(), "unbalanced": f'echo "{name} {word}', "bytes_": rng.choice([b"not a zip", b"\x80\x03}q",
                                                                                          name.encode()]),
        "exitcode": rng.randint(1, 3),
        "badyaml": rng.choice([f"{name}: [1, 2\n{word}: 3\n", f"{name}:\n  - a\n - b\n", f"{name}: {word}: x\n",
                               f"key: '{name}\n"]),
    }


def snippet(ctx) -> str:
    """A reproduction script whose last statement fails in a library of the split."""
    rng = ctx.rng
    tree = ctx.tree()
    names = []
    for _ in range(3):
        n = identifier(ctx, tree).strip("_").lower() or "run"
        names.append(n if n.isidentifier() and n not in names else f"step{len(names)}")
    imports, statement = rng.choice(HELDOUT if ctx.heldout else TRAIN)
    depth = rng.randint(1, 3)
    pad = "    "
    body = statement.format(**{**_values(ctx, names[0]), "pad": pad})
    lines = [imports, "", ""] if imports else []
    lines += [f"def {names[0]}_{depth}():", f"{pad}print({('checking ' + names[0])!r})", pad + body, "", ""]
    for level in range(depth - 1, 0, -1):
        lines += [f"def {names[0]}_{level}():", f"{pad}return {names[0]}_{level + 1}()", "", ""]
    lines += ['if __name__ == "__main__":', f"{pad}{names[0]}_1()", ""]
    return "\n".join(lines)
