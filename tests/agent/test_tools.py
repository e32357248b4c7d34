"""Each tool's effect on a real small tree (tests/agent/conftest.py: pkg/mod.py, pkg/sub/util.py), its observation
written out by hand; the step limit; format errors in text and tool mode."""

import subprocess
import sys
from pathlib import Path

import pytest

from icae.agent import Environment, parse_command, parse_tool_call, tool_call
from icae.agent.actions import FormatError, read_reply
from icae.data import trajectory_tools as tt

from .conftest import MOD


def cmd(command: str) -> str:
    return tt.assistant_text("thinking", command)


def test_search_dir_lists_every_matching_line_in_file_order(greet_task):
    with Environment(greet_task) as env:
        step = env.step(cmd('search_dir "greet"'))
        assert step.observation == ('Found 4 matches for "greet" in the repository:\n'
                                    "pkg/mod.py:4:def greet(name):\n"
                                    "pkg/sub/util.py:1:from pkg.mod import greet\n"
                                    'pkg/sub/util.py:5:"""Double x, then greet."""\n'
                                    "pkg/sub/util.py:6:return greet(str(2 * x))")
        assert env.step(cmd("search_dir greet pkg/sub")).observation.startswith(
            'Found 3 matches for "greet" in the repository:\npkg/sub/util.py:1:')
        assert env.step(cmd("search_dir 'no such text'")).observation == (
            'Found 0 matches for "no such text" in the repository:\n')
        assert env.step(cmd("search_dir greet pkg/nothere")).observation == "Directory pkg/nothere not found"
        assert env.format_errors == 0 and env.steps == 4


def test_search_lists_twenty_hits_but_counts_all():
    files = [("a.py", "x\n" * 30)]
    out = tt.search("x", files)
    assert out.startswith('Found 30 matches for "x"') and out.count("\n") == 20 and out.endswith("a.py:20:x")


def test_open_shows_the_window_and_handles_bad_paths_and_lines(greet_task):
    with Environment(greet_task) as env:
        body = "\n".join(f"{i}:{line}" for i, line in enumerate(MOD.splitlines(), 1))
        assert env.step(cmd("open pkg/mod.py 4")).observation == (
            f"[File: pkg/mod.py (11 lines total)]\n(0 more lines above)\n{body}\n(0 more lines below)")
        assert env.current.shown == "pkg/mod.py"
        assert env.step(cmd("open ./pkg//mod.py 4")).observation.startswith("[File: pkg/mod.py (11 lines total)]")
        assert env.step(cmd("open pkg/mod.py 40")).observation.startswith(
            "Warning: <line> (40) is greater than the number of lines in the file (11)\n"
            "Warning: Setting <line> to 11\n[File: pkg/mod.py")
        assert env.step(cmd("open pkg/mod.py 0")).observation == "Error: <line> must be at least 1, got 0"
        assert env.step(cmd("open pkg/gone.py 1")).observation == "File pkg/gone.py not found"
        assert env.step(cmd("open pkg/sub")).observation.startswith("Error: pkg/sub is a directory")


def test_window_arithmetic_on_a_long_file():
    lines = [f"l{i}" for i in range(1, 101)]
    out = tt.window("a.py", lines, 50)  # lines 38..61: 12 above the centre line, 24 in all
    assert out.splitlines()[:3] == ["[File: a.py (100 lines total)]", "(37 more lines above)", "38:l38"]
    assert out.splitlines()[-2:] == ["61:l61", "(39 more lines below)"]
    assert len(out.splitlines()) == 2 + 24 + 1
    near_end = tt.window("a.py", lines, 99).splitlines()  # not shifted back: lines 87..100 only
    assert near_end[1:3] == ["(86 more lines above)", "87:l87"] and near_end[-2:] == ["100:l100", "(0 more lines below)"]


def test_edit_replaces_lines_of_the_open_file_on_disk(greet_task):
    with Environment(greet_task) as env:
        assert env.step(cmd("edit 4:4\nend_of_edit")).observation == "No file open. Use the open command first."
        env.step(cmd("open pkg/mod.py 9"))
        step = env.step(cmd('edit 10:11\n    return text.upper() + "!"\nend_of_edit'))
        lines = MOD.splitlines()[:9] + ['    return text.upper() + "!"']
        assert (env.workspace.root / "pkg/mod.py").read_text() == "\n".join(lines) + "\n"
        assert step.observation == tt.window("pkg/mod.py", lines, 10)
        assert "10:    return text.upper() + \"!\"\n(0 more lines below)" in step.observation
        assert env.step(cmd("edit 9:12\nx\nend_of_edit")).observation.startswith("Error: edit 9:12 must name lines")
        assert env.step(cmd("edit 3:2\nx\nend_of_edit")).observation.startswith("Error: edit 3:2")
        env.step(cmd("edit 2:3\nend_of_edit"))  # an empty body deletes
        assert (env.workspace.root / "pkg/mod.py").read_text().splitlines()[:2] == ["import os", "def greet(name):"]
        assert env.workspace.changed() == ["pkg/mod.py"]


def test_edit_refuses_a_file_that_is_not_utf8(tree, greet_task):
    (tree.root / "latin.py").write_bytes(b"# caf\xe9\nx = 1\n")
    from icae.agent import Task, TaskTree

    task = Task(TaskTree.whole(tree.root), greet_task.path, "greet", 4, "def greet(name):", "Say hello to name.")
    with Environment(task) as env:
        assert "1:# caf\ufffd" in env.step(cmd("open pkg/latin.py 1")).observation
        assert env.step(cmd("edit 2:2\nx = 2\nend_of_edit")).observation == (
            "Error: pkg/latin.py is not UTF-8 text; it cannot be edited.")
        assert env.workspace.changed() == []


def real_py_compile(tmp_path, rel: str, source: bytes) -> str:
    """What ``python -m py_compile rel`` really prints (run in a scratch copy, never in the workspace)."""
    (tmp_path / "real" / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "real" / rel).write_bytes(source)
    run = subprocess.run([sys.executable, "-m", "py_compile", rel], cwd=tmp_path / "real", capture_output=True,
                         text=True, timeout=60)
    return (run.stdout + run.stderr).strip() or tt.NO_OUTPUT


def test_py_compile_reports_what_python_m_py_compile_prints(greet_task, tmp_path):
    with Environment(greet_task) as env:
        assert env.step(cmd("python -m py_compile pkg/mod.py")).observation == tt.NO_OUTPUT
        env.step(cmd("open pkg/mod.py 4"))
        env.step(cmd("edit 4:4\ndef greet(name:\nend_of_edit"))
        out = env.step(cmd("python3 -m py_compile pkg/mod.py")).observation
        assert out.startswith('File "pkg/mod.py", line 4') and "SyntaxError: " in out
        assert out == real_py_compile(tmp_path, "pkg/mod.py", (env.workspace.root / "pkg/mod.py").read_bytes())
        assert env.step(cmd("python -m py_compile pkg/gone.py")).observation == (
            "[Errno 2] No such file or directory: 'pkg/gone.py'")
        assert not list(env.workspace.root.rglob("__pycache__"))  # nothing written: compile() in memory


@pytest.mark.parametrize("source", [
    b"def f(:\n    pass\n",  # SyntaxError with a caret
    b"def f():\n\treturn 1\n        return 2\n",  # TabError: py_compile's "Sorry: ..." line
    b"x = 1\nif x is 1:\n    pass\nassert (x, 'm')\ns = '\\d'\n",  # two SyntaxWarnings printed, a DeprecationWarning not
    b"a = 1\x00\n",  # null byte
    b"x = (\n",  # unexpected end of file
])
def test_compile_output_equals_the_real_command(tmp_path, source):
    assert tt.compile_output(source, "pkg/m.py") == real_py_compile(tmp_path, "pkg/m.py", source)


def test_submit_shows_the_diff_and_ends_the_episode(greet_task):
    with Environment(greet_task) as env:
        env.step(cmd("open pkg/mod.py 4"))
        env.step(cmd("edit 4:4\ndef greet(name):\n    # Say hello to name.\nend_of_edit"))
        step = env.step(cmd("submit"))
        assert step.observation == ('--- a/pkg/mod.py\n+++ b/pkg/mod.py\n@@ -2,6 +2,7 @@\n \n \n def greet(name):\n'
                                    '+    # Say hello to name.\n     """Say hello to name."""\n     return "hi " + name\n \n')
        assert step.done and env.submitted and env.steps == 3
        with pytest.raises(RuntimeError, match="over"):
            env.step(cmd("submit"))


def test_submit_with_no_change(greet_task):
    with Environment(greet_task) as env:
        assert env.step(cmd("submit")).observation == tt.NO_OUTPUT


def test_the_step_limit_ends_the_episode(greet_task):
    with Environment(greet_task, max_steps=2) as env:
        assert not env.step("no block").done
        assert env.step(cmd('search_dir "x"')).done and not env.submitted and env.steps == 2


@pytest.mark.parametrize("reply, problem", [
    ("I will search now.", "no ``` command block"),
    (cmd("submit") + "\n" + cmd("submit"), "2 command blocks"),
    (cmd("ls -la"), "`ls` is not a command here"),
    (cmd("python reproduce.py"), "`python` is not a command here"),
    (cmd("open"), "usage: open <path> [<line>]"),
    (cmd("open pkg/mod.py four"), "the line must be a whole number"),
    (cmd("search_dir a b c"), 'usage: search_dir "<text>" [<dir>]'),
    (cmd("edit 4:4\ndef greet(name):"), "does not end with end_of_edit"),
    (cmd("edit four\nx\nend_of_edit"), "usage: edit <start>:<end>"),
    (cmd('search_dir "unclosed'), "the command cannot be read"),
    (cmd('search_dir "a"\nopen pkg/mod.py 1'), "one command per turn"),
    (cmd("submit now"), "submit takes no argument"),
    (cmd(""), "the command block is empty"),
    ("", "the reply is empty"),
    (None, "the reply is empty"),
    ({"role": "assistant", "content": None}, "the reply is empty"),
])
def test_malformed_text_replies_are_format_errors(greet_task, reply, problem):
    with Environment(greet_task) as env:
        step = env.step(reply)
        assert step.action is None and env.format_errors == 1 and not step.done
        assert step.observation.startswith("Your reply was not formatted correctly: ") and problem in step.observation
        assert "DISCUSSION\n<one line>\n\n```\n<command>\n```" in step.observation
        assert env.workspace.changed() == []


def test_equivalent_spellings_are_the_same_action():
    assert parse_command("search_dir 'def f('").command == 'search_dir "def f("'
    assert parse_command("open  ./a.py   3  ").command == "open ./a.py 3"
    assert parse_command("python3 -m py_compile a.py").command == "python -m py_compile a.py"
    assert parse_command("edit 2 : 3\nx  \nend_of_edit\n\n").lines == ("x  ",)  # the new lines kept as written
    assert read_reply("```bash\nsubmit\n```").action.name == "submit"


def call(name, arguments, id_="c1"):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize("message, problem", [
    ({"role": "assistant", "content": "```\nsubmit\n```"}, "no tool call"),
    ({"tool_calls": [call("submit", "{}"), call("submit", "{}", "c2")]}, "2 tool calls"),
    ({"tool_calls": [call("bash", '{"command": "ls"}')]}, "there is no tool 'bash'"),
    ({"tool_calls": [call("open", '{"path": ')]}, "the arguments of open are not JSON"),
    ({"tool_calls": [call("open", "{}")]}, "missing ['path']"),
    ({"tool_calls": [call("open", '{"path": "a.py", "line": 3}')]}, "unknown ['line']"),
    ({"tool_calls": [call("open", '{"path": "a.py", "line_number": "x"}')]}, "line_number must be a whole number"),
    ({"tool_calls": [call("edit", {"start_line": 1, "end_line": 1, "replacement_text": 5})]},
     "replacement_text must be a string"),
    ({"tool_calls": [call("search_dir", '["def"]')]}, "must be a JSON object"),
])
def test_malformed_tool_calls_are_format_errors(greet_task, message, problem):
    with Environment(greet_task) as env:
        step = env.step(message, mode="tools")
        assert step.action is None and env.format_errors == 1
        assert step.observation.startswith("Your reply was not formatted correctly: ") and problem in step.observation
        assert step.call_ids == tuple(c["id"] for c in message.get("tool_calls", []))


def test_tool_calls_read_back_to_the_same_actions(greet_task):
    for _, command in greet_task.reference:
        action = parse_command(command)
        assert parse_tool_call(**tool_call(action)) == action
    edit = parse_tool_call("edit", {"start_line": "4", "end_line": 4, "replacement_text": "a\nb"})
    assert (edit.start, edit.lines) == (4, ("a", "b"))  # a numeric string is a line number; no trailing newline
    assert parse_tool_call("edit", {"start_line": 1, "end_line": 1, "replacement_text": "\n"}).lines == ("",)
    assert parse_tool_call("edit", {"start_line": 1, "end_line": 1, "replacement_text": ""}).lines == ()
    with pytest.raises(FormatError):
        parse_tool_call("submit", {"now": True})


def test_tool_errors_are_observations_not_exceptions(greet_task, monkeypatch):
    with Environment(greet_task) as env:
        env.step(cmd("open pkg/mod.py 4"))
        bad = {"tool_calls": [call("edit", '{"start_line": 4, "end_line": 4, "replacement_text": "x = \\ud800"}')]}
        assert env.step(bad, mode="tools").observation == (
            "Error: the new lines are not valid UTF-8 text; nothing was changed.")

        def unreadable(self):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "read_bytes", unreadable)  # as a file the copy cannot read (root reads anything)
        assert env.step(cmd("open pkg/mod.py 1")).observation == "Error: Permission denied"
        monkeypatch.undo()
        assert env.workspace.changed() == [] and env.format_errors == 0 and env.steps == 3
