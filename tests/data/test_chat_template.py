"""The tools rendering's helpers and refusals (icae/data/chat_template.py), on hand-made messages and templates."""

import pytest

from icae.data import chat_template as ct
from icae.models.loading import load_tokenizer

SHIPPED = ct.TOOLS_TEMPLATE.read_text(encoding="utf-8")
# A minimal template (newlines as expressions: chat templates render with trim_blocks): one line per message, "role: content", tool calls as JSON; the generation prompt "assistant: ".
PLAIN = ("{% for m in messages %}{{ m.role }}: {{ m.content }}{% for c in m.tool_calls or [] %} "
         "call {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{{ '\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-qwen2-lm")


class _Tok:
    def __init__(self, template):
        self.chat_template = template


def test_tools_template_prefers_a_file_then_the_tokenizer_own_when_it_renders_tools(tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text("{# tools, ünïcode #}{{ messages }}", encoding="utf-8")
    assert ct.tools_template(_Tok("anything"), str(f)) == "{# tools, ünïcode #}{{ messages }}"
    own = "{% if tools %}{{ tools }}{% endif %}"
    assert ct.tools_template(_Tok(own)) == own
    assert ct.tools_template(_Tok("{{ messages }}")) == SHIPPED  # the tokenizer's own renders no tools
    assert ct.tools_template(_Tok(None)) == SHIPPED
    assert ct.tools_template(object()) == SHIPPED  # no chat_template attribute at all


@pytest.mark.parametrize("content, text", [
    (None, ""),
    ("plain", "plain"),
    ([{"type": "text", "text": "a"}, {"type": "image_url"}, "b", {"text": "c"}], "abc"),
    ([], ""),
    (7, "7"),
])
def test_content_text_joins_the_text_of_parts(content, text):
    assert ct.content_text(content) == text


def test_with_object_arguments_parses_json_objects_only_and_leaves_the_call_untouched():
    call = {"id": "c1", "type": "function", "function": {"name": "open", "arguments": '{"path": "a.py", "line": 3}'}}
    out = ct.with_object_arguments(call)
    assert out == {"id": "c1", "type": "function", "function": {"name": "open", "arguments": {"path": "a.py", "line": 3}}}
    assert call["function"]["arguments"] == '{"path": "a.py", "line": 3}'  # the caller's dict is not changed
    for raw in ('["a", 1]', "not json", '"a string"'):
        assert ct.with_object_arguments({"function": {"name": "f", "arguments": raw}})["function"]["arguments"] == raw
    assert ct.with_object_arguments({"function": {"name": "f", "arguments": {"k": 1}}})["function"]["arguments"] == {"k": 1}
    assert ct.with_object_arguments({"id": "x"}) == {"id": "x", "function": {}}


def _obs(role="tool", n=40, user_index=1, roles=("tool",), threshold=16, length=lambda n: n // 4, user_min=None):
    return ct.is_observation(role, n, user_index, roles, threshold, length, user_min)


def test_is_observation_follows_roles_sizes_and_the_user_rule():
    assert _obs() is True
    assert _obs(n=16) is True and _obs(n=15) is False  # at least `threshold` tokens
    assert _obs(threshold=0, n=1, length=lambda n: 1) is True  # a threshold under 1 still needs a token
    assert _obs(threshold=0, n=0, length=lambda n: 0) is False
    assert _obs(length=lambda n: n + 1) is False  # never more slots than tokens
    assert _obs(length=lambda n: n) is True
    assert _obs(role="system") is False  # not a compressed role
    assert _obs(role="assistant", roles=("assistant", "tool")) is False  # never the assistant's
    assert _obs(role="user", user_min=None, roles=("user",)) is False  # later user messages: only with user_min
    assert _obs(role="user", user_min=20, n=40) is True
    assert _obs(role="user", user_min=41, n=40) is False and _obs(role="user", user_min=40, n=40) is True
    assert _obs(role="user", user_min=1, user_index=0) is False  # the first user message is the task


def test_pieces_carry_tool_call_arguments_as_objects_and_cut_each_assistant_turn(tokenizer):
    messages = [{"role": "user", "content": "fix it"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "open", "arguments": '{"path": "a.py"}'}}]},
                {"role": "tool", "content": "line 1"}]
    pieces, prompt = ct.template_pieces(tokenizer, messages, [], PLAIN, strict=True)
    text = "".join(p.text for p in pieces)
    assert text == 'user: fix it\nassistant:  call open {"path": "a.py"}\ntool: line 1\n'
    assert prompt == "assistant: "
    assert [(p.text, p.loss) for p in pieces if p.loss] == [(' call open {"path": "a.py"}\n', True)]
    assert [p.message for p in pieces if p.message is not None] == [0, 2]  # contents are pieces of their own


def test_pieces_refuse_a_generation_prompt_that_does_not_extend_the_rendering(tokenizer):
    bad = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}{% else %}!{% endif %}"
    with pytest.raises(ct.TemplateError, match="^the chat template's generation prompt does not extend the "
                                               "conversation's rendering$"):
        ct.template_pieces(tokenizer, [{"role": "user", "content": "hi"}], [], bad)


def test_an_assistant_first_message_is_refused_when_strict_and_skipped_otherwise(tokenizer):
    messages = [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "bye"}]
    with pytest.raises(ct.TemplateError, match=r"^messages\[0\] is an assistant turn: a trajectory starts with a "
                                               "system or user one$"):
        ct.template_pieces(tokenizer, messages, [], PLAIN, strict=True)
    pieces, _ = ct.template_pieces(tokenizer, messages, [], PLAIN)
    assert [p.text for p in pieces if p.loss] == ["bye", "\n"]  # the later turn is still cut out


def test_a_turn_the_template_rewrites_later_is_refused_when_strict(tokenizer):
    # Earlier assistant turns rendered differently once a later message exists: the turn cannot be cut.
    shifty = ("{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[old] {% endif %}{{ m.role }}: "
              "{{ m.content }}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    with pytest.raises(ct.TemplateError) as refused:
        ct.template_pieces(tokenizer, messages, [], shifty, strict=True)
    assert str(refused.value) == ("messages[1] (assistant): the chat template's rendering of the conversation before "
                                  "it, with the generation prompt, is not where its turn starts in the whole "
                                  "rendering; a trajectory needs a template that renders earlier turns as they were "
                                  "generated")
    pieces, _ = ct.template_pieces(tokenizer, messages, [], shifty)
    assert not any(p.loss for p in pieces)  # not strict: the turn is left uncut


def test_a_template_that_writes_a_content_twice_is_refused(tokenizer):
    twice = "{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}"
    with pytest.raises(ct.TemplateError, match=r"^the chat template renders messages\[0\]'s content twice; use a "
                                               "chat_template that places each content once$"):
        ct.template_pieces(tokenizer, [{"role": "user", "content": "x"}], [], twice)


def test_template_errors_name_what_the_template_raised(tokenizer):
    raising = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(ct.TemplateError, match="^the chat template cannot render these messages: roles must alternate"):
        ct.template_pieces(tokenizer, [{"role": "user", "content": "x"}], [], raising)


def test_messages_that_are_not_json_are_rendered_without_the_cache(tokenizer):
    class Name(str):  # a caller's own str subclass is still JSON; a set is not
        pass

    messages = [{"role": "user", "content": Name("hi"), "extra": {1, 2}}]
    tools = [{"type": "function", "function": {"name": "open"}}]
    with_tools = "{% if tools %}[{{ tools | length }} tool]{% endif %}" + PLAIN
    pieces, prompt = ct.template_pieces(tokenizer, messages, tools, with_tools)
    assert "".join(p.text for p in pieces) == "[1 tool]user: hi\n" and prompt == "assistant: "


COMPACT = ct.TOOLS_TEMPLATE.parents[1] / "templates" / "compact_tools.jinja"


def test_the_compact_template_lists_signatures_and_writes_turns_as_the_shipped_one(tokenizer):
    tools = [{"type": "function", "function": {"name": "open", "description": "Show a file.", "parameters": {
                 "type": "object", "properties": {"path": {"type": "string"}, "line_number": {"type": "integer"}},
                 "required": ["path"]}}},
             {"type": "function", "function": {"name": "submit", "parameters": {"type": "object", "properties": {}}}}]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "fix it"},
                {"role": "assistant", "content": "DISCUSSION\nopen it", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "open", "arguments": '{"path": "a.py"}'}}]},
                {"role": "tool", "content": "1:x = 1"}]
    compact = COMPACT.read_text(encoding="utf-8")
    text = "".join(p.text for p in ct.template_pieces(tokenizer, messages, tools, compact, strict=True)[0])
    head = ('<|im_start|>system\nBe brief.\n\n# Tools\nopen(path: string, line_number?: integer)\nsubmit()\n'
            'Call one as <tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
            '<|im_end|>\n')
    assert text.startswith(head)
    # everything after the system turn (the user turn, the tool call, the tool response) is the shipped template's
    shipped = "".join(p.text for p in ct.template_pieces(tokenizer, messages, tools, SHIPPED, strict=True)[0])
    assert text[len(head):] == shipped[shipped.index("<|im_start|>user"):]
    assert '<tool_call>\n{"name": "open", "arguments": {"path": "a.py"}}\n</tool_call>' in text


def test_the_compact_template_writes_a_union_type_and_a_typeless_parameter(tokenizer):
    tools = [{"type": "function", "function": {"name": "grep", "parameters": {"type": "object", "properties": {
        "pattern": {"type": ["string", "null"]}, "flags": {}}, "required": ["pattern"]}}}]
    messages = [{"role": "user", "content": "find it"}]
    text = "".join(p.text for p in ct.template_pieces(tokenizer, messages, tools, COMPACT.read_text(), strict=True)[0])
    assert "\n# Tools\ngrep(pattern: string|null, flags?: any)\n" in text
