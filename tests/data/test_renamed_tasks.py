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
    taken = {"ab_cd"}
    to_name, to_summary = rn.draw(random.Random(1), "walk", "Walk it.", ["ab", "cd"], ["Walk it.", "Use walk."
                                                                                     , "Go on."], taken)
    assert to_summary == "Go on." and to_name in taken  # not its own summary, none naming the old function
    assert {rn.draw(random.Random(s), "f", "x", ["ab", "cd", "ef", "gh"], ["y"], set())[0] for s in range(8)} != {
        rn.draw(random.Random(0), "f", "x", ["ab", "cd", "ef", "gh"], ["y"], set())[0]}  # the draw follows the rng
    with pytest.raises(ValueError, match="no other docstring summary"):
        rn.draw(random.Random(0), "f", "x", ["ab", "cd"], ["x"], set())


def test_a_copy_renames_the_function_file_only(tmp_path):
    """What the reviewer found on `email`: another file's comment quoting `def walk(` and a function named like its
    file. On the renamed tree the search finds the one definition, the other file keeps its comment, the path stays."""
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "walk.py").write_text('import os\n\n\ndef walk(top_dir):\n    """Walk the tree below a directory."""\n'
                                 '    return os.walk(top_dir)\n')
    (pkg / "other.py").write_text('# I.e. def walk(self): see walk.py\n\n\ndef read_text(path_name):\n'
                                  '    """Read a whole text file."""\n    return open(path_name).read()\n\n\n'
                                  'def write_text(path_name, text_data):\n    """Write a whole text file."""\n'
                                  '    return open(path_name, "w").write(text_data)\n')
    rows = generate([pkg], 3, seed=0, tools=True, renames=2)
    copies = [r for r in rows if "__walk__" in r["id"]]
    original, *renamed = copies
    assert len(renamed) == 2 and "Found 2 matches" in original["messages"][3]["content"]  # the comment matches too
    for copy in renamed:
        to_name = ASKED.search(copy["messages"][1]["content"]).group(1)
        search = copy["messages"][3]["content"]
        assert search.startswith(f'Found 1 matches for "def {to_name}(" in the repository:') and "other.py" not in search
        opened = json.loads(copy["messages"][4]["tool_calls"][0]["function"]["arguments"])
        assert opened == {"path": "pkg/walk.py", "line_number": 4}  # the path keeps its name


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


def test_renames_change_only_the_copies_and_the_cli_refuses_bad_counts_and_poor_sources(tmp_path):
    plain = generate([JSON], 3, seed=1, tools=True)
    assert generate([JSON], 3, seed=1, tools=True, renames=1)[0::2] == plain
    out = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as e:
        from icae.errors import entry
        tiny = tmp_path / "tiny"
        tiny.mkdir()
        (tiny / "m.py").write_text('def only(x):\n    """The only one."""\n    return x\n')
        entry(main, ["--source", str(tiny), "--num", "1", "--renames", "1", "--out", str(out)])
    assert e.value.code == 2 and not out.exists()  # one summary: nothing else to give a copy
    with pytest.raises(SystemExit) as e:
        from icae.errors import entry
        entry(main, ["--stdlib", "json", "--num", "1", "--renames", "-1", "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
    main(["--stdlib", "json", "--num", "1", "--renames", "2", "--tools", "--out", str(out)])
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("tools", [False, True])
def test_moved_copies_are_what_the_tools_show_under_their_new_paths(tmp_path, tools):
    rows = generate([JSON], 2, seed=5, tools=tools, renames=2, rename_paths=True)
    plain = generate([JSON], 2, seed=5, tools=tools, renames=2)
    assert rows[0::3] == plain[0::3]  # the originals stay where they are
    assert rows == generate([JSON], 2, seed=5, tools=tools, renames=2, rename_paths=True)  # deterministic
    json_files = {p.relative_to(JSON).as_posix() for p in JSON.rglob("*.py")}
    for i, original in enumerate(rows[0::3]):
        name, summary = ASKED.search(original["messages"][1]["content"]).groups()
        path, line = re.search(r"\n(\S+\.py):(\d+):def ", original["messages"][3]["content"]).groups()
        assert path.startswith("json/")
        for copy in rows[3 * i + 1: 3 * i + 3]:
            to_name, to_summary = ASKED.search(copy["messages"][1]["content"]).groups()
            moved, moved_line = re.search(r"\n(\S+\.py):(\d+):def ", copy["messages"][3]["content"]).groups()
            tree_name, rel = moved.split("/", 1)
            assert moved_line == line and rel not in json_files  # a new file name, the same line
            assert Path(rel).parent == Path(path.split("/", 1)[1]).parent  # in the same directory of the tree
            # the same copy made by hand: the tree copied under its new name, the file moved and renamed inside
            tree = tmp_path / copy["id"] / tree_name
            shutil.copytree(JSON, tree, ignore=shutil.ignore_patterns("__pycache__"))
            (tree / path.split("/", 1)[1]).rename(tree / rel)
            file = tree / rel
            file.write_text(rn.rename_text(file.read_text(), name, summary, to_name, to_summary))
            function = (moved, to_name, int(line), to_summary)
            made = tool_record(TaskTree.whole(tree), function, i) if tools else make_trajectory(tree, function, i)
            assert made["messages"] == copy["messages"]
            if tools:
                opened = json.loads(copy["messages"][4]["tool_calls"][0]["function"]["arguments"])
                assert opened == {"path": moved, "line_number": int(line)}


def test_moved_puts_the_tree_back_and_rename_paths_needs_renames(tmp_path):
    root = tmp_path / "a" / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "m.py").write_text("x = 1\n")
    with rn.moved(root, "other", "sub/m.py", "sub/n.py") as new_root:
        assert new_root == tmp_path / "a" / "other" and (new_root / "sub" / "n.py").read_text() == "x = 1\n"
        assert not root.exists()
    assert (root / "sub" / "m.py").read_text() == "x = 1\n" and not (tmp_path / "a" / "other").exists()
    tree, rel = rn.new_place(random.Random(0), ["alpha", "beta"], "sub/m.py", ["sub/m.py"])
    assert re.fullmatch(r"(alpha|beta)(_(alpha|beta))?", tree)
    assert re.fullmatch(r"sub/(alpha|beta)(_(alpha|beta))?\.py", rel)
    with pytest.raises(ValueError, match="rename_paths moves the renamed copies"):
        generate([JSON], 1, tools=True, rename_paths=True)
    with pytest.raises(SystemExit) as e:
        from icae.errors import entry
        entry(main, ["--stdlib", "json", "--num", "1", "--rename_paths", "--out", str(tmp_path / "o.jsonl")])
    assert e.value.code == 2
