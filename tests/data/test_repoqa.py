import gzip
import json

import pytest

from icae.data.repoqa import (
    ENV_PATH,
    INSTRUCTION,
    build_tasks,
    code_context,
    dependency_order,
    load_repoqa,
    needle_code,
)
from icae.data.sources import SourceError, split_tasks
from icae.models.loading import tiny_tokenizer

NEEDLE = "def target(x):\n    return sorted(x)[::-1]"


def make_repo(filler_lines=60):
    a = "".join(f"alpha_{i} = {i} * 2\n" for i in range(filler_lines))
    b_head = "import a\n\n"
    b = b_head + NEEDLE + "\n\n" + "".join(f"beta_{i} = a.alpha_{i}\n" for i in range(filler_lines))
    start = len(b_head.encode())
    needle = {"name": "target", "path": "b.py", "start_byte": start, "end_byte": start + len(NEEDLE.encode()),
              "start_line": 2, "end_line": 3, "description": "Sort descending."}
    return {"repo": "me/toy", "content": {"b.py": b, "a.py": a, "c.py": "gamma = 1\n"},
            "dependency": {"b.py": ["a.py"], "a.py": [], "c.py": ["b.py"]}, "functions": {}, "needles": [needle]}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_dependency_order_puts_dependencies_first():
    assert dependency_order(make_repo()) == ["a.py", "b.py", "c.py"]
    cyclic = {"content": {"x.py": "", "y.py": "", "z.py": ""},
              "dependency": {"x.py": ["y.py"], "y.py": ["x.py"], "z.py": []}}
    assert dependency_order(cyclic) == ["z.py", "x.py", "y.py"]  # cycle broken at the smallest path


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_needle_sits_at_its_position_ratio_within_the_budget(tok, ratio):
    repo, budget = make_repo(), 200
    ctx = code_context(tok, repo, repo["needles"][0], "python", ratio, budget)
    ids, start, n = ctx["input_ids"], ctx["needle_start"], ctx["needle_length"]
    assert len(ids) == budget
    assert start == round(ratio * (budget - n))
    assert tok.decode(ids[start : start + n]) == NEEDLE


def test_headers_and_file_order_in_the_context(tok):
    repo = make_repo(filler_lines=3)
    ctx = code_context(tok, repo, repo["needles"][0], "python", 0.5, 10_000)
    text = tok.decode(ctx["input_ids"])
    assert text.index("# Path: a.py\n") < text.index("# Path: b.py\nimport a") < text.index(NEEDLE) \
        < text.index("# Path: c.py\n")
    assert len(ctx["input_ids"]) < 10_000  # the whole repo fits: nothing invented to fill the budget
    rust = tok.decode(code_context(tok, repo, repo["needles"][0], "rust", 0.5, 10_000)["input_ids"])
    assert "// Path: a.py" in rust


def test_short_side_gives_its_budget_to_the_other_side(tok):
    repo = make_repo(filler_lines=60)
    repo["dependency"] = {}
    repo["content"] = {"b.py": repo["content"]["b.py"]}  # only 4 tokens before the needle
    ctx = code_context(tok, repo, repo["needles"][0], "python", 1.0, 120)
    assert len(ctx["input_ids"]) == 120
    assert ctx["needle_start"] == len(tok("# Path: b.py\nimport a\n\n", add_special_tokens=False)["input_ids"])


def test_needle_longer_than_the_budget_is_skipped(tok):
    repo = make_repo()
    assert code_context(tok, repo, repo["needles"][0], "python", 0.5, 5) is None
    tasks, skipped = build_tasks(tok, {"python": [repo]}, 5, [0.5])
    assert (tasks, skipped) == ([], 1)


def test_task_layout(tok):
    repo = make_repo()
    repo["needles"].append({**repo["needles"][0], "name": "other", "description": "Other."})
    tasks, _ = build_tasks(tok, {"python": [repo]}, 150, [0.0, 1.0])
    assert [t.position_ratio for t in tasks] == [0.0, 1.0]
    task = tasks[0]
    assert task.task_id == "python::me/toy::target" and task.needles == [NEEDLE, NEEDLE]
    prompt = tok.decode(task.prompt_ids)
    assert "Sort descending." in prompt and prompt.rstrip().endswith(INSTRUCTION)
    assert task.target_ids[-1] == tok.eos_token_id
    assert tok.decode(task.target_ids[:-1]) == f"```python\n{NEEDLE}\n```"


def test_load_from_env_gz_and_errors(tmp_path, monkeypatch):
    data = {"python": [make_repo()], "rust": []}
    path = tmp_path / "data.json.gz"
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    monkeypatch.setenv(ENV_PATH, str(path))
    assert needle_code(load_repoqa()["python"][0], data["python"][0]["needles"][0]) == NEEDLE
    assert list(load_repoqa(None, ["rust"])) == ["rust"]
    with pytest.raises(SourceError, match=r"languages \['go'\]"):
        load_repoqa(None, ["go"])
    monkeypatch.delenv(ENV_PATH)
    with pytest.raises(SourceError, match=ENV_PATH):
        load_repoqa(None)
    broken = make_repo()
    del broken["content"]
    bad_needle = make_repo()
    bad_needle["needles"][0]["end_byte"] = 10**6
    bad_path = make_repo()
    bad_path["needles"][0]["path"] = "zz.py"
    (tmp_path / "bad.json").write_text(json.dumps({"python": [broken, bad_needle, bad_path]}))
    with pytest.raises(SourceError) as e:
        load_repoqa(str(tmp_path / "bad.json"))
    message = str(e.value)
    assert "3 problem(s)" in message and "missing keys ['content']" in message
    assert "byte span outside its file" in message and "'zz.py' not in content" in message


def test_split_is_seeded_disjoint_and_ordered():
    tasks = list(range(10))
    train, test = split_tasks(tasks, 0.3, seed=1)
    assert len(test) == 3 and sorted(train + test) == tasks and train == sorted(train)
    assert split_tasks(tasks, 0.3, seed=1) == (train, test)
    assert split_tasks(tasks, 0.3, seed=2)[1] != test
    assert split_tasks([1, 2], 0.1, 0)[1] != []  # at least one held out
    assert split_tasks(tasks, 0.0, 0) == (tasks, [])


def test_edge_windows_equal_the_whole_tokenisation(tok):
    from icae.data.repoqa import _edge_ids

    text = make_repo(400)["content"]["b.py"] * 3
    encode = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    whole = encode(text)
    for n in (0, 1, 37, 500, len(whole) + 10):
        assert _edge_ids(encode, text, n, tail=True) == (whole[max(len(whole) - n, 0) :] if n else [])
        assert _edge_ids(encode, text, n, tail=False) == whole[:n]
