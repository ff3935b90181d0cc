"""JSON schemas of the request bodies, for the OpenAPI document (clients, schemathesis).

Validation itself is done by engine/protocol's parsers, which name the field at fault; these
schemas describe what those parsers accept (tests/listener/test_schemas.py feeds bodies
generated from them to the parsers), so nothing here is enforced by FastAPI.
"""

from __future__ import annotations

from typing import Any

_STRING: dict[str, Any] = {"type": "string"}
_MAX_TOKENS: dict[str, Any] = {"type": ["integer", "null"], "minimum": 1}
_STOP_LIST: dict[str, Any] = {"type": "array", "items": _STRING}
_JSON_SCHEMA_OBJECT: dict[str, Any] = {"type": "object"}
# ChatRequest.validate strips the name: it needs one character that Python's str.strip() keeps
# (it also strips \x1c-\x1f and \x85, which the ECMA-262 `\S` of JSON Schema does not exclude).
_MODEL: dict[str, Any] = {"type": "string", "pattern": r"[^\s\x1c-\x1f\x85]"}


def _text_part(kind: str = "text") -> dict[str, Any]:
    return {"type": "object", "required": ["type", "text"], "properties": {"type": {"const": kind}, "text": _STRING}}


# ---------------------------------------------------------------- OpenAI chat completions

_OPENAI_CONTENT: dict[str, Any] = {"anyOf": [_STRING, {"type": "null"}, {"type": "array", "items": _text_part()}]}

_OPENAI_TOOL_CALL: dict[str, Any] = {
    "type": "object",
    "required": ["function"],
    "properties": {
        "id": _STRING,
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {"name": _STRING, "arguments": _STRING}},
    },
}


def _openai_message(roles: list[str], **extra: dict[str, Any]) -> dict[str, Any]:
    """The parser reads the same fields on every role (tool_calls too); a tool message needs its call's id."""
    required = ["role", *(["tool_call_id"] if "tool_call_id" in extra else [])]
    tool_calls = {"type": ["array", "null"], "items": _OPENAI_TOOL_CALL}
    return {
        "type": "object",
        "required": required,
        "properties": {
            "role": {"enum": roles},
            "content": _OPENAI_CONTENT,
            "name": _STRING,
            "tool_calls": tool_calls,
            **extra,
        },
    }


OPENAI_CHAT: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    _openai_message(["system", "developer", "user", "assistant"]),
                    _openai_message(["tool"], tool_call_id=_STRING),
                ]
            },
        },
        "max_tokens": _MAX_TOKENS,
        "max_completion_tokens": _MAX_TOKENS,
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "n": {"enum": [1, None]},
        # The parser takes up to 2**64 - 1; generators compare bounds as floats, so state one below it.
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63},
        "stop": {"anyOf": [_STRING, _STOP_LIST, {"type": "null"}]},
        "stream": {"type": "boolean"},
        "stream_options": {
            "anyOf": [{"type": "null"}, {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}]
        },
        "tools": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": _STRING, "description": _STRING, "parameters": _JSON_SCHEMA_OBJECT},
                    },
                },
            },
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "none", "required", None]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {"type": "object", "required": ["name"], "properties": {"name": _STRING}},
                    },
                },
            ]
        },
    },
}


# ---------------------------------------------------------------- Anthropic messages

_THINKING: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["thinking", "redacted_thinking"]}},
}
_TOOL_USE: dict[str, Any] = {
    "type": "object",
    "required": ["type", "name"],
    "properties": {
        "type": {"const": "tool_use"},
        "id": _STRING,
        "name": _STRING,
        "input": {"type": ["object", "null"]},
    },
}
_ATTACHMENT: dict[str, Any] = {
    # An image or document block; backends other than Anthropic decide whether they can read it.
    "type": "object",
    "required": ["type", "source"],
    "properties": {
        "type": {"enum": ["image", "document"]},
        "source": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["type", "media_type", "data"],
                    "properties": {"type": {"const": "base64"}, "media_type": _STRING, "data": _STRING},
                },
                {
                    "type": "object",
                    "required": ["type", "url"],
                    "properties": {"type": {"const": "url"}, "url": _STRING},
                },
            ]
        },
    },
}
_TOOL_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["type", "tool_use_id"],
    "properties": {
        "type": {"const": "tool_result"},
        "tool_use_id": _STRING,
        "content": {
            "anyOf": [_STRING, {"type": "null"}, {"type": "array", "items": {"anyOf": [_text_part(), _ATTACHMENT]}}]
        },
        "is_error": {"type": "boolean"},
    },
}
_SYSTEM_TEXT: dict[str, Any] = {"anyOf": [_STRING, {"type": "array", "items": _text_part()}]}


def _anthropic_message(role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"const": role},
            "content": {"anyOf": [_STRING, {"type": "array", "items": {"anyOf": [_text_part(), *blocks]}}]},
        },
    }


_ANTHROPIC_COMMON: dict[str, Any] = {
    "model": _MODEL,
    "messages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                _anthropic_message("user", _TOOL_RESULT, _ATTACHMENT),
                _anthropic_message("assistant", _TOOL_USE, _THINKING),
                # Mid-conversation system turns (some agents send them); text only.
                {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {"role": {"const": "system"}, "content": _SYSTEM_TEXT},
                },
            ]
        },
    },
    "system": {"anyOf": [_SYSTEM_TEXT, {"type": "null"}]},
    "tools": {
        "type": ["array", "null"],
        "items": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "type": {"const": "custom"},
                        "name": _STRING,
                        "description": _STRING,
                        "input_schema": _JSON_SCHEMA_OBJECT,
                    },
                },
                # A server tool (web_search_20250305...): only an Anthropic upstream runs it.
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"type": "string", "pattern": "^[a-z_]+_[0-9]{8}$"}, "name": _STRING},
                },
            ]
        },
    },
    "tool_choice": {
        "anyOf": [
            {"type": "null"},
            {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["auto", "any", "none"]}}},
            {
                "type": "object",
                "required": ["type", "name"],
                "properties": {"type": {"const": "tool"}, "name": _STRING},
            },
        ]
    },
}

ANTHROPIC_MESSAGES: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        **_ANTHROPIC_COMMON,
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "stop_sequences": {"anyOf": [_STOP_LIST, {"type": "null"}]},
        "stream": {"type": "boolean"},
    },
}

ANTHROPIC_COUNT_TOKENS: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": dict(_ANTHROPIC_COMMON),
}


# ---------------------------------------------------------------- OpenAI Responses (stateless)

_RESPONSES_ITEM: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "type": {"const": "message"},
                "role": {"enum": ["user", "assistant", "system", "developer"]},
                "content": {
                    "anyOf": [
                        _STRING,
                        {"type": "array", "items": {"anyOf": [_text_part("input_text"), _text_part("output_text")]}},
                    ]
                },
            },
        },
        {
            "type": "object",
            "required": ["type", "call_id", "name"],
            "properties": {
                "type": {"const": "function_call"},
                "call_id": _STRING,
                "name": _STRING,
                "arguments": _STRING,
            },
        },
        {
            "type": "object",
            "required": ["type", "call_id"],
            "properties": {"type": {"const": "function_call_output"}, "call_id": _STRING, "output": _STRING},
        },
    ]
}

OPENAI_RESPONSES: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {"anyOf": [_STRING, {"type": "array", "minItems": 1, "items": _RESPONSES_ITEM}]},
        "instructions": {"type": ["string", "null"]},
        "max_output_tokens": _MAX_TOKENS,
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "stream": {"type": "boolean"},
        "store": {"enum": [False, None]},  # stateless: store: true is a 400
        "tools": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["type", "name"],
                "properties": {
                    "type": {"const": "function"},
                    "name": _STRING,
                    "description": _STRING,
                    "parameters": _JSON_SCHEMA_OBJECT,
                },
            },
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "none", "required", None]},
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"const": "function"}, "name": _STRING},
                },
            ]
        },
    },
}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
