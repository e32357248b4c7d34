import json

import pytest

from icae.data.generate_trajectories import NO_OUTPUT, generate
from icae.scripts.generate_trajectories import main as generate_main
from icae.data.sources import SourceError
from icae.data.trajectories import (
    TrajectoryCollator,
    fed_length,
    load_trajectories,
    render_turns,
    truncate,
    turn_stop_ids,
)
from icae.models.loading import tiny_tokenizer

OPENAI = {"messages": [
    {"role": "system", "content": "You fix bugs."},
    {"role": "user", "content": [{"type": "text", "text": "Fix "}, {"type": "text", "text": "it."}]},
    {"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{\"cmd\": \"ls\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "a.py\nb.py"},
    {"role": "assistant", "content": "Done."},
]}
SWE_AGENT = {"environment": "swe_main", "history": [
    {"role": "system", "content": "SYSTEM", "agent": "primary"},
    {"role": "user", "content": "DEMO", "is_demo": True},
    {"role": "user", "content": "We have an issue.", "message_type": "user"},
    {"role": "assistant", "content": "ls", "message_type": "action", "thought": "look"},
    {"role": "user", "content": "a.py", "message_type": "observation"},
    {"role": "assistant", "content": "submit", "message_type": "action"},
]}
NEBIUS = {"instance_id": "x__y-2", "target": True, "trajectory": [
    {"role": "system", "text": "SYS"},
    {"role": "user", "text": "Task."},
    {"role": "ai", "text": "open a.py"},
    {"role": "user", "text": "[File: a.py]"},
    {"role": "ai", "text": "submit"},
]}


def roles(traj):
    return [(m["role"], m["content"]) for m in traj["messages"]]


def test_openai_messages_with_parts_and_tool_calls(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(OPENAI) + "\n\n" + json.dumps({**OPENAI, "id": "second"}) + "\n")
    first, second = load_trajectories(str(path))
    assert roles(first) == [
        ("system", "You fix bugs."), ("user", "Fix it."),
        ("assistant", 'Looking.\n<tool_call>{"name": "bash", "arguments": {"cmd": "ls"}}</tool_call>'),
        ("tool", "a.py\nb.py"), ("assistant", "Done."),
    ]
    assert first["id"] == "1" and second["id"] == "second"  # no id: its (1-based) line number


def test_swe_smith_messages_as_json_string(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"instance_id": "repo.abc", "messages": json.dumps(OPENAI["messages"])}) + "\n")
    (traj,) = load_trajectories(str(path), "auto")
    assert traj["id"] == "repo.abc" and roles(traj)[3] == ("tool", "a.py\nb.py")


def test_swe_agent_traj_directory(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "repo__issue-1.traj").write_text(json.dumps(SWE_AGENT))
    (traj,) = load_trajectories(str(tmp_path / "runs"), "swe_agent")
    assert traj["id"] == "repo__issue-1"
    assert roles(traj) == [("system", "SYSTEM"), ("user", "We have an issue."), ("assistant", "ls"),
                           ("tool", "a.py"), ("assistant", "submit")]  # demo dropped, observation -> tool


def test_nebius_rows(tmp_path):
    path = tmp_path / "n.json"
    path.write_text(json.dumps([NEBIUS]))
    (traj,) = load_trajectories(str(path), "auto")
    assert traj["id"] == "x__y-2"
    assert roles(traj) == [("system", "SYS"), ("user", "Task."), ("assistant", "open a.py"),
                           ("tool", "[File: a.py]"), ("assistant", "submit")]


def test_bad_records_are_all_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "robot", "content": "?"}, {"role": "assistant", "content": "x"}]},
            {"other": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SourceError) as e:
        load_trajectories(str(path))
    msg = str(e.value)
    assert "3 problem(s)" in msg and "no assistant turn" in msg and "unknown roles ['robot']" in msg
    assert "cannot tell the trajectory format" in msg
    with pytest.raises(SourceError, match="no such file"):
        load_trajectories(str(tmp_path / "missing.jsonl"))
    with pytest.raises(SourceError, match="trajectory_format"):
        load_trajectories(str(path), "chatml")


def test_rendering_compression_policy_and_loss():
    tok = tiny_tokenizer()
    traj = {"id": "t", "messages": [
        {"role": "system", "content": "word " * 40}, {"role": "user", "content": "Task."},
        {"role": "assistant", "content": "ls"}, {"role": "tool", "content": "file.py " * 20},
        {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "submit"}]}
    turns = render_turns(tok, traj, ["tool"], min_tokens_to_compress=8)
    assert [t.compress for t in turns] == [False, False, False, True, False, False]  # long tool output only
    assert [t.loss for t in turns] == [False, False, True, False, False, True]
    assert tok.decode(turns[3].header) == "<|im_start|>tool\n" and tok.decode(turns[3].footer) == "<|im_end|>\n"
    spans = turns[3].spans()
    assert [s.compress for s in spans] == [True if i == 1 else False for i in range(3)]
    assert spans[1].ids.tolist() == turns[3].content
    (header, body) = turns[2].spans()
    assert not header.loss and body.loss and body.ids.tolist() == turns[2].content + turns[2].footer
    assert [t.compress for t in render_turns(tok, traj, ["tool", "system"], 8)][:1] == [True]
    # Never compress into more slots than tokens: 64 slots would lengthen the 61-token tool output, 16 shorten it.
    assert [t.compress for t in render_turns(tok, traj, ["tool", "system"], 0, lambda n: 64)] == [False] * 6
    assert [t.compress for t in render_turns(tok, traj, ["tool", "system"], 0, lambda n: 16)] == [
        True, False, False, True, False, False]
    batch = TrajectoryCollator()([{"turns": [t.__dict__ for t in turns]}])
    assert len(batch["spans"][0]) == 2 * 5 + 3
    assert tok.convert_tokens_to_ids("<|im_end|>") in turn_stop_ids(tok)


def test_truncation_counts_slots_not_tokens():
    tok = tiny_tokenizer()
    traj = {"id": "t", "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "a"},
                                    {"role": "tool", "content": "x " * 100}, {"role": "assistant", "content": "b"}]}
    turns = render_turns(tok, traj, ["tool"], 8)
    full = sum(t.num_tokens for t in turns)
    with_slots = sum(fed_length(t, lambda n: 4) for t in turns)
    assert len(truncate(turns, with_slots, lambda n: 4)) == 4  # fits when the observation is 4 slots
    assert len(truncate(turns, with_slots, lambda n: n)) == 2  # uncompressed, only the first assistant turn fits
    assert len(truncate(turns, full, lambda n: n)) == 4
    assert truncate(turns, 3, lambda n: n) == []


def test_max_assistant_turns_keeps_the_first_actions():
    tok = tiny_tokenizer()
    messages = [{"role": "user", "content": "go"}]
    for k in range(3):
        messages += [{"role": "assistant", "content": f"step {k}"}, {"role": "tool", "content": f"out {k} " * 20}]
    turns = render_turns(tok, {"id": "t", "messages": messages}, ["tool"], 8)

    def roles(kept):
        return ["a" if t.loss else "o" for t in kept]

    assert roles(turns) == ["o", "a", "o", "a", "o", "a", "o"]
    assert roles(truncate(turns, 10_000, lambda n: n, 1)) == ["o", "a"]  # the task and the first action only
    assert roles(truncate(turns, 10_000, lambda n: n, 2)) == ["o", "a", "o", "a"]
    assert roles(truncate(turns, 10_000, lambda n: n, 5)) == roles(truncate(turns, 10_000, lambda n: n))[:6]
    # the token limit still applies first: the second action does not fit, so two allowed turns keep one
    first_two = sum(t.num_tokens for t in turns[:3])
    assert roles(truncate(turns, first_two, lambda n: n, 2)) == ["o", "a"]


def test_generator_is_real_and_deterministic(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text('import os\n\n\ndef greet(name):\n    """Say hello to name."""\n    return "hi " + name\n')
    out = tmp_path / "t.jsonl"
    generate_main(["--source", str(pkg), "--num", "3", "--out", str(out)])
    assert out.read_text() == "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in generate([pkg], 3))
    (traj,) = load_trajectories(str(out))
    msgs = traj["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"] + ["assistant", "tool"] * 5
    assert msgs[3]["content"].endswith("pkg/mod.py:4:def greet(name):")  # real search output, real line number
    assert "open pkg/mod.py 4" in msgs[4]["content"]  # the action uses what the observation said
    assert "4:def greet(name):" in msgs[5]["content"] and "[File: pkg/mod.py (6 lines total)]" in msgs[5]["content"]
    assert "def greet(name):\n    # Say hello to name." in msgs[6]["content"]
    assert msgs[9]["content"] == NO_OUTPUT  # py_compile really ran on the edited file
    assert "+    # Say hello to name." in msgs[11]["content"]


def test_swe_agent_keeps_every_action_and_the_task_statement(tmp_path):
    """A tool-call turn with empty content keeps its action; the task statement (an observation-typed first user
    message in some SWE-agent versions) stays a user turn; nothing is dropped, in order."""
    traj = {"history": [
        {"role": "system", "content": "SYS", "message_type": "system_prompt"},
        {"role": "user", "content": "Fix issue 7.", "message_type": "observation"},
        {"role": "assistant", "content": "", "message_type": "action",
         "tool_calls": [{"function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}]},
        {"role": "tool", "content": "a.py", "message_type": "observation"},
        {"role": "assistant", "content": "", "message_type": "action", "action": "submit"},
        {"role": "user", "content": "Submitted.", "message_type": "observation"},
    ]}
    (tmp_path / "r.traj").write_text(json.dumps(traj))
    (out,) = load_trajectories(str(tmp_path / "r.traj"), "swe_agent")
    assert roles(out) == [("system", "SYS"), ("user", "Fix issue 7."),
                          ("assistant", '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>'),
                          ("tool", "a.py"), ("assistant", "submit"), ("tool", "Submitted.")]
