"""No tool reaches outside the episode's temporary copy, and nothing a model writes is executed."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icae.agent import Environment, Task, TaskTree, oracle_policy, run_episode, tasks_from_tree
from icae.data import trajectory_tools as tt

SECRET = "TOP_SECRET_VALUE = 42\n"


def cmd(command: str) -> str:
    return tt.assistant_text("thinking", command)


@pytest.fixture
def linked(tmp_path, package):
    """The package with a link to a file outside it and a link to the directory above it; the outside file."""
    outside = tmp_path / "outside.py"
    outside.write_text(SECRET)
    os.symlink(outside, package / "leak.py")
    os.symlink(tmp_path, package / "up")
    tree = TaskTree.whole(package)
    assert {"leak.py", "up"} <= set(tree.files)  # links are part of the tree, copied as links
    return Task(tree, "pkg/mod.py", "greet", 4, "def greet(name):", "Say hello to name."), outside


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command, reason", [
    ("open {outside} 1", "is an absolute path"),
    ("open ../outside.py 1", "leaves the repository"),
    ("open pkg/../../outside.py 1", "leaves the repository"),
    ("open ~/outside.py 1", "is an absolute path"),
    ("open pkg/leak.py 1", "points outside the repository"),
    ("open pkg/up/outside.py 1", "points outside the repository"),
    ("python -m py_compile pkg/leak.py", "points outside the repository"),
    ("python -m py_compile {outside}", "is an absolute path"),
    ("search_dir TOP_SECRET pkg/up", "points outside the repository"),
    ("search_dir TOP_SECRET /", "is an absolute path"),
    ("search_dir TOP_SECRET ..", "leaves the repository"),
])
def test_paths_outside_the_copy_are_refused(linked, command, reason):
    task, outside = linked
    with Environment(task) as env:
        step = env.step(cmd(command.format(outside=outside)))
        assert step.refused and env.refusals == 1 and env.format_errors == 0
        assert step.observation.startswith("Error: ") and reason in step.observation
        assert "TOP_SECRET_VALUE" not in step.observation


def test_a_search_of_the_repository_skips_links_that_point_out(linked):
    task, _ = linked
    with Environment(task) as env:
        assert env.step(cmd("search_dir TOP_SECRET")).observation == (
            'Found 0 matches for "TOP_SECRET" in the repository:\n')
        assert "pkg/mod.py:4:" in env.step(cmd("search_dir greet")).observation


def test_an_edit_through_a_file_swapped_for_a_link_is_refused(linked):
    """The open file is checked again right before the write: a link planted after ``open`` cannot redirect it."""
    task, outside = linked
    before = digest(outside)
    with Environment(task) as env:
        env.step(cmd("open pkg/mod.py 4"))
        target = env.workspace.root / "pkg" / "mod.py"
        target.unlink()
        os.symlink(outside, target)
        step = env.step(cmd("edit 1:1\nHACKED = 1\nend_of_edit"))
        assert step.refused and "points outside the repository" in step.observation
    assert digest(outside) == before


def test_the_copy_is_removed_and_the_tree_never_changes(linked):
    task, outside = linked
    source = task.tree.root
    before = {p: digest(p) for p in source.rglob("*.py") if not p.is_symlink()} | {outside: digest(outside)}
    with Environment(task) as env:
        root = env.workspace.root
        assert root.is_dir() and source not in root.parents and root != source
    assert not root.exists()
    episode = run_episode(oracle_policy(task), task)
    assert episode.success  # it edited its copy ...
    assert {p: digest(p) for p in before} == before  # ... never the tree or the file outside


def test_nothing_from_the_tree_or_the_reply_is_executed(tmp_path, package):
    marker = tmp_path / "executed"
    (package / "boom.py").write_text(textwrap.dedent(f"""\
        open({str(marker)!r}, "w").write("ran")
        import os
        os.system("touch {marker}")
        """))
    task = Task(TaskTree.whole(package), "pkg/mod.py", "greet", 4, "def greet(name):", "Say hello to name.")
    with Environment(task) as env:
        assert env.step(cmd("python -m py_compile pkg/boom.py")).observation == tt.NO_OUTPUT
        assert env.step(cmd("python pkg/boom.py")).action is None  # not a command: a format error
        assert env.step(cmd(f"touch {marker}")).action is None
        assert env.step(cmd(f"search_dir \"$(touch {marker})\"")).observation.startswith("Found 0 matches")
        assert env.step(cmd(f"open pkg/boom.py; touch {marker}")).action is None  # one path, one line: usage
        assert env.format_errors == 3
    assert not marker.exists()


def test_the_agent_room_needs_no_torch(tmp_path, package):
    """Run an oracle episode in a fresh interpreter where ``import torch`` fails (the top-level ``icae`` package loads
    the models only when one of them is asked for)."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        from icae.agent import TaskTree, tasks_from_tree, oracle_policy, run_episode
        task = [t for t in tasks_from_tree(TaskTree.whole(Path({str(package)!r}))) if t.function == "greet"][0]
        print(run_episode(oracle_policy(task), task).success)
        """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"


def test_a_fifo_in_the_tree_is_not_copied(package):
    """Reading a FIFO would block the episode: only regular files and links are copied."""
    os.mkfifo(package / "pipe.py")
    task = Task(TaskTree.whole(package), "pkg/mod.py", "greet", 4, "def greet(name):", "Say hello to name.")
    assert "pipe.py" in task.tree.files
    assert [t.function for t in tasks_from_tree(task.tree)] == ["greet", "shout", "helper"]  # listed without reading it
    with Environment(task) as env:
        assert not (env.workspace.root / "pkg" / "pipe.py").exists()
        assert env.step(cmd('search_dir "def greet("')).observation.endswith("pkg/mod.py:4:def greet(name):")
