"""Renamed copies of generated trajectories (icae.data.renamed_tasks, the generator's ``--renames``): each copy is what
the tools show on a tree whose file was renamed so, and the copies are drawn deterministically."""

import json
import random
import re
import shutil
import sysconfig
from pathlib import Path

import pytest

from icae.agent import TaskTree
from icae.data import renamed_tasks as rn
from icae.data.generate_trajectories import generate, main, make_trajectory, tool_record

JSON = Path(sysconfig.get_paths()["stdlib"]) / "json"
ASKED = re.compile(r"definition of `([^`]+)` that summarises it: \"(.*)\"$")


def test_rename_text_replaces_whole_words_and_the_summary_in_one_pass():
    text = "def load(fp):\n    load(x); loads(y); _load; load_all; obj.load()\n    # Load a thing with load.\n"
    assert rn.rename_text(text, "load", "Load a thing with load.", "fetch", "Read it, then load it.") == (
        "def fetch(fp):\n    fetch(x); loads(y); _load; load_all; obj.fetch()\n    # Read it, then load it.\n")
    # the old summary inside the new name's reach is not rewritten twice; a new summary naming the new name stays
    assert rn.rename_text("a b", "a", "b", "b", "a") == "b a"


def test_renamed_record_escapes_the_summary_inside_tool_call_arguments():
    summary = 'Return "x"\tlater'
    args = json.dumps({"replacement_text": f"def f():\n    # {summary}\n"}, ensure_ascii=False)
    record = {"id": "t", "messages": [
        {"role": "user", "content": f'Document `f`: "{summary}"'},
        {"role": "assistant", "content": "f", "tool_calls": [{"id": "c", "type": "function",
                                                              "function": {"name": "edit", "arguments": args}}]}]}
    out = rn.renamed_record(record, "f", summary, "g_h", "Do it.", "t_r1")
    assert out["id"] == "t_r1" and record["id"] == "t"  # a copy: the record is left as it was
    assert out["messages"][0]["content"] == 'Document `g_h`: "Do it."'
    assert json.loads(out["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "replacement_text": "def g_h():\n    # Do it.\n"}
    assert out["messages"][1]["content"] == "g_h"


def test_pools_come_from_the_sources():
    source = 'class Reader_Base:\n    """Read records from a file."""\n\ndef read_all(fp, max_size):\n' \
             '    """Say "hi"."""\n    return fp.read(max_size)\n'
    assert rn.identifiers([source, "not python ("]) == {"Reader_Base", "read_all", "fp", "max_size", "read"}
    assert rn.name_parts(["read_all", "max_size", "x", "Reader_Base", "if_else"]) == ["all", "max", "read",
                                                                                     "size"]
    assert rn.summaries([source]) == ["Read records from a file."]  # the quoted one is left out
    rng = random.Random(0)
    names = {rn.new_name(rng, ["ab", "cd"], {"ab_cd"}) for _ in range(50)}
    assert "ab_cd" not in names and names <= {"ab_ab", "cd_ab", "cd_cd", "ab_ab_ab", "ab_ab_cd", "ab_cd_ab",
                                              "ab_cd_cd", "cd_ab_ab", "cd_ab_cd", "cd_cd_ab", "cd_cd_cd"}
    with pytest.raises(ValueError, match="at least 2 name parts"):
        rn.new_name(rng, ["ab"], set())


@pytest.mark.parametrize("tools", [False, True])
def test_each_copy_is_what_the_tools_show_on_the_renamed_tree(tmp_path, tools):
    rows = generate([JSON], 2, seed=5, tools=tools, renames=2)
    assert len(rows) == 6 and [r["id"].endswith(s) for r, s in zip(rows, ["", "_r1", "_r2"] * 2)] == [True] * 6
    assert rows == generate([JSON], 2, seed=5, tools=tools, renames=2)
    taken = rn.identifiers(p.read_text() for p in JSON.rglob("*.py"))
    for i, original in enumerate(rows[0::3]):
        name, summary = ASKED.search(original["messages"][1]["content"]).groups()
        path, line = re.search(r"\n(\S+\.py):(\d+):def ", original["messages"][3]["content"]).groups()
        for copy in rows[3 * i + 1: 3 * i + 3]:
            to_name, to_summary = ASKED.search(copy["messages"][1]["content"]).groups()
            assert to_name not in taken and to_summary != summary and copy["id"].startswith(original["id"])
            tree = tmp_path / f"{copy['id']}" / "json"
            shutil.copytree(JSON, tree, ignore=shutil.ignore_patterns("__pycache__"))
            file = tree.parent / path
            file.write_text(rn.rename_text(file.read_text(), name, summary, to_name, to_summary))
            function = (path, to_name, int(line), to_summary)
            made = tool_record(TaskTree.whole(tree), function, i) if tools else make_trajectory(tree, function, i)
            assert made["messages"] == copy["messages"]


def test_renames_change_only_the_copies_and_the_cli_refuses_a_negative_count(tmp_path):
    plain = generate([JSON], 3, seed=1, tools=True)
    assert generate([JSON], 3, seed=1, tools=True, renames=1)[0::2] == plain
    assert generate([JSON], 3, seed=2, tools=True, renames=1)[1::2] != generate([JSON], 3, seed=1, tools=True,
                                                                               renames=1)[1::2]
    out = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as e:
        from icae.errors import entry
        entry(main, ["--stdlib", "json", "--num", "1", "--renames", "-1", "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
    main(["--stdlib", "json", "--num", "1", "--renames", "2", "--tools", "--out", str(out)])
    assert len(out.read_text().splitlines()) == 3
