"""Tool-call trajectories are trained on exactly what ``icae serve`` feeds the decoder for the same messages and tools
(icae.data.chat_template, used by both), with the loss on the assistant turns only; the generator's ``--tools``."""

import json

import pytest
from datasets import Dataset

from icae.agent import TOOLS, tool_trajectory
from icae.data.sources import SourceError
from icae.data.trajectories import convert, load_trajectories, rendered, trajectory_rows
from icae.serve.protocol import ChatRequest
from icae.serve.render import Renderer
from tests.agent.conftest import make_package
from tests.conftest import make_model, small_config

BASH = {"type": "function", "function": {"name": "bash", "description": "Run a command.", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}
LONG = "\n".join(f"src/module_{i}.py:{i}: def handler_{i}(request):" for i in range(8))  # > 16 tokens: compressed


def call(command, i):
    return {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": json.dumps({"command": command})}}


# A conversation with: an assistant turn with text and a call, one with a call and no text, two results in a row (one
# user turn in the template), a long user message (compressed by the server's user rule), and a plain-text reply.
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Find the handlers."},
        {"role": "assistant", "content": "Looking.", "tool_calls": [call("ls", 0)]},
        {"role": "tool", "tool_call_id": "c0", "content": LONG},
        {"role": "assistant", "content": None, "tool_calls": [call("cat a.py", 1), call("cat b.py", 2)]},
        {"role": "tool", "tool_call_id": "c1", "content": "x = 1"},
        {"role": "tool", "tool_call_id": "c2", "content": LONG},
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": "Done."}]
# What the model writes in each assistant turn (the shipped ChatML/Hermes template), from the generation prompt on.
SAID = ['Looking.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call><|im_end|>\n',
        '<tool_call>\n{"name": "bash", "arguments": {"command": "cat a.py"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "bash", "arguments": {"command": "cat b.py"}}\n</tool_call><|im_end|>\n',
        "Done.<|im_end|>\n"]
OVERRIDES = {"min_tokens_to_compress": 16, "compress_user_min_tokens": 16, "max_history_tokens": 4096}


@pytest.fixture(scope="module")
def model():
    return make_model(min_tokens_to_compress=16)


def tokens(spans):
    """(id, compressed, loss) of every token of a row of spans."""
    return [(i, s.compress, s.loss) for s in spans for i in s.ids.tolist()]


def check_against_server(model, messages, tools):
    """Every assistant turn: the server's prompt for the messages before it is the training row up to the turn, slots
    where the server puts them; returns the row's tokens."""
    config = small_config(**OVERRIDES)
    renderer = Renderer(model, config, None)
    (row, _), = trajectory_rows(rendered(config, model.layout, convert({"messages": messages, "tools": tools},
                                                                       "messages", "t")))
    train = tokens(row)
    for k in [k for k, m in enumerate(messages) if m["role"] == "assistant"]:
        served = [(i, c) for i, c, _ in tokens(renderer.render(ChatRequest(model="m", messages=messages[:k],
                                                                           tools=tools)).job.spans)]
        assert [(i, c) for i, c, _ in train[:len(served)]] == served, f"turn {k}"
        # the prompt ends unlearned (the generation prompt) and the turn's first learned token comes next
        assert not train[len(served) - 1][2] and train[len(served)][2]
    return train


def runs(train, tok):
    """The texts of the row's maximal runs of learned tokens."""
    out, run = [], []
    for i, _, loss in train + [(None, False, False)]:
        if loss:
            run.append(i)
        elif run:
            out.append(tok.decode(run))
            run = []
    return out


def test_training_ids_are_the_servers_and_the_loss_is_on_what_the_assistant_writes(model):
    train = check_against_server(model, CHAT, [BASH])
    assert runs(train, model.tokenizer) == SAID
    compressed = [model.tokenizer.decode([i for i, c, _ in train if c])]
    assert compressed == [LONG * 3]  # both long results and the long user message; not the task, not "x = 1"
    text = model.tokenizer.decode([i for i, *_ in train])
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n") and json.dumps(BASH) in text
    assert "<|im_start|>user\n<tool_response>\nx = 1\n</tool_response>\n<tool_response>\n" in text


def test_an_oracle_tool_trajectory_of_the_agent_environment_trains_on_what_is_served(model, tmp_path):
    from icae.agent import TaskTree, tasks_from_tree

    task = next(t for t in tasks_from_tree(TaskTree.whole(make_package(tmp_path))) if t.function == "greet")
    messages = tool_trajectory(task)
    train = check_against_server(model, messages, TOOLS)
    said = runs(train, model.tokenizer)
    assert len(said) == len(task.reference) == 5
    assert said[0] == ("DISCUSSION\n" + task.reference[0][0] + '\n<tool_call>\n{"name": "search_dir", "arguments": '
                       '{"search_term": "def greet("}}\n</tool_call><|im_end|>\n')
    assert said[-1].endswith('<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call><|im_end|>\n')


def test_a_tool_record_renders_the_same_from_a_file_and_through_an_arrow_table(model, tmp_path):
    config = small_config(**OVERRIDES)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": CHAT, "tools": [BASH]}) + "\n"
                    + json.dumps({"id": "b", "messages": CHAT[:3]}) + "\n")
    loaded = load_trajectories(str(path), "messages")
    assert loaded[0]["tools"] == json.dumps([BASH]) and "tools" not in loaded[1]
    assert "<tool_call>" in loaded[1]["messages"][2]["content"]  # without tools: the text rendering, as before
    direct = rendered(config, model.layout, loaded[0])
    via_arrow = rendered(config, model.layout, Dataset.from_list(loaded[:1])[0])
    assert [t.content for t in direct] == [t.content for t in via_arrow] and len(direct) == 9


def test_bad_tool_records_are_named():
    with pytest.raises(SourceError, match=r"messages\[2\] calls \['bash'\], not among its tools \['grep'\]"):
        convert({"messages": CHAT, "tools": [{"type": "function", "function": {"name": "grep"}}]}, "messages", "r1")
    with pytest.raises(SourceError, match="r2: tools must be a list of OpenAI function tools"):
        convert({"messages": CHAT, "tools": [{"name": "bash"}]}, "messages", "r2")


def test_the_generator_writes_the_same_tasks_as_tool_calls_deterministically(tmp_path):
    from icae.data.generate_trajectories import generate, main

    package = make_package(tmp_path / "src")
    text, tools = generate([package], 2, seed=3), generate([package], 2, seed=3, tools=True)
    assert [r["id"] for r in tools] == [r["id"] for r in text] and len(tools) == 2  # the same functions, same order
    assert generate([package], 2, seed=3, tools=True) == tools
    assert [r["id"] for r in generate([package], 2, seed=4, tools=True)] != [r["id"] for r in tools]
    for record in tools:
        assert record["tools"] == TOOLS
        calls = [m["tool_calls"][0]["function"]["name"] for m in record["messages"] if m["role"] == "assistant"]
        assert calls == ["search_dir", "open", "edit", "py_compile", "submit"]
        results = [m for m in record["messages"] if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in results] == [m["tool_calls"][0]["id"] for m in record["messages"]
                                                         if m["role"] == "assistant"]
        # the text trajectory's observations, in the same order
        same = next(r for r in text if r["id"] == record["id"])
        assert [m["content"] for m in results] == [m["content"] for m in same["messages"] if m["role"] == "tool"]
    out = tmp_path / "t.jsonl"
    main(["--source", str(package), "--num", "2", "--seed", "3", "--tools", "--out", str(out)])
    assert [json.loads(line) for line in out.read_text().splitlines()] == tools


def test_the_generator_refuses_the_agent_benchmarks_heldout_trees(tmp_path):
    from icae.data.generate_trajectories import heldout_inside, main
    from icae.data.tool_context import site_packages
    from icae.errors import UserError

    assert heldout_inside([make_package(tmp_path / "src")]) == []
    assert heldout_inside([site_packages() / "tqdm"]) == [str(site_packages() / "tqdm")]
    with pytest.raises(UserError, match="held-out trees"):
        main(["--source", str(site_packages() / "yaml"), "--num", "1", "--tools", "--out", str(tmp_path / "x.jsonl")])
    assert not (tmp_path / "x.jsonl").exists()


def test_the_generator_writes_the_benchmarks_heldout_references_to_score_agents_on(tmp_path):
    from icae.agent import heldout_tasks
    from icae.data.generate_trajectories import main
    from icae.errors import UserError

    out = tmp_path / "heldout.jsonl"
    main(["--heldout", "3", "--seed", "1", "--statement", "tokens", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tasks = heldout_tasks(3, 1, statement="tokens")
    assert [r["id"] for r in rows] == [t.id for t in tasks] and all(r["tools"] == TOOLS for r in rows)
    for row, task in zip(rows, tasks):
        assert row["messages"][1] == {"role": "user", "content": task.instruction}  # stated as the benchmark states it
        assert [m["tool_calls"][0]["function"]["name"] for m in row["messages"] if m["role"] == "assistant"] == [
            "search_dir", "open", "edit", "py_compile", "submit"]
        assert f"\n {task.def_line}\n+{task.comment}\n" in row["messages"][-1]["content"]  # the diff it submits
    assert len(load_trajectories(str(out), "messages")) == 3  # readable as an eval_dataset_repo
    with pytest.raises(UserError) as e:
        main(["--heldout", "0", "--stdlib", "json", "--renames", "2", "--out", str(tmp_path / "x.jsonl")])
    assert "--heldout must be 1 or more, got 0" in str(e.value)
    assert "--heldout writes the benchmark's own tasks: drop --stdlib, --renames" in str(e.value)
    assert not (tmp_path / "x.jsonl").exists()


def test_the_agent_recipes_train_both_agents_alike_on_the_tool_call_data():
    from pathlib import Path

    from icae.config import load_config

    configs = Path(__file__).resolve().parents[2] / "icae" / "configs"
    agents = {k: load_config(configs / f"agent_tools_{k}.yaml").to_dict() for k in ("icae", "icae8x", "llm")}
    shipped = {k: load_config(configs / f"trajectories_{k}.yaml").to_dict() for k in ("icae", "llm")}
    for kind, config in agents.items():
        assert config["dataset_repo"] == "outputs/agent_tools/moved.jsonl"
        assert config["output_dir"] == f"outputs/agent_tools_{kind}"
        assert config["chat_template"] == "icae/assets/templates/compact_tools.jinja"
        assert (config["max_history_tokens"], config["max_steps"], config["per_device_train_batch_size"]) == (3072, 4000,
                                                                                                             4)
        # otherwise the shipped recipe: ICAE from its compressor, SimpleLLM from the equal-compute control
        base = shipped["llm" if kind == "llm" else "icae"]
        changed = {k for k in config if config[k] != base[k]}
        expected = {"dataset_repo", "output_dir", "max_history_tokens", "max_out_length", "max_steps", "save_steps",
                    "chat_template"}
        assert changed == expected | ({"restore_from"} if kind == "llm" else set()) | (
            {"restore_from", "mean_compression_rate"} if kind == "icae8x" else set())
    assert agents["llm"]["restore_from"] == "tiny-llm-pretrained"
    assert (agents["icae8x"]["restore_from"], agents["icae8x"]["mean_compression_rate"]) == ("tiny-icae-8x", 8)
    for kind in agents:
        # the data, then the three stages, alike for every agent: the first action, the first two, whole trajectories
        generate, first, second, whole = Path(configs / f"agent_tools_{kind}.yaml").read_text().splitlines()[:4]
        assert generate.startswith("# python -m icae.scripts.generate_trajectories ") and "--tools" in generate
        assert "--renames 12 --rename_paths" in generate and "--statement tokens" in generate
        assert generate.endswith("--out outputs/agent_tools/moved.jsonl")
        stage = f"# python -m icae.scripts.finetune_trajectories --config_path icae/configs/agent_tools_{kind}.yaml"
        assert first == f"{stage} max_assistant_turns=1 max_steps=8000 output_dir=outputs/agent_tools_{kind}_first"
        assert second == (f"{stage} max_assistant_turns=2 max_steps=8000 restore_from=outputs/agent_tools_{kind}_first/final"
                          f" output_dir=outputs/agent_tools_{kind}_second")
        assert whole == f"{stage} restore_from=outputs/agent_tools_{kind}_second/final"


def test_a_longer_request_renders_only_its_new_prefixes_and_the_pieces_do_not_change(model, monkeypatch):
    """An agent's next request repeats every earlier prefix: they are kept, and the pieces are what rendering each
    time gives (argument key order included: a kept render is not a re-sorted one)."""
    from icae.data import chat_template as ct

    tok, template = model.tokenizer, ct.tools_template(model.tokenizer)
    chat = [*CHAT[:2], {"role": "assistant", "content": None, "tool_calls": [
        {"id": "z", "type": "function", "function": {"name": "edit", "arguments": json.dumps({"z": 1, "a": 2})}}]},
        *CHAT[3:]]
    ct._render_kept.cache_clear()
    kept = ct.template_pieces(tok, chat, TOOLS, template)
    renders = []
    real = ct._render_now
    monkeypatch.setattr(ct, "_render_now", lambda *a: renders.append(len(a[1])) or real(*a))
    assert ct.template_pieces(tok, chat, TOOLS, template) == kept  # the same request again: nothing rendered
    assert renders == []
    longer = chat + [{"role": "user", "content": "And the tests?"}, {"role": "assistant", "content": "Later."}]
    ct.template_pieces(tok, longer, TOOLS, template)
    # the whole conversation with and without the generation prompt (without it, also where the last assistant's
    # turn ends) and the 10 messages before that turn with the prompt: three renders, every earlier prefix kept
    assert sorted(renders) == [10, 11, 11]
    monkeypatch.setattr(ct, "_render", lambda tk, m, tl, tp, pr: real(tk, m, tl, tp, pr))  # no keeping at all
    assert ct.template_pieces(tok, chat, TOOLS, template) == kept
    assert '"arguments": {"z": 1, "a": 2}' in "".join(p.text for p in kept[0])
