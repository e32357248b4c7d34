import pytest

from icae.agent import TaskTree, tasks_from_tree

MOD = ('import os\n\n\ndef greet(name):\n    """Say hello to name."""\n    return "hi " + name\n\n\n'
       'def shout(text):\n    """Return text in capitals."""\n    return text.upper()\n')
UTIL = ('from pkg.mod import greet\n\n\ndef helper(x):\n    """Double x, then greet."""\n    return greet(str(2 * x))\n')


def make_package(parent):
    """``parent/pkg``: mod.py (greet, shout), sub/util.py (helper, which calls greet) and an empty __init__.py."""
    pkg = parent / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(MOD)
    (pkg / "sub" / "util.py").write_text(UTIL)
    return pkg


@pytest.fixture
def package(tmp_path):
    return make_package(tmp_path / "src")


@pytest.fixture
def tree(package):
    return TaskTree.whole(package)


@pytest.fixture
def greet_task(tree):
    (task,) = [t for t in tasks_from_tree(tree) if t.function == "greet"]
    return task
