"""The OpenAI chat-completions protocol, as much of it as an agent needs: requests, responses, stream chunks, errors.

Requests are validated here (pydantic) so that a bad one gets an OpenAI-style error naming the field, never a 500.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROLES = ("system", "user", "assistant", "tool")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
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


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # logprobs, user, ...: accepted, not used
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def response(cid: str, model: str, text: str, finish: str, usage: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None}],
            "usage": usage}


def chunk(cid: str, model: str, delta: dict, finish: Optional[str] = None, usage: Optional[dict] = None) -> dict:
    out = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if usage is not None:
        out["usage"] = usage
    return out


def error(message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
          code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


FinishReason = Literal["stop", "length"]
