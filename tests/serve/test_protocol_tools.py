"""Hermes tool-call parsing (icae.serve.tools) on hand-written replies, and the tools template of the tiny assets."""

import json

import pytest

from icae.serve import tools
from icae.serve.render import TOOLS_TEMPLATE

NAMES = {"bash", "grep"}
CALL_A = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
CALL_B = '<tool_call>{"name": "grep", "arguments": {"pattern": "d\\u00e9f", "n": 3}}</tool_call>'


def calls_of(parsed):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.calls]


def test_text_before_a_call_is_the_content_and_the_call_is_parsed():
    parsed = tools.parse("I will list the files.\n" + CALL_A, NAMES)
    assert parsed.content == "I will list the files."
    assert calls_of(parsed) == [("bash", {"command": "ls -la"})]
    assert parsed.calls[0]["type"] == "function" and parsed.calls[0]["id"].startswith("call_")


def test_two_calls_and_parallel_false_keeps_the_first():
    text = CALL_A + "\n" + CALL_B
    assert calls_of(tools.parse(text, NAMES)) == [("bash", {"command": "ls -la"}), ("grep", {"pattern": "déf", "n": 3})]
    assert calls_of(tools.parse(text, NAMES, parallel=False)) == [("bash", {"command": "ls -la"})]
    assert tools.parse(text, NAMES).content is None
    ids = [c["id"] for c in tools.parse(text, NAMES).calls]
    assert len(set(ids)) == 2  # each call its own id


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"\n</tool_call>',  # JSON cut short
    '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>',  # a function that was not offered
    '<tool_call>\n{"name": "bash", "arguments": ["ls"]}\n</tool_call>',  # arguments not an object
    '<tool_call>\n["bash"]\n</tool_call>',
    CALL_A + "\n<tool_call>{not json}</tool_call>",  # one bad block: the whole reply is text
    '<tool_call>\n{"name": "bash", "arguments": {"command": "ls',  # truncated by max_tokens
])
def test_anything_but_well_formed_calls_is_returned_as_text(text):
    parsed = tools.parse(text, NAMES)
    assert parsed.calls == [] and parsed.content == text


def test_string_arguments_unclosed_last_call_and_text_after():
    parsed = tools.parse('<tool_call>{"name": "bash", "arguments": "{\\"command\\": \\"pwd\\"}"}</tool_call>', NAMES)
    assert calls_of(parsed) == [("bash", {"command": "pwd"})]
    parsed = tools.parse('<tool_call>\n{"name": "bash", "arguments": {"command": "pwd"}}\n', NAMES)  # no close tag
    assert calls_of(parsed) == [("bash", {"command": "pwd"})]
    parsed = tools.parse("Here.\n" + CALL_A + "\nDone, I think.", NAMES)
    assert parsed.content == "Here.\nDone, I think." and len(parsed.calls) == 1
    assert tools.parse("no calls here <tool", NAMES).content == "no calls here <tool"


def test_a_call_the_reply_ends_inside_keeps_its_last_character_and_leaves_no_content():
    parsed = tools.parse('<tool_call>{"name": "bash", "arguments": {"command": "pwd"}}', NAMES)  # ends at its "}"
    assert calls_of(parsed) == [("bash", {"command": "pwd"})] and parsed.content is None


def test_parameters_are_read_as_arguments_and_a_call_without_them_has_empty_arguments():
    assert calls_of(tools.parse('<tool_call>{"name": "bash", "parameters": {"command": "ls"}}</tool_call>', NAMES)) == [
        ("bash", {"command": "ls"})]
    parsed = tools.parse('<tool_call>{"name": "bash"}</tool_call>', NAMES)
    assert calls_of(parsed) == [("bash", {})] and parsed.calls[0]["function"]["arguments"] == "{}"


def test_arguments_keep_non_ascii_text_as_written_and_ids_are_openai_shaped():
    call = tools.parse(CALL_B, NAMES).calls[0]
    assert "déf" in call["function"]["arguments"]  # not escaped to \u00e9: what the model wrote, as vLLM returns it
    assert call["id"].startswith("call_") and len(call["id"]) == len("call_") + 24
    assert all(c in "0123456789abcdef" for c in call["id"][len("call_"):])


def test_a_stream_without_parallel_calls_keeps_the_first_call_only():
    stream = tools.ToolStream(NAMES, parallel=False)
    assert stream.feed(CALL_A + "\n" + CALL_B) == ""
    rest, calls = stream.finish()
    assert rest == "" and [c["function"]["name"] for c in calls] == ["bash"]


@pytest.mark.parametrize("text", [
    "Plain text, no call.  \n",
    "Listing.\n  " + CALL_A,
    CALL_A + "\n" + CALL_B,
    "Broken: <tool_call>{bad}</tool_call>",
    "a <tool_ not a call",
    "Here.\n" + CALL_A + "\nDone.",
])
@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_a_stream_sends_the_same_content_and_calls_as_the_whole_reply(text, piece):
    whole = tools.parse(text, NAMES)
    stream = tools.ToolStream(NAMES)
    sent = "".join(stream.feed(text[i:i + piece]) for i in range(0, len(text), piece))
    rest, calls = stream.finish()
    assert sent + rest == (whole.content or "")
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in whole.calls]
    if whole.calls:
        assert "<tool_call>" not in sent  # a call's text is never sent as content


def test_a_stream_holds_back_text_that_may_open_a_call():
    stream = tools.ToolStream(NAMES)
    assert stream.feed("ok <tool") == "ok"
    assert stream.feed("_call>{") == ""  # it was a call: nothing of it went out
    stream = tools.ToolStream(NAMES)
    assert stream.feed("ok <tool") == "ok"
    assert stream.feed("box> yes") == " <toolbox> yes"  # not a call after all


def test_a_prefix_written_for_the_model_is_part_of_what_is_parsed():
    stream = tools.ToolStream(NAMES, prefix='<tool_call>\n{"name": "bash", "arguments": ')
    assert stream.feed('{"command": "ls"}}\n</tool_call>') == ""
    rest, calls = stream.finish()
    assert rest == "" and [c["function"]["name"] for c in calls] == ["bash"]


def test_the_shipped_template_renders_plain_chats_as_chatml_and_tools_as_hermes():
    from icae.models.loading import CHAT_TEMPLATE, tiny_tokenizer

    tok, template = tiny_tokenizer(), TOOLS_TEMPLATE.read_text()
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
            {"role": "tool", "content": "t"}]
    for prompt in (True, False):  # without tools: exactly the ChatML the recipes and chat frames use
        assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt, chat_template=template) == \
            tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt, chat_template=CHAT_TEMPLATE)
    tool = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
    history = [{"role": "user", "content": "u"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}}]},
               {"role": "tool", "content": "a.py"}, {"role": "tool", "content": "b.py"}]
    text = tok.apply_chat_template(history, tools=[tool], tokenize=False, add_generation_prompt=True,
                                   chat_template=template)
    assert text.startswith("<|im_start|>system\n# Tools\n") and json.dumps(tool) in text
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>'
            '<|im_end|>\n') in text
    assert text.endswith("<|im_start|>user\n<tool_response>\na.py\n</tool_response>\n<tool_response>\nb.py\n"
                         "</tool_response><|im_end|>\n<|im_start|>assistant\n")  # results share one user turn


def test_with_tools_each_content_is_its_own_span_and_observations_are_compressed():
    from icae.serve.protocol import ChatRequest
    from icae.serve.render import Renderer
    from tests.conftest import make_model, small_config

    model = make_model(min_tokens_to_compress=16)
    renderer = Renderer(model, small_config(min_tokens_to_compress=16), None)
    long_output = "\n".join(f"src/module_{i}.py:{i}: def handler_{i}(request):" for i in range(8))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": long_output},  # the task
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]},
                {"role": "tool", "content": long_output}, {"role": "user", "content": long_output},
                {"role": "user", "content": "short"}]
    tool = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
    prepared = renderer.render(ChatRequest(model="m", messages=messages, tools=[tool], compress_user_min_tokens=16))
    spans = prepared.job.spans
    tok = model.tokenizer
    template = TOOLS_TEMPLATE.read_text()
    text = tok.apply_chat_template(messages, tools=[tool], tokenize=False, add_generation_prompt=True,
                                   chat_template=template)
    assert "".join(tok.decode(s.ids) for s in spans) == text  # the template's text, cut into spans
    compressed = [tok.decode(s.ids) for s in spans if s.compress]
    assert compressed == [long_output, long_output]  # the tool result and the later long user message, not the task
    assert tok.decode(spans[-1].ids) == "<|im_start|>assistant\n" and prepared.tool_names == {"bash"}
    assert prepared.job.prompt_tokens == sum(s.ids.numel() for s in spans)
    assert prepared.job.positions == sum(model.memory_length(s.ids.numel()) if s.compress else s.ids.numel()
                                         for s in spans)
    plain = renderer.render(ChatRequest(model="m", messages=messages, tools=[tool], tool_choice="none"))
    assert not plain.tool_names and "# Tools" not in "".join(tok.decode(s.ids) for s in plain.job.spans)


def test_serve_help_lists_every_config_key_and_flags_set_them(monkeypatch, capsys):
    import dataclasses

    from icae.config import SECTIONS, TrainingKeys
    from icae.scripts import serve

    with pytest.raises(SystemExit):
        serve.parser().parse_args(["--help"])
    text = capsys.readouterr().out
    keys = [f.name for cls in [*SECTIONS.values(), TrainingKeys] for f in dataclasses.fields(cls) if f.name != "extra"]
    assert [k for k in keys if f"--{k} VALUE" not in text] == []
    config = serve.config_from_args(["--port", "9001", "compress_user_min_tokens=null", "--cors_origins", "[http://a]"])
    assert (config.serve.port, config.serve.compress_user_min_tokens, config.serve.cors_origins) == (9001, None,
                                                                                                     ["http://a"])
    monkeypatch.delenv("ICAE_API_KEY", raising=False)
    assert serve.exposure_warning(config) is None  # 127.0.0.1
    exposed = serve.config_from_args(["--host", "0.0.0.0"])
    assert "without an API key" in serve.exposure_warning(exposed)
    assert serve.exposure_warning(serve.config_from_args(["--host", "0.0.0.0", "--api_key", "k"])) is None
    monkeypatch.setenv("ICAE_API_KEY", "from-env")
    assert serve.exposure_warning(exposed) is None
