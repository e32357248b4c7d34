"""The closed-loop agent benchmark's harness: its spec errors, the offline policies end to end, keeping observations,
counting positions, the report; and one served run through a real ``icae serve`` (slow)."""

import json
from pathlib import Path

import httpx
import openai
import pytest

from icae.agent import TOOLS, StopEpisode
from icae.benchmarks.agent import load_spec
from icae.benchmarks.agent.cli import main
from icae.benchmarks.agent.policies import Measured, Truncate, estimate, kept_tokens, served_ask
from icae.benchmarks.agent.report import markers, put_section
from icae.errors import entry
from icae.models.loading import load_tokenizer

SERVE = "icae/configs/serve_tiny.yaml"


def write_spec(path, agents, **top):
    spec = {"tasks": 2, "max_steps": 6, "max_tokens": 8, "output_dir": str(path.parent / "out"), **top,
            "agents": agents}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def exit_message(capsys, argv):
    with pytest.raises(SystemExit) as e:
        entry(main, argv)
    return e.value.code, capsys.readouterr().err


def test_spec_errors_are_one_message_and_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path / "bad.yaml", [
        {"name": "a", "policy": "served"},  # neither serve nor base_url
        {"name": "b", "policy": "oracle", "base_url": "http://x/v1"},
        {"name": "c", "serve": {"config": SERVE}, "observations": "truncate"},  # no budget
        {"name": "d", "serve": {"config": SERVE}, "observations": "squeeze", "colour": 1},
        {"name": "e", "base_url": "http://x/v1", "observations": "truncate", "budget_rate": 4},  # nothing to count with
    ], tasks=0, mode="voice", extra=1)
    code, err = exit_message(capsys, ["--spec", str(spec)])
    assert code == 2 and "Traceback" not in err
    for expected in ("needs exactly one of serve", "policy oracle runs offline", "needs exactly one of budget_tokens",
                     "unknown keys ['colour']", "unknown key 'extra'", "tasks must be an integer >= 1",
                     "mode must be tools or text", "without serve (at a base_url, or offline) needs tokenizer", "7 problem(s)"):
        assert expected in err, expected
    code, err = exit_message(capsys, ["--spec", str(tmp_path / "missing.yaml")])
    assert code == 2 and "no such file" in err
    # a served config that mismatches its observations, and a bad override: refused before any server starts
    spec = write_spec(tmp_path / "mismatch.yaml", [
        {"name": "full", "serve": {"config": SERVE}, "observations": "full"},
        {"name": "icae", "serve": {"config": SERVE, "overrides": ["model_type=llm", "restore_from=null"]}},
        {"name": "typo", "serve": {"config": SERVE, "overrides": ["fixed_mem_sise=3"]}}])
    code, err = exit_message(capsys, ["--spec", str(spec)])
    assert code == 2 and "3 problem(s)" in err and "an ICAE server would compress them too" in err
    assert "needs an ICAE server (model_type: icae)" in err and "fixed_mem_sise" in err
    code, err = exit_message(capsys, ["--spec", str(spec), "--agents", "nobody"])
    assert code == 2 and "['nobody'] not in" in err


def test_offline_policies_end_to_end_and_no_silent_overwrite(tmp_path, capsys):
    spec = write_spec(tmp_path / "offline.yaml", [{"name": "oracle", "policy": "oracle", "tokenizer": "tiny-qwen2-lm"},
                                                  {"name": "wrong", "policy": "wrong"}], tasks=3, window=1000)
    md = tmp_path / "BENCH.md"
    md.write_text("# Benchmarks\n")
    summary = main(["--spec", str(spec), "--benchmarks_md", str(md)])
    oracle, wrong = summary["agents"]["oracle"]["summary"], summary["agents"]["wrong"]["summary"]
    assert (oracle["successes"], oracle["episodes"], oracle["mean_steps"], oracle["reference_match"]) == (3, 3, 5, 1.0)
    assert (wrong["successes"], wrong["reference_match"]) == (0, pytest.approx(0.8))  # all but the edit
    assert (oracle["leading_right"], wrong["leading_right"]) == (5, 2)  # the wrong edit is its third step
    assert oracle["positions_source"] == ["estimated"] and wrong["positions_source"] is None  # no tokenizer: none
    assert oracle["peak_kv_mib"] == pytest.approx(oracle["peak_decoder_positions"] * 1024 / 2**20, abs=0.01)
    out = tmp_path / "out"
    record = json.loads((out / "oracle.json").read_text())
    first = record["episodes"][0]
    assert len(first["requests"]) == 5 and first["actions"][-1] == "submit" and first["messages"][0]["role"] == "system"
    positions = [r["decoder_positions"] for r in first["requests"]]
    assert positions == sorted(positions)  # a growing conversation, counted whole
    over = next((i for i, p in enumerate(positions) if p > 1000), None)
    assert oracle["steps_fit"][0] == over  # the steps before the first request over 1,000
    assert {p.name for p in out.iterdir()} >= {"oracle.json", "wrong.json", "summary.json", "table.md", "plot.png"}
    table = (out / "table.md").read_text()
    assert "| oracle | offline (oracle policy) | tools | 3/3 = 1.00 [0.44, 1.00] | 5.0 | 1.00 (5.0) |" in table
    assert "| wrong | offline (wrong policy) | tools | 0/3 = 0.00 [0.00, 0.56] |" in table
    start, end = markers("offline")
    assert md.read_text().startswith("# Benchmarks\n") and start in md.read_text() and end in md.read_text()
    before = (out / "summary.json").read_text()
    code, err = exit_message(capsys, ["--spec", str(spec)])
    assert code == 2 and "--overwrite" in err and (out / "summary.json").read_text() == before
    main(["--spec", str(spec), "--overwrite", "--agents", "wrong", "--tasks", "1", "--benchmarks_md", str(md)])
    assert md.read_text().count(start) == 1 and "0/1 = 0.00" in md.read_text()  # replaced, not appended


def test_put_section_replaces_between_its_markers_only(tmp_path):
    md = tmp_path / "B.md"
    start, end = markers("quick")
    md.write_text(f"top\n{start}\nold table\n{end}\nbottom\n")
    assert put_section(md, "quick", "new table") is True
    assert md.read_text() == f"top\n{start}\nnew table\n{end}\nbottom\n"
    assert put_section(md, "full", "other") is False  # missing markers: appended, the rest untouched
    assert md.read_text().startswith(f"top\n{start}\nnew table\n{end}\nbottom\n")
    assert md.read_text().endswith("<!-- bench-agent full: start -->\nother\n<!-- bench-agent full: end -->\n")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-qwen2-lm")


def test_truncation_keeps_the_budget_of_each_long_observation(tokenizer):
    assert [kept_tokens(100, None, 4), kept_tokens(7, None, 4), kept_tokens(3, None, 4), kept_tokens(100, 30, None),
            kept_tokens(10, 30, None)] == [25, 1, 1, 30, 10]
    long = "\n".join(f"stdlib/mod_{i}.py:{i}:    def handler_{i}(request):" for i in range(12))
    ids = tokenizer(long, add_special_tokens=False)["input_ids"]
    assert len(ids) >= 32
    messages = [{"role": "system", "content": long}, {"role": "user", "content": long},
                {"role": "assistant", "content": "x"}, {"role": "tool", "content": long},
                {"role": "tool", "content": "short output"}]
    first = Truncate(tokenizer, 32, None, 4)(messages)
    assert first[:3] == messages[:3] and first[4] == messages[4]  # only long observations are cut
    assert first[3]["content"] == tokenizer.decode(ids[: len(ids) // 4])
    last = Truncate(tokenizer, 32, 10, None, keep="last")(messages)
    assert last[3]["content"] == tokenizer.decode(ids[-10:]) and messages[3]["content"] == long  # input untouched


def test_estimated_positions_count_slots_for_long_observations(tokenizer):
    obs = "\n".join(f"{i:3d}:    value_{i} = compute(value_{i - 1}, {i})" for i in range(40))
    n = len(tokenizer(obs, add_special_tokens=False)["input_ids"])
    messages = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "Do it."},
                {"role": "assistant", "content": "look"}, {"role": "tool", "content": obs}]
    prompt, full = estimate(messages, tokenizer, "text")
    assert full == prompt
    _, compressed = estimate(messages, tokenizer, "text", rate=4, mem_size=8, min_tokens=32)
    assert prompt - compressed == n - 8 * -(-n // 32)  # n tokens become ceil(n / 32) segments of 8 slots
    _, kept = estimate(messages, tokenizer, "text", rate=4, mem_size=8, min_tokens=n + 1)
    assert kept == prompt  # shorter than the threshold: read whole


def test_measured_takes_the_servers_positions_else_estimates_else_none(tokenizer):
    usage = {"prompt_tokens": 900, "completion_tokens": 10, "compression": {"decoder_positions": 500}}
    m = Measured(lambda messages: ("reply", usage), "text", tokenizer=tokenizer, kv_bytes_per_position=1024)
    assert m([{"role": "user", "content": "hi"}]) == "reply"
    assert m.requests[0] | {"seconds": 0} == {"prompt_tokens": 900, "decoder_positions": 500, "source": "server",
                                              "completion_tokens": 10, "kv_mib": 510 * 1024 / 2**20, "seconds": 0}
    m = Measured(lambda messages: ("reply", {"prompt_tokens": 7, "completion_tokens": 1}), "text", tokenizer=tokenizer)
    m([{"role": "user", "content": "hi"}])
    assert m.requests[0]["source"] == "estimated" and m.requests[0]["prompt_tokens"] == 7  # the server's count kept
    m = Measured(lambda messages: ("reply", None), "text")
    m([{"role": "user", "content": "hi"}])
    assert (m.requests[0]["decoder_positions"], m.requests[0]["source"], m.requests[0]["kv_mib"]) == (None, None, None)


def test_a_full_context_window_stops_the_episode():
    class Client:
        class chat:
            class completions:
                @staticmethod
                def create(**kwargs):
                    response = httpx.Response(400, request=httpx.Request("POST", "http://test/v1/chat/completions"))
                    raise openai.BadRequestError("too long", response=response, body={
                        "code": "context_length_exceeded", "message": "maximum context length is 4096 tokens"})

    with pytest.raises(StopEpisode, match="context_length_exceeded: maximum context length is 4096"):
        served_ask(Client, "m", "tools", 8)([{"role": "user", "content": "hi"}])


@pytest.mark.slow
def test_a_served_compressor_through_a_real_icae_serve(tmp_path):
    """tiny-icae-4x behind a real ``icae serve`` subprocess, one task, 3 steps, in tool and text mode (one server),
    its context window cut to 980 positions: the tool-mode conversation (851, then 921 positions) outgrows it."""
    serve = {"config": SERVE, "overrides": ["max_batch_size=1", "model_max_length=980"]}
    spec = write_spec(tmp_path / "served.yaml", [{"name": "tools", "serve": serve},
                                                 {"name": "text", "serve": serve, "mode": "text"}],
                      tasks=1, max_steps=3, window=900)
    summary = main(["--spec", str(spec)])
    tools = json.loads((tmp_path / "out" / "tools.json").read_text())
    text = json.loads((tmp_path / "out" / "text.json").read_text())
    assert tools["model"] == "tiny-icae-4x" and summary["agents"]["tools"]["summary"]["episodes"] == 1
    for record, steps in ((tools, 2), (text, 3)):
        requests = record["episodes"][0]["requests"]
        assert len(requests) == steps and {r["source"] for r in requests} == {"server"}
        assert requests[1]["prompt_tokens"] > requests[0]["prompt_tokens"]
    episode = tools["episodes"][0]  # the third request did not fit the server's window: the episode ended there
    assert episode["stopped"].startswith("context_length_exceeded") and episode["refused_at"] == 3
    assert episode["steps"] == 2 and text["episodes"][0]["stopped"] is None
    # the first request is the system prompt, the tools and the task: counted here as the server counts it
    task = load_spec(spec)
    from icae.agent import heldout_tasks
    from icae.agent.episode import opening

    first = opening(heldout_tasks(1, task.seed)[0], "tools")
    assert estimate(first, load_tokenizer("tiny-qwen2-lm"), "tools")[0] == tools["episodes"][0]["requests"][0][
        "prompt_tokens"]
    # text mode: the observation (a format error's text, a tool turn) became slots: fewer positions than tokens
    second = text["episodes"][0]["requests"][1]
    assert second["decoder_positions"] < second["prompt_tokens"]


@pytest.mark.slow
def test_an_agent_at_the_base_url_of_a_running_server(tmp_path):
    """A server the harness did not start: the model's name is the server's first, the counts are the server's."""
    from icae.benchmarks.agent.server import served

    with served({"config": SERVE, "overrides": ["served_model_name=elsewhere"]}, tmp_path / "server.log") as (url, _):
        spec = write_spec(tmp_path / "url.yaml", [{"name": "remote", "base_url": url}], tasks=1, max_steps=1)
        main(["--spec", str(spec)])
    record = json.loads((tmp_path / "out" / "remote.json").read_text())
    assert record["model"] == "elsewhere" and record["base"] is None  # nothing to count with here: the server's counts
    (request,) = record["episodes"][0]["requests"]
    assert request["source"] == "server" and request["prompt_tokens"] == request["decoder_positions"] > 0
    assert request["kv_mib"] is None  # no base named (tokenizer:), so no model shape to size the cache with


def test_llmlingua_keeper_asks_its_worker_once_per_text_at_the_budgets_rate(tokenizer, monkeypatch, tmp_path):
    """LLMLingua's own environment is not here: its worker is replaced by one that records its jobs."""
    import icae.benchmarks.peers as peers
    from icae.benchmarks.agent.policies import LLMLingua

    jobs = []

    def fake_peer(name, job):
        jobs.append((name, job["rates"], list(job["texts"])))
        return [{"rate": job["rates"][0], "rows": [{"compressed": f"<{len(t)}>"} for t in job["texts"]]}], None

    monkeypatch.setattr(peers, "run_peer", fake_peer)
    monkeypatch.setattr(peers, "portable_model_dir", lambda model_dir, out: out)
    long = " ".join(f"word{i}" for i in range(80))
    n = len(tokenizer(long, add_special_tokens=False)["input_ids"])
    keeper = LLMLingua(tokenizer, str(tmp_path), 32, None, 4)
    messages = [{"role": "user", "content": long}, {"role": "tool", "content": long},
                {"role": "tool", "content": "short"}]
    sent = keeper(messages)
    assert [m["content"] for m in sent] == [long, f"<{len(long)}>", "short"]  # the task and short outputs: whole
    assert jobs == [("llmlingua", [(n // 4) / n], [long])]
    keeper(messages + [{"role": "tool", "content": long}])
    assert len(jobs) == 1  # seen before: from the cache, no second worker call
    failing = LLMLingua(tokenizer, str(tmp_path), 32, None, 4)
    monkeypatch.setattr(peers, "run_peer", lambda name, job: (None, "its worker failed (exit 1): boom"))
    with pytest.raises(RuntimeError, match="LLMLingua: its worker failed"):
        failing(messages)


def test_the_spec_states_tasks_as_asked_and_refuses_an_unknown_statement(tmp_path):
    from icae.benchmarks.agent.spec import SpecError, load_spec

    spec = write_spec(tmp_path / "s.yaml", [{"name": "oracle", "policy": "oracle", "tokenizer": "tiny-qwen2-lm"}],
                      statement="tokens")
    assert load_spec(spec).statement == "tokens" and load_spec(spec, {"statement": "plain"}).statement == "plain"
    bad = write_spec(tmp_path / "b.yaml", [{"name": "oracle", "policy": "oracle", "tokenizer": "tiny-qwen2-lm"}],
                     statement="quoted")
    with pytest.raises(SpecError, match="statement must be one of plain, tokens, got 'quoted'"):
        load_spec(bad)


def test_one_chat_template_for_every_agent_served_and_counted(tmp_path, tokenizer):
    from icae.benchmarks.agent.run import check_served, serve_block
    from icae.benchmarks.agent.spec import SpecError, load_spec

    compact = "icae/assets/templates/compact_tools.jinja"
    served = {"name": "icae", "serve": {"config": SERVE, "overrides": ["max_batch_size=1"]}}
    spec = load_spec(write_spec(tmp_path / "s.yaml", [served], chat_template=compact))
    block = serve_block(spec.agents[0], spec)
    absolute = str(Path(compact).resolve())  # the server runs in the repository's root, whatever the caller's cwd
    assert block["overrides"] == ["max_batch_size=1", f"chat_template={absolute}"]
    assert spec.agents[0].serve["overrides"] == ["max_batch_size=1"]  # the spec itself untouched
    assert check_served(spec)["icae"].serve.chat_template == absolute  # the server's config reads it
    without = load_spec(write_spec(tmp_path / "w.yaml", [served]))
    assert serve_block(without.agents[0], without) == served["serve"]
    # counted with it: the compact tool list is hundreds of tokens shorter than the tokenizer's Hermes list
    from icae.agent import heldout_tasks
    from icae.agent.episode import opening

    first = opening(heldout_tasks(1, 0)[0], "tools")
    text = open(compact).read()
    hermes, _ = estimate(first, tokenizer, "tools")
    short, _ = estimate(first, tokenizer, "tools", template=text)
    rendered = tokenizer.apply_chat_template(first, tools=TOOLS, add_generation_prompt=True, chat_template=text,
                                             tokenize=False)
    assert short == len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) and hermes - short > 500
    m = Measured(lambda messages: ("reply", None), "tools", tokenizer=tokenizer, template=text)
    m(first)
    assert m.requests[0]["prompt_tokens"] == short
    # a missing file, and a template set twice, are refused
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(tmp_path / "b.yaml", [{**served, "serve": {"config": SERVE, "overrides": [
            f"chat_template={compact}"]}}], chat_template="nowhere.jinja"))
    assert "chat_template: no such file: nowhere.jinja" in str(e.value)
    assert "chat_template is set at the spec's top for every agent" in str(e.value)
    with pytest.raises(SpecError, match="its server at base_url http://localhost:1/v1 renders with its own"):
        load_spec(write_spec(tmp_path / "u.yaml", [{"name": "far", "base_url": "http://localhost:1/v1"}],
                             chat_template=compact))


def test_one_table_from_agents_run_in_legs_and_legs_run_otherwise_are_refused(tmp_path, capsys):
    agents = [{"name": "oracle", "policy": "oracle", "tokenizer": "tiny-qwen2-lm"}, {"name": "wrong", "policy": "wrong"}]
    spec = write_spec(tmp_path / "legs.yaml", agents, tasks=2)
    main(["--spec", str(spec), "--agents", "oracle", "--output_dir", str(tmp_path / "leg1")])
    main(["--spec", str(spec), "--agents", "wrong", "--output_dir", str(tmp_path / "leg2")])
    whole = main(["--spec", str(spec), "--output_dir", str(tmp_path / "together")])  # both in one run, to compare
    merged = main(["--spec", str(spec), "--output_dir", str(tmp_path / "merged"),
                   "--results_from", str(tmp_path / "leg1"), str(tmp_path / "leg2")])
    for name in ("oracle", "wrong"):
        assert merged["agents"][name]["summary"]["successes"] == whole["agents"][name]["summary"]["successes"]
    rows = [line.split("|")[1:5] for line in (tmp_path / "merged" / "table.md").read_text().splitlines()[-2:]]
    assert rows == [line.split("|")[1:5] for line in (tmp_path / "together" / "table.md").read_text().splitlines()[-2:]]
    main(["--spec", str(spec), "--agents", "wrong", "--tasks", "1", "--output_dir", str(tmp_path / "short")])
    code, err = exit_message(capsys, ["--spec", str(spec), "--output_dir", str(tmp_path / "bad"), "--results_from",
                                      str(tmp_path / "leg1"), str(tmp_path / "short")])
    assert code == 2 and "was run with other settings: tasks 1 (spec: 2)" in err
    code, err = exit_message(capsys, ["--spec", str(spec), "--output_dir", str(tmp_path / "bad2"), "--results_from",
                                      str(tmp_path / "leg1")])
    assert code == 2 and "wrong: no wrong.json in" in err
    # a leg whose agent was since edited, a leg read with an edited template, and a file that is not a result
    edited = write_spec(tmp_path / "edited.yaml", [agents[0], {"name": "wrong", "policy": "wrong", "min_tokens": 8}])
    code, err = exit_message(capsys, ["--spec", str(edited), "--output_dir", str(tmp_path / "bad3"), "--results_from",
                                      str(tmp_path / "leg1"), str(tmp_path / "leg2")])
    assert code == 2 and "leg2/wrong.json was run with other settings: agent 'wrong' as the spec has it now" in err
    assert "oracle.json" not in err  # the unchanged agent's leg is fine
    template = tmp_path / "t.jinja"
    template.write_text(open("icae/assets/templates/compact_tools.jinja").read())
    templated = write_spec(tmp_path / "templated.yaml", agents, tasks=2, chat_template=str(template))
    main(["--spec", str(templated), "--output_dir", str(tmp_path / "tleg")])
    template.write_text(template.read_text() + "\n")
    (tmp_path / "tleg" / "oracle.json").write_text("{not json")
    code, err = exit_message(capsys, ["--spec", str(templated), "--output_dir", str(tmp_path / "bad4"),
                                      "--results_from", str(tmp_path / "tleg")])
    assert code == 2 and "oracle.json is not an agent's result of this benchmark (JSONDecodeError" in err
    assert f"the text of chat_template {str(template)!r} (edited since that leg)" in err
