"""Validation shared by the OpenAI and Anthropic request parsers."""

from __future__ import annotations

from typing import Any

from engine.types import RejectedError, ToolSpec


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
