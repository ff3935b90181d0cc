"""The OpenAPI schema of POST /v1/responses describes bodies the parser accepts (generated ones parse),
and the schema of /v1/messages allows Claude Code's system turns."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import schemathesis
from hypothesis import HealthCheck, given, settings

from engine.protocol.responses import request_from_responses
from router.listener import create_app
from router.listener.schemas import ANTHROPIC_MESSAGES, OPENAI_RESPONSES
from tests.agents.conftest import recorded


def test_every_body_generated_from_the_responses_schema_parses() -> None:
    schema = schemathesis.openapi.from_dict(create_app(None).openapi())  # type: ignore[arg-type]
    [operation] = [r.ok() for r in schema.get_all_operations() if r.ok().path == "/v1/responses"]
    seen = {"items": 0, "tools": 0, "calls": 0}

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        req = request_from_responses(case.body)  # a RejectedError here: the schema allows too much
        seen["items"] += isinstance(case.body["input"], list)
        seen["tools"] += bool(req.tools)
        seen["calls"] += any(m.tool_calls for m in req.messages)

    check()
    assert all(seen.values()), seen


def test_the_schemas_take_the_agents_message_shapes() -> None:
    body = recorded("claude_code_tool_result")["body"]
    shape = {
        "model": body["model"],
        "max_tokens": 5,
        "messages": [
            {"role": m["role"], "content": [{"type": "text", "text": "x"}] if m["role"] != "assistant" else "x"}
            for m in body["messages"]
        ],
    }
    assert jsonschema_rs.Draft202012Validator(ANTHROPIC_MESSAGES).is_valid(shape)
    assert not jsonschema_rs.Draft202012Validator(OPENAI_RESPONSES).is_valid(
        {"model": "m", "input": "x", "store": True}
    )
