"""The OpenAPI request schemas describe what the protocol parsers accept, in both directions:
every body generated from a schema parses, and the bodies real clients send fit the schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from engine.protocol.anthropic import request_from_anthropic
from engine.protocol.openai import request_from_openai
from engine.types import ChatRequest, RejectedError
from router.listener import create_app
from router.listener.routes.anthropic import counted_fields
from router.listener.schemas import ANTHROPIC_COUNT_TOKENS, ANTHROPIC_MESSAGES, OPENAI_CHAT


def _count_tokens_request(body: Any) -> ChatRequest:
    return request_from_anthropic(counted_fields(body))


PARSERS: dict[str, Callable[[Any], ChatRequest]] = {
    "/v1/chat/completions": request_from_openai,
    "/v1/messages": request_from_anthropic,
    "/v1/messages/count_tokens": _count_tokens_request,
}


def _operations() -> dict[str, Any]:
    schema = schemathesis.openapi.from_dict(create_app(None).openapi())  # type: ignore[arg-type]
    return {op.path: op for op in (r.ok() for r in schema.get_all_operations())}


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_every_body_generated_from_the_schema_parses(path: str) -> None:
    operation = _operations()[path]
    seen = {"tools": 0, "content lists": 0, "tool role": 0}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        req = PARSERS[path](case.body)  # raises RejectedError (400) if the schema allows too much
        seen["tools"] += bool(req.tools)
        seen["tool role"] += any(m.role == "tool" for m in req.messages)
        seen["content lists"] += any(isinstance(m.get("content"), list) for m in case.body["messages"])

    check()
    assert all(seen.values()), seen


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OPENAI_BODIES = [
    {"model": "demo", "messages": [{"role": "user", "content": "Hello"}]},
    {
        "model": "demo",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
        "temperature": 0,
        "stop": ["\n"],
        "seed": 7,
        "n": 1,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "?"}]},
        ],
    },
    {
        "model": "gpt-4o",
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    },
]
ANTHROPIC_BODIES = [
    {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "Hello"}]},
    {
        "model": "claude-x",
        "max_tokens": 10,
        "stream": True,
        "stop_sequences": ["\n"],
        "temperature": 0.5,
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "..."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}
                ],
            },
            {"role": "system", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "text", "text": "And this?"},
                ],
            },
        ],
    },
]


@pytest.mark.parametrize(
    ("schema", "parse", "bodies"),
    [
        (OPENAI_CHAT, request_from_openai, OPENAI_BODIES),
        (ANTHROPIC_MESSAGES, request_from_anthropic, ANTHROPIC_BODIES),
        (ANTHROPIC_COUNT_TOKENS, _count_tokens_request, ANTHROPIC_BODIES),
    ],
)
def test_what_clients_send_fits_the_schema(
    schema: dict[str, Any], parse: Callable[[Any], ChatRequest], bodies: list[dict[str, Any]]
) -> None:
    validator = jsonschema_rs.Draft202012Validator(schema)
    for body in bodies:
        parse(body)
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (body, errors)


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (OPENAI_CHAT, {"model": "m", "messages": [{"role": "tool", "content": "x"}]}),  # no tool_call_id
        (OPENAI_CHAT, {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        (OPENAI_CHAT, {"model": " ", "messages": [{"role": "user", "content": "x"}]}),
        (OPENAI_CHAT, {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}),
        (ANTHROPIC_MESSAGES, {"model": "m", "messages": [{"role": "user", "content": "x"}]}),  # no max_tokens
        (
            ANTHROPIC_MESSAGES,
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "system", "content": [{"type": "image", "source": {"type": "url"}}]}],
            },
        ),  # a system turn is text only
    ],
)
def test_the_schema_rejects_what_the_parsers_reject(schema: dict[str, Any], body: dict[str, Any]) -> None:
    assert not jsonschema_rs.Draft202012Validator(schema).is_valid(body)
    parse = request_from_openai if schema is OPENAI_CHAT else request_from_anthropic
    with pytest.raises(RejectedError):
        parse(body)
