"""The OpenAI chat-completions protocol, as much of it as an agent needs: requests, responses, stream chunks, errors.

Requests are validated here (pydantic) so that a bad one gets an OpenAI-style error naming the field, never a 500.
A parameter this server does not implement is refused (``ChatRequest.unsupported``), never silently dropped.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROLES = ("system", "user", "assistant", "tool")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
# Fields a client may send that change nothing a server like this one computes (who asked, what to store upstream).
IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"] = "text"
    text: str = ""


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: Union[str, dict, None] = None


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Optional[str] = None
    type: str = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ...: accepted, not used
    role: str
    content: Union[str, list[TextPart], None] = None
    tool_calls: Optional[list[ToolCall]] = None

    @field_validator("role")
    @classmethod
    def known_role(cls, role: str) -> str:
        role = {"developer": "system", "function": "tool"}.get(role, role)
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
        return role

    def as_dict(self) -> dict:
        """The message as the trajectory converter reads it (tool calls as plain dicts)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content if isinstance(self.content, (str, type(None)))
                               else [p.model_dump() for p in self.content]}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        return out


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: Optional[str] = None
    parameters: Optional[dict] = None
    strict: Optional[bool] = None

    @field_validator("name")
    @classmethod
    def valid_name(cls, name: str) -> str:
        if not TOOL_NAME.match(name):
            raise ValueError(f"a function name is 1-64 letters, digits, '_' or '-', got {name!r}")
        return name


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # extra fields are named by unsupported()
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1)  # what torch.Generator.manual_seed takes
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=20)
    # Not implemented: accepted only at the values that change nothing (unsupported() names any other).
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: Optional[dict[str, float]] = None
    response_format: Optional[dict] = None
    # This server's own (send it with the client's extra_body): user messages after the first with at least this
    # many tokens are compressed as observations; null: none are. Unset: the server's compress_user_min_tokens.
    compress_user_min_tokens: Optional[int] = Field(default=None, ge=0)

    @field_validator("stop")
    @classmethod
    def few_stops(cls, stop):
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(stop)}")
        if stop == "" or (isinstance(stop, list) and "" in stop):
            raise ValueError("a stop sequence cannot be empty")
        return stop

    @model_validator(mode="after")
    def tools_consistent(self) -> "ChatRequest":
        if self.tools is not None and not self.tools:
            raise ValueError("tools: give at least one tool, or leave tools out")
        if self.tools:
            names = [t.function.name for t in self.tools]
            if len(set(names)) < len(names):
                raise ValueError(f"tools: function names must differ, got {names}")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice is only allowed when tools are specified")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in {
                t.function.name for t in self.tools or []}:
            raise ValueError(f"tool_choice names function {self.tool_choice.function.name!r}, which is not in tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def unsupported(self) -> list[str]:
        """Every parameter set to something this server does not do (the request is refused with all of them)."""
        out = [f"{key} is not a parameter this server knows (remove it)" for key in sorted(self.model_extra or {})
               if key not in IGNORED]
        if self.presence_penalty or self.frequency_penalty:
            out.append("presence_penalty and frequency_penalty are not implemented (send 0 or leave them out)")
        if self.logit_bias:
            out.append("logit_bias is not implemented (leave it out)")
        if self.response_format and self.response_format.get("type", "text") != "text":
            out.append(f"response_format {self.response_format.get('type')!r} is not implemented (only 'text')")
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list) and any(p.type != "text" for p in m.content):
                out.append(f"messages[{i}].content: only text parts are served")
        return out

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    @property
    def tool_mode(self) -> str:
        """none (no tools rendered or parsed), auto, required (a call is begun for the model) or named."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def response(cid: str, model: str, message: dict, finish: str, usage: dict, logprobs: Optional[dict] = None) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish,
                         "logprobs": logprobs}],
            "usage": usage}


def chunk(cid: str, model: str, delta: dict, finish: Optional[str] = None, usage: Optional[dict] = None,
          logprobs: Optional[dict] = None) -> dict:
    out = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}
    if usage is not None:
        out["usage"] = usage
    return out


def error(message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
          code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


FinishReason = Literal["stop", "length", "tool_calls"]
