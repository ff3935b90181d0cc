"""Error shapes in the caller's protocol: the field at fault, types that follow the cause, and a
connection that survives a bad request."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx
import pytest

from router.listener import Listener
from tests.fixtures.fake_upstream import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Reply,
    anthropic_error_event,
    anthropic_text_stream,
    openai_text_stream,
)
from tests.listener.helpers import HELLO, sse_events


async def exchange(listener: Listener, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the requests one after the other on ONE connection; (status, body) of each answer."""
    parts = urlsplit(listener.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    answers = []
    try:
        for raw in requests:
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            answers.append((status, await reader.readexactly(length)))
    finally:
        writer.close()
    return answers


def http_post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


HEALTH = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"


@pytest.mark.parametrize("depth", [129, 5000], ids=["past-our-limit", "past-the-parser-limit"])
async def test_deep_nesting_is_a_400_and_the_connection_stays(listener, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    body = b'{"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "x": ' + nested + b"}"
    (status, error), (after, health) = await exchange(listener, [http_post("/v1/chat/completions", body), HEALTH])
    assert status == 400 and after == 200
    assert json.loads(error)["error"]["type"] == "invalid_request_error"
    assert json.loads(health)["status"] == "ok"


async def test_nesting_within_the_limit_is_fine(listener) -> None:
    schema: dict = {"type": "object"}
    for _ in range(60):
        schema = {"type": "object", "properties": {"a": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 2, "tools": tools}
        )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"stop": 7}, "stop"),
        ({"seed": -1}, "seed"),
    ],
)
async def test_openai_param_names_the_field(listener, body: dict, param: str) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, **body})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": r.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


async def test_unknown_endpoints_and_methods_have_their_own_types(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.get("/v1/nothing")
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found_error" and r.json()["error"]["code"] == "unknown_url"
        r = await c.post("/v1/messages/nothing", json={})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = await c.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        r = await c.get("/v1/messages")
        assert r.status_code == 405 and r.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "method GET is not allowed on /v1/messages"},
        }
        r = await c.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def anthropic_error_type(listener, model: str) -> str:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/messages", json={"model": model, "stream": True, "max_tokens": 20, "messages": HELLO})
    event, data = sse_events(r.text)[-1]
    assert event == "error"
    return json.loads(data)["error"]["type"]


async def test_anthropic_error_types_follow_the_cause(listener, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
    assert await anthropic_error_type(listener, "gpt-4o") == "api_error"  # a cut is not an overload
    fake_upstream.script(ANTHROPIC_PATH, Reply(stream=[*anthropic_text_stream("a b c")[:4], anthropic_error_event()]))
    assert await anthropic_error_type(listener, "claude-x") == "overloaded_error"  # the upstream said so
    fake_upstream.set_default(OPENAI_PATH, 500)
    fake_upstream.set_default(ANTHROPIC_PATH, 500)
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": HELLO})
    assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"


async def test_the_schema_and_the_docs_need_the_key_when_one_is_set(workbench, listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        assert "/v1/messages" in (await c.get("/openapi.json")).json()["paths"]
        assert (await c.get("/docs")).status_code == 200
    keyed = Listener(workbench, "127.0.0.1", 0, api_key="k-0815")
    await keyed.start()
    try:
        async with httpx.AsyncClient(base_url=keyed.url, timeout=60) as c:
            for path in ("/openapi.json", "/docs"):
                r = await c.get(path)
                assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
                assert (await c.get(path, headers={"authorization": "Bearer k-0815"})).status_code == 200
    finally:
        await keyed.stop()
