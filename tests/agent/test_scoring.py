"""Success read from the final state, the run's score, the scripted policies, and the held-out tasks."""

import functools

import pytest

from icae.agent import (
    HELDOUT_SOURCES,
    Environment,
    StopEpisode,
    heldout_tasks,
    heldout_trees,
    oracle_policy,
    parse_command,
    run_episode,
    scripted_policy,
    wrong_policy,
)
from icae.agent.episode import leading_right, reference_match
from icae.data import trajectory_tools as tt


def steps_with_edit(task, lines, extra=()):
    """The reference, its edit replaced by one that writes ``lines`` over the ``def`` line, ``extra`` steps after."""
    steps = list(task.reference)
    steps[2] = ("edit", tt.edit_command(task.line, task.line, lines))
    return steps[:3] + list(extra) + steps[3:]


def test_the_oracle_succeeds_with_a_perfect_score(greet_task):
    for mode in ("text", "tools"):
        ep = run_episode(oracle_policy(greet_task, mode), greet_task, mode=mode)
        assert (ep.success, ep.submitted, ep.steps, ep.format_errors, ep.refusals) == (True, True, 5, 0, 0)
        assert ep.reference_match == 1.0 and ep.problems == ()
        assert ep.actions[0] == 'search_dir "def greet("' and ep.actions[-1] == "submit"


def test_the_comment_above_the_def_line_is_a_failure(greet_task):
    ep = run_episode(wrong_policy(greet_task), greet_task)
    assert not ep.success and ep.submitted
    assert ep.problems == ("pkg/mod.py: the change is not one line added after line 4 (the def line)",)
    assert ep.reference_match == 4 / 5  # every step but the edit


@pytest.mark.parametrize("lines, extra, problems", [
    (["def greet(name):", "    # Say hi."], (), ("pkg/mod.py: line 5 is '# Say hi.', not '# Say hello to name.'",)),
    (["def greet(name):"], (), ("pkg/mod.py is unchanged",)),
    (["def greet(name:", "    # Say hello to name."], (),
     ("pkg/mod.py: the change is not one line added after line 4 (the def line)", "pkg/mod.py does not compile")),
    (["def greet(name):", "    # Say hello to name."],
     [("other", "open pkg/sub/util.py 1"), ("other", tt.edit_command(2, 2, ["# changed"]))],
     ("other files changed: pkg/sub/util.py",)),
])
def test_wrong_final_states_are_failures(greet_task, lines, extra, problems):
    ep = run_episode(scripted_policy(steps_with_edit(greet_task, lines, extra)), greet_task)
    assert not ep.success and ep.problems == problems


def test_any_indentation_of_the_right_comment_succeeds(greet_task):
    ep = run_episode(scripted_policy(steps_with_edit(greet_task, ["def greet(name):", "# Say hello to name.  "])),
                     greet_task)
    assert ep.success and ep.reference_match == 4 / 5  # the edit is not the reference's, the outcome is right


def test_success_is_read_from_the_final_state_without_submit(greet_task):
    ep = run_episode(oracle_policy(greet_task), greet_task, max_steps=4)
    assert ep.success and not ep.submitted and ep.steps == 4 and ep.reference_match == 4 / 5


def test_format_errors_and_the_step_limit_are_counted(greet_task):
    replies = iter(["no block", tt.assistant_text("t", 'search_dir "def greet("'), "```\nls\n```"] + ["x"] * 10)
    ep = run_episode(lambda messages: next(replies), greet_task, max_steps=6)
    assert (ep.success, ep.submitted, ep.steps, ep.format_errors) == (False, False, 6, 5)
    assert ep.actions == (None, 'search_dir "def greet("', None, None, None, None)
    assert ep.reference_match == 0 / 6  # the search came at step 2, where the reference opens the file
    assert [m["role"] for m in ep.messages] == ["system", "user"] + ["assistant", "tool"] * 6


def test_a_policy_that_stops_ends_the_episode_scored_from_its_state(greet_task):
    oracle = oracle_policy(greet_task)

    def policy(messages):  # the reference's first three steps (the edit included), then a full context window
        if sum(m["role"] == "assistant" for m in messages) == 3:
            raise StopEpisode("the context window is full")
        return oracle(messages)

    ep = run_episode(policy, greet_task, max_steps=20)
    assert (ep.success, ep.submitted, ep.steps, ep.stopped) == (True, False, 3, "the context window is full")
    assert ep.reference_match == 3 / 5 and ep.leading_right == 3 and len(ep.messages) == 2 + 2 * 3
    assert run_episode(oracle, greet_task).stopped is None


def test_reference_match_by_hand():
    ref = [parse_command(c) for c in ('search_dir "a"', "open x.py 3", "submit")]
    same = [parse_command(c) for c in ("search_dir 'a'", "open x.py 4", "submit")]
    assert reference_match(same, ref) == 2 / 3  # quoting does not matter, the line does
    assert reference_match(same[:1], ref) == 1 / 3  # stopping early: over the reference's 3 steps
    assert reference_match(same[:1] + [None] * 5, ref) == 1 / 6  # wandering: over the 6 steps taken
    assert reference_match([], []) == 0


def test_leading_right_counts_the_first_right_actions_in_a_row():
    ref = [parse_command(c) for c in ('search_dir "a"', "open x.py 3", "submit")]
    assert leading_right(ref, ref) == 3
    assert leading_right([ref[0], parse_command("open x.py 4"), ref[2]], ref) == 1  # the third is right, not in a row
    assert leading_right([ref[0], None, ref[1]], ref) == 1  # a format error ends the run
    assert leading_right([parse_command("submit")], ref) == 0
    assert leading_right(ref + [parse_command("submit")], ref) == 3  # steps past the reference match nothing
    assert leading_right([], ref) == 0


def test_tool_mode_answers_each_call_with_its_id(greet_task):
    replies = iter([{"role": "assistant", "content": "thinking"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "submit", "arguments": "{}"}},
                        {"id": "b", "type": "function", "function": {"name": "submit", "arguments": "{}"}}]}])
    ep = run_episode(lambda messages: next(replies), greet_task, max_steps=2, mode="tools")
    assert ep.format_errors == 2
    assert [(m["role"], m.get("tool_call_id")) for m in ep.messages[2:]] == [
        ("assistant", None), ("user", None), ("assistant", None), ("tool", "a"), ("tool", "b")]


@functools.lru_cache(maxsize=1)
def some_heldout_tasks(per_tree: int = 3):
    """The first ``per_tree`` tasks of each held-out tree in the benchmark's order (seed 0)."""
    tasks, out = heldout_tasks(seed=0), []
    for tree in {t.tree.name for t in tasks}:
        out += [t for t in tasks if t.tree.name == tree][:per_tree]
    return tuple(sorted(out, key=lambda t: t.id))


def test_heldout_tasks_are_many_and_fixed_for_a_seed():
    tasks = heldout_tasks(seed=0)
    assert len(tasks) >= 300 and {t.tree.name for t in tasks} == {"stdlib", "yaml", "tqdm"}
    assert len({t.id for t in tasks}) == len(tasks)
    assert [t.id for t in heldout_tasks(5, seed=0)] == [t.id for t in tasks[:5]]
    assert [t.id for t in heldout_tasks(5, seed=1)] != [t.id for t in tasks[:5]]


def test_the_oracle_solves_heldout_tasks_and_the_wrong_policy_fails_them():
    tasks = some_heldout_tasks()
    assert len(tasks) == 9
    for task in tasks:
        for mode in ("text", "tools"):
            ep = run_episode(oracle_policy(task, mode), task, mode=mode)
            assert ep.success and ep.reference_match == 1.0, (task.id, mode, ep.problems)
        assert not run_episode(wrong_policy(task), task).success, task.id


def test_heldout_trees_hold_no_file_a_training_run_reads():
    from icae.data.corpus import DOWNSTREAM, base_corpus_files, stdlib_dir
    from icae.data.tool_context import split_trees

    trained = {p.resolve() for p in base_corpus_files("wide")}  # the base LMs and compressors
    trained |= {(t.root / f).resolve() for t in split_trees("train") for f in t.files}  # training tool outputs
    trajectory_roots = [(stdlib_dir() / name).resolve() for name in DOWNSTREAM]  # trajectory and RepoQA builders
    held = [(tree.root / f).resolve() for tree in heldout_trees() for f in tree.files if f.endswith(".py")]
    assert len(held) > 100 and len(HELDOUT_SOURCES) == 3
    assert [p for p in held if p in trained] == []
    assert [p for p in held if any(r in p.parents for r in trajectory_roots)] == []
