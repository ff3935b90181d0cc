"""Validation and message shaping shared by the OpenAI, Anthropic and Responses translations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.types import Message, RejectedError, ToolSpec


def bad(field: str, why: str) -> RejectedError:
    """A 400 naming the field at fault, in the caller's terms."""
    return RejectedError(f"{field}: {why}", status=400)


def parse_model(body: Any) -> str:
    """The body must be a JSON object naming a model; returns the name."""
    if not isinstance(body, dict):
        raise RejectedError("the request body must be a JSON object", status=400)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "is required and must be a non-empty string")
    return model


def parse_tool(name: Any, description: Any, schema: Any, where: str, schema_field: str) -> ToolSpec:
    if not isinstance(name, str):
        raise bad(f"{where}.name", "is required")
    if description is not None and not isinstance(description, str):
        raise bad(f"{where}.description", "must be a string")
    if schema is not None and not isinstance(schema, dict):
        raise bad(f"{where}.{schema_field}", "must be a JSON schema object")
    return ToolSpec(name=name, description=description, parameters=schema or {"type": "object", "properties": {}})


def parse_stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "must be a boolean")
    return stream


def fold_system_turns(messages: list[Message], *, keep_leading: bool = True) -> list[Message]:
    """System turns moved to the nearest place a strict chat template allows.

    The leading system turns stay one system turn (when `keep_leading`); every later one becomes
    user text at its own position, merged with the adjacent user turn so that user and assistant
    turns still alternate. Nothing is dropped and the order of the words is kept.
    """
    out: list[Message] = []
    start = 0
    while start < len(messages) and messages[start].role == "system":
        start += 1
    lead = "\n\n".join(m.content for m in messages[:start] if m.content)
    if lead and keep_leading:
        out.append(Message(role="system", content=lead))
    elif lead:
        out.append(Message(role="user", content=lead))
    for m in messages[start:]:
        if m.role == "system":
            m = Message(role="user", content=m.content)
        prev = out[-1] if out else None
        if m.role == "user" and prev is not None and prev.role == "user":
            text = "\n\n".join(t for t in (prev.content, m.content) if t)
            out[-1] = replace(prev, content=text, attachments=prev.attachments + m.attachments)
        else:
            out.append(m)
    return out
