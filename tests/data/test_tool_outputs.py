"""The tool-output generator: its records are what really running their commands prints, deterministic for a seed,
and its splits read disjoint trees."""

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from icae.data.corpus import base_corpus_files, stdlib_dir
from icae.data.tool_swe import file_lines, find_file, open_line, search_dir, search_file, swe_window
from icae.data.tool_outputs import (KIND_WEIGHTS, TIME_PATTERN, cap, command_env, draw_kind, generate, kind_runners,
                                    record_rng, split_trees)
from icae.scripts import entry
from icae.scripts.write_tool_outputs import main


def masked(text: str) -> str:
    return TIME_PATTERN.sub("<time>", text)


def test_splits_read_disjoint_trees_and_train_reads_only_the_training_corpus():
    def files(split):
        return {(t.root / f).resolve() for t in split_trees(split) for f in t.files}

    train, heldout = files("train"), files("heldout")
    assert train and heldout and not train & heldout
    wide = {p.resolve() for p in base_corpus_files("wide")}
    assert train <= wide
    assert not heldout & wide
    stdlib = stdlib_dir().resolve()
    assert all(p.name[0] >= "n" for p in heldout if p.parent == stdlib)  # held-out stdlib: modules n-z only
    names = {t.name.split("/")[0] for t in split_trees("heldout") if t.package}
    assert names == {"yaml", "tqdm", "nltk"}


def test_swe_window_matches_swe_agents_arithmetic():
    """Hand-computed from SWE-agent's shell functions: ``open F N`` sets CURRENT_LINE = max(N + W/2 - floor(W/6), 1),
    keeps it within [W/2, total - W/2], prints ``head -n CURRENT_LINE + W/2 | tail -n W``."""
    lines = [f"l{i}" for i in range(1, 11)]
    assert open_line(6, 4) == 8 and open_line(3, 6) == 5 and open_line(None, 100) == 50 and open_line(1, 30) == 11
    # W=4, open 6: CURRENT_LINE 8, 6 lines above, lines 7-10, none below (no "(0 more lines below)" line)
    assert swe_window(Path("/r/a.py"), lines, open_line(6, 4), 4) == (
        "[File: /r/a.py (10 lines total)]\n(6 more lines above)\n7:l7\n8:l8\n9:l9\n10:l10\n")
    # W=6, open 3: CURRENT_LINE 5, 2 above, lines 3-8, 2 below
    assert swe_window(Path("a.py"), lines, open_line(3, 6), 6) == (
        "[File: a.py (10 lines total)]\n(2 more lines above)\n3:l3\n4:l4\n5:l5\n6:l6\n7:l7\n8:l8\n"
        "(2 more lines below)\n")
    # W=4, open without a line: CURRENT_LINE 2, lines 1-4, 6 below
    assert swe_window(Path("a.py"), lines, open_line(None, 4), 4) == (
        "[File: a.py (10 lines total)]\n1:l1\n2:l2\n3:l3\n4:l4\n(6 more lines below)\n")
    assert swe_window(Path("a.py"), lines[:3], open_line(2, 100), 100) == "[File: a.py (3 lines total)]\n1:l1\n2:l2\n3:l3\n"
    assert swe_window(Path("a.py"), [], open_line(None, 100), 100) == "[File: a.py (0 lines total)]\n"
    assert file_lines("a\x0cb\nc\n") == ["a\x0cb", "c"] and file_lines("a\nb") == ["a", "b"] and file_lines("") == []


def test_swe_searches_match_grep_and_find(tmp_path):
    """search_dir/search_file counts and lines equal grep's on a hand-made tree; find_file lists find's paths."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\nspam = x\nprint(spam, spam)\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("spam\n")
    (tmp_path / "pkg" / ".hidden.py").write_text("spam\n")  # SWE-agent's find skips hidden paths
    (tmp_path / "pkg" / "c.bin").write_bytes(b"spam\0")  # and grep -I binary files
    root = (tmp_path / "pkg").resolve()
    assert search_dir("spam", root) == (
        f'Found 3 matches for "spam" in {root}:\n{root}/a.py (2 matches)\n{root}/sub/b.py (1 matches)\n'
        f'End of matches for "spam" in {root}\n')
    assert search_dir("eggs", root) == f'No matches found for "eggs" in {root}\n'
    assert search_file("spam", root / "a.py") == (
        f'Found 2 matches for "spam" in {root}/a.py:\nLine 2:spam = x\nLine 3:print(spam, spam)\n'
        f'End of matches for "spam" in {root}/a.py\n')
    found = subprocess.run(["find", str(root), "-type", "f", "-name", "b.py"], capture_output=True, text=True).stdout
    assert find_file("b.py", root, found.splitlines()) == f'Found 1 matches for "b.py" in {root}:\n{root}/sub/b.py\n'


def test_cap_cuts_at_a_line_break():
    assert cap("ab\ncd\nef\n", 100) == ("ab\ncd\nef\n", False)
    assert cap("ab\ncd\nef\n", 7) == ("ab\ncd\n", True)
    assert cap("abcdefgh", 5) == ("abcde", True)


def test_trees_are_drawn_by_group_not_by_subpackage():
    """nltk's ~30 subpackage trees weigh as much as yaml's one: 40% the top-level modules, the rest a package."""
    import random
    from collections import Counter

    from icae.data.tool_outputs import BUNDLE_SHARE, Context

    ctx = Context("heldout", split_trees("heldout"), Path("."), random.Random(0))
    counts = Counter(ctx.tree().name.split("/")[0] for _ in range(3000))
    assert abs(counts["."] / 3000 - BUNDLE_SHARE) < 0.03
    for package in ("yaml", "tqdm", "nltk"):
        assert abs(counts[package] / 3000 - (1 - BUNDLE_SHARE) / 3) < 0.03


def test_every_kind_is_drawn_in_a_default_mix():
    assert set(KIND_WEIGHTS) == set(kind_runners())
    for split in ("train", "heldout"):
        assert {draw_kind(record_rng(split, 0, i)) for i in range(300)} == set(KIND_WEIGHTS)


def _check_open(record):
    """An ``open`` record against the file, read independently: header, counts above/below, numbered lines."""
    rel, *line = shlex.split(record["command"])[1:]
    path = (Path(record["cwd"]) / rel).resolve()
    text = path.read_text(encoding="utf-8", errors="replace")
    source = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    out = record["text"].splitlines()
    assert out[0] == f"[File: {path} ({len(source)} lines total)]"
    numbered = [s for s in record["text"].split("\n") if re.match(r"\d+:", s)]
    if not source:
        assert out[1:] == []
        return
    first = int(numbered[0].split(":")[0])
    assert numbered == [f"{first + k}:{source[first + k - 1]}" for k in range(len(numbered))]
    last = first + len(numbered) - 1
    assert (not line and first == 1) or first <= int(line[0]) <= last
    assert ([s for s in out if s.endswith("more lines above)")] == ([f"({first - 1} more lines above)"] if first > 1
                                                                      else []))
    if not record["truncated"]:  # a cut window lacks its last lines and the count below
        assert ([s for s in out if s.endswith("more lines below)")] == ([f"({len(source) - last} more lines below)"]
                                                                          if last < len(source) else []))


def _check_reruns(split, kinds, tmp_path):
    """Every record's text is what its command prints when run again in its cwd (pytest's duration masked)."""
    env = command_env(tmp_path / "home")
    for kind in kinds:
        (record,) = generate(split, 1, seed=3, work_dir=tmp_path / "work", kinds=(kind,), keep_work=True,
                             max_chars=4000)
        assert record["kind"] == kind and record["text"].strip()
        if kind == "open":
            _check_open(record)
            continue
        if kind == "swe_search":  # SWE-agent's tools: checked against their formats by the test above
            assert record["text"].startswith(("Found ", "No matches found for ", "More than "))
            continue
        argv = shlex.split(record["command"])
        rerun = subprocess.run(argv, cwd=record["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60).stdout.decode()
        if record["truncated"]:
            assert len(rerun) > len(record["text"]) and rerun.startswith(record["text"])
        else:
            assert masked(rerun) == masked(record["text"]), (kind, record["command"])
        if kind == "pytest":
            assert re.search(r"\d+ failed", record["text"]) or "error" in record["text"].lower()
        if kind == "traceback":
            assert "Traceback (most recent call last)" in record["text"] or "error:" in record["text"]


def test_each_kind_reruns_to_the_same_text(tmp_path):
    _check_reruns("train", tuple(KIND_WEIGHTS), tmp_path)


def test_held_out_commands_rerun_to_the_same_text(tmp_path):
    _check_reruns("heldout", ("grep", "files", "ls", "git", "open", "swe_search"), tmp_path)


@pytest.mark.slow
def test_each_held_out_kind_reruns_to_the_same_text(tmp_path):
    _check_reruns("heldout", tuple(KIND_WEIGHTS), tmp_path)


def test_same_seed_writes_the_same_file_and_another_seed_differs(tmp_path):
    work = tmp_path / "work"
    kinds = ["ls", "git", "traceback", "grep", "json", "py_compile"]

    def write(name, seed):
        out = tmp_path / name
        main(["--split", "train", "--out", str(out), "--seed", str(seed), "--count", "5", "--kinds", *kinds,
              "--work-dir", str(work), "--max-chars", "3000"])
        return out.read_text()

    a, b, c = write("a.jsonl", 0), write("b.jsonl", 0), write("c.jsonl", 1)
    assert masked(a) == masked(b)
    assert masked(a) != masked(c)
    rows = [json.loads(line) for line in a.splitlines()]
    assert len(rows) == 5 and all(len(r["text"]) <= 3000 for r in rows)
    assert all(set(r) == {"text", "kind", "command", "cwd", "truncated"} for r in rows)


def test_bad_arguments_are_one_message_and_exit_2(tmp_path, capsys):
    existing = tmp_path / "out.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(SystemExit) as e:
        entry(main, ["--split", "train", "--out", str(existing), "--count", "0", "--max-chars", "5"], prog="w")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--count" in err and "--max-chars" in err and "--overwrite" in err
    assert existing.read_text() == "keep me\n"
    with pytest.raises(SystemExit) as e:
        entry(main, ["--split", "test", "--out", str(tmp_path / "x.jsonl")], prog="w")
    assert e.value.code == 2 and "invalid choice: 'test'" in capsys.readouterr().err


def test_stats_count_tokens_per_record_and_refuse_bad_lines(tmp_path, capsys):
    from icae.models.loading import load_tokenizer
    from icae.scripts import tool_output_stats

    tok = load_tokenizer("tiny-qwen2-lm")
    texts = ["x", "def f():\n    return 1\n" * 30, "ls -la\n" * 200]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"kind": k, "text": t}) + "\n" for k, t in zip(["a", "b", "b"], texts)))
    out = tool_output_stats.main([str(path)])[str(path)]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert out["lengths"] == lengths and lengths[0] < 64 < lengths[1]
    assert sum(out["buckets"].values()) == 3 and out["buckets"]["0-63"] == 1
    path.write_text('{"kind": "a", "text": "x"}\nnot json\n')
    with pytest.raises(SystemExit) as e:
        entry(tool_output_stats.main, [str(path)], prog="s")
    assert e.value.code == 2 and "line 2" in capsys.readouterr().err
