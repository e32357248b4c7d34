"""How a task is stated (``--statement``): the ``tokens`` statement quotes what the actions write, so that an agent
copies by repeating the same token ids (the ``plain`` one spells the first piece of a name otherwise)."""

import json
import sysconfig
from pathlib import Path

import pytest

from icae.agent import heldout_tasks
from icae.data import trajectory_tools as tt
from icae.data.generate_trajectories import generate
from icae.models.loading import load_tokenizer

JSON = Path(sysconfig.get_paths()["stdlib"]) / "json"


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_the_statements_as_written():
    assert tt.instruction("locate", "Locate an object by name.") == (
        'Add a comment under the definition of `locate` that summarises it: "Locate an object by name."')
    assert tt.instruction("locate", "Locate an object by name.", "tokens") == (
        "Add the comment line `# Locate an object by name.` right under the line of `def locate(`.")
    with pytest.raises(ValueError, match="statement must be one of"):
        tt.instruction("locate", "x", "quoted")


def test_the_tokens_statement_holds_the_ids_the_actions_write_and_the_plain_one_does_not():
    tok = load_tokenizer("tiny-qwen2-lm")
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    search = ids(json.dumps({"search_term": "def rep_blist_str("}))
    edit = ids(json.dumps({"replacement_text": "def rep_blist_str(self):\n    # Return a list of it.\n"}))
    name, summary = ids("def rep_blist_str"), ids(" Return a list of it")  # as the actions spell them
    assert contains(search, name) and contains(edit, summary)
    assert contains(ids(tt.instruction("rep_blist_str", "Return a list of it.", "tokens")), name)
    assert contains(ids(tt.instruction("rep_blist_str", "Return a list of it.", "tokens")), summary)
    plain = ids(tt.instruction("rep_blist_str", "Return a list of it."))
    assert not contains(plain, name[1:]) and not contains(plain, summary)  # " re" vs "re", " Return" vs "Return"


def test_the_same_tasks_stated_either_way():
    plain, tokens = heldout_tasks(3, seed=0), heldout_tasks(3, seed=0, statement="tokens")
    assert [t.id for t in plain] == [t.id for t in tokens]
    assert all(t.instruction.startswith("Add the comment line `# ") for t in tokens)
    rows = generate([JSON], 2, seed=3, tools=True, statement="tokens")
    assert [r["id"] for r in rows] == [r["id"] for r in generate([JSON], 2, seed=3, tools=True)]
    assert all(r["messages"][1]["content"].startswith("Add the comment line `# ") for r in rows)
    with pytest.raises(ValueError, match="statement must be one of"):
        generate([JSON], 1, statement="x")
