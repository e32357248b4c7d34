import ast
import gzip
import json

import pytest

from icae.data.build_repoqa import build_dataset, dependencies, write_dataset
from icae.scripts.build_repoqa import main
from icae.data.repoqa import needle_code

UTIL = '''"""Helpers."""
import os


def shared(x):
    """Appears twice in the repo, so it is never a needle."""
    return x


def clamp(value, low, high):
    """Limit value to the range [low, high]."""
    if value < low:
        return low
    return min(value, high)


def no_doc(a):
    return a * 2


def one_line(): """Docstring only: no body besides it."""
'''

CORE = '''from . import util
from .util import clamp


class Scaler:
    def shared(self):
        return 1

    @staticmethod
    def scale_all(values, factor):
        """Multiply every value by factor, clamped to 0..100."""
        return [clamp(v * factor, 0, 100) for v in values]


def huge():
    """Too long to be a needle."""
''' + "    x = 1\n" * 400 + "    return x\n"


@pytest.fixture
def tree(tmp_path):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from toy.core import Scaler\n")
    (pkg / "util.py").write_text(UTIL)
    (pkg / "core.py").write_text(CORE)
    return pkg


def test_needles_are_unique_documented_small_functions(tree):
    repo = build_dataset([tree], seed=0)["python"][0]
    assert repo["repo"] == "local/toy"
    names = sorted(n["name"] for n in repo["needles"])
    # shared: defined twice; no_doc: no docstring; one_line: nothing besides the docstring; huge: > 2000 bytes
    assert names == ["clamp", "scale_all"]
    for needle in repo["needles"]:
        code = needle_code(repo, needle)
        assert code.startswith(f"def {needle['name']}(")  # decorators excluded, from the def keyword
        assert needle["description"] not in code and '"""' not in code  # docstring removed from the code
        assert needle["description"] not in repo["content"][needle["path"]]
        ast.parse(repo["content"][needle["path"]])  # the stripped file is still valid Python
        assert code in repo["content"][needle["path"]]
    clamp = next(n for n in repo["needles"] if n["name"] == "clamp")
    assert clamp["description"] == "Limit value to the range [low, high]."
    lines = repo["content"]["util.py"].splitlines()
    assert lines[clamp["start_line"]].startswith("def clamp") and lines[clamp["end_line"]].strip() == "return min(value, high)"
    assert {f["name"] for f in repo["functions"]["core.py"]} == {"shared", "scale_all", "huge"}


def test_keep_docstrings_leaves_code_untouched(tree):
    repo = build_dataset([tree], seed=0, keep_docstrings=True)["python"][0]
    assert repo["content"]["util.py"] == UTIL
    clamp = next(n for n in repo["needles"] if n["name"] == "clamp")
    assert '"""Limit value to the range [low, high]."""' in needle_code(repo, clamp)


def test_needle_size_limit_and_count(tree):
    small = build_dataset([tree], max_needle_bytes=92)["python"][0]
    assert [n["name"] for n in small["needles"]] == ["scale_all"]  # clamp: 95 bytes without its docstring; scale_all: 89
    with pytest.raises(ValueError, match="no needle found"):
        build_dataset([tree], max_needle_bytes=10)
    assert len(build_dataset([tree], needles_per_repo=1)["python"][0]["needles"]) == 1


def test_dependencies_resolve_relative_and_absolute_imports(tree):
    files = {p.name: p.read_text() for p in tree.iterdir()}
    deps = dependencies(files, package="toy")
    assert deps == {"__init__.py": ["core.py"], "core.py": ["__init__.py", "util.py"], "util.py": []}


def test_deterministic_and_gzip(tree, tmp_path):
    a = write_dataset(build_dataset([tree], seed=3), tmp_path / "a.json.gz")
    b = main(["--source", str(tree), "--seed", "3", "--out", str(tmp_path / "b.json.gz")])
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(gzip.decompress(a.read_bytes()))["python"][0]["repo"] == "local/toy"


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        build_dataset([tmp_path / "nope"])
