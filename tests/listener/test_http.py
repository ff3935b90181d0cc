"""The listener at the HTTP level: SSE framing, errors, limits, auth, disconnects, start-up failures."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from router.listener import Listener, ListenerError
from tests.fixtures.fake_upstream import OPENAI_PATH, Reply, openai_text_stream
from tests.listener.helpers import HELLO, sse_events


async def test_openai_sse_framing(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": HELLO,
                "stream": True,
                "max_tokens": 5,
                "temperature": 0,
                "stream_options": {"include_usage": True},
            },
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    objs = [json.loads(d) for _, d in events[:-1]]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(o["object"] == "chat.completion.chunk" for o in objs)
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] > 0
    assert [o["choices"][0]["finish_reason"] for o in objs[:-1] if o["choices"][0]["finish_reason"]] in (
        ["stop"],
        ["length"],
    )


async def test_anthropic_event_sequence_is_exact(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(
            "/v1/messages", json={"model": "tiny", "messages": HELLO, "stream": True, "max_tokens": 5, "temperature": 0}
        )
    names = [e for e, _ in sse_events(r.text)]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    for event, data in sse_events(r.text):
        assert json.loads(data)["type"] == event


async def test_error_after_streaming_began_ends_with_the_protocol_error(listener, fake_upstream) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
        r = await c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": True})
        objs = [json.loads(d) for _, d in sse_events(r.text) if d != "[DONE]"]
        assert "error" in objs[-1] and objs[-1]["error"]["message"]
        assert any(o.get("choices") and o["choices"][0]["delta"].get("content") for o in objs)
        fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
        r = await c.post("/v1/messages", json={"model": "gpt-4o", "messages": HELLO, "stream": True, "max_tokens": 20})
        events = sse_events(r.text)
        assert events[-1][0] == "error" and json.loads(events[-1][1])["type"] == "error"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_invalid_json_missing_fields_and_size_limit(workbench, path: str) -> None:
    lst = Listener(workbench, "127.0.0.1", 0, max_body_bytes=4096)
    await lst.start()
    try:
        async with httpx.AsyncClient(base_url=lst.url, timeout=60) as c:
            r = await c.post(path, content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 400
            body = r.json()
            if path == "/v1/messages":
                assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
            else:
                assert body["error"]["type"] == "invalid_request_error" and "not valid JSON" in body["error"]["message"]
            r = await c.post(path, json={"model": "tiny", "max_tokens": 5})
            assert r.status_code == 400 and "messages: is required" in r.text
            r = await c.post(
                path, json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 10000}], "max_tokens": 5}
            )
            assert r.status_code == 413

            async def chunks():
                for _ in range(10):
                    yield b" " * 1000

            r = await c.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413
    finally:
        await lst.stop()


async def test_unknown_model_path_and_method(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = await c.get("/v1/nothing")
        assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]
        r = await c.get("/v1/messages")
        assert r.status_code == 405 and r.json()["type"] == "error"


async def test_models_health_and_count_tokens(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        ids = {m["id"] for m in (await c.get("/v1/models")).json()["data"]}
        assert {"tiny-llama-mlx", "tiny-llama", "tiny"} <= ids
        health = (await c.get("/health")).json()
        assert {b["name"] for b in health["backends"]} == {"local", "openai", "anthropic"}
        r = await c.post("/v1/messages/count_tokens", json={"model": "tiny", "messages": HELLO})
        assert r.headers["x-mlxwb-token-count"] == "exact" and r.json()["input_tokens"] > 3
        r = await c.post("/v1/messages/count_tokens", json={"model": "claude-x", "messages": HELLO})
        assert r.headers["x-mlxwb-token-count"] == "estimate" and r.json()["input_tokens"] >= 1
        # Sampling fields are not part of a count: junk there is no reason to refuse one.
        exact = (await c.post("/v1/messages/count_tokens", json={"model": "tiny", "messages": HELLO})).json()
        r = await c.post(
            "/v1/messages/count_tokens", json={"model": "tiny", "messages": HELLO, "temperature": "hot", "stream": 3}
        )
        assert r.status_code == 200 and r.json() == exact
        r = await c.post("/v1/messages/count_tokens", json={"model": "tiny", "messages": "hi"})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


async def test_auth_bearer_and_x_api_key(workbench) -> None:
    lst = Listener(workbench, "127.0.0.1", 0, api_key="k-123")
    await lst.start()
    try:
        async with httpx.AsyncClient(base_url=lst.url, timeout=60) as c:
            body = {"model": "tiny", "messages": HELLO, "max_tokens": 2}
            assert (await c.post("/v1/chat/completions", json=body)).status_code == 401
            r = await c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert (
                await c.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer k-123"})
            ).status_code == 200
            r = await c.post("/v1/messages", json=body, headers={"x-api-key": "bad"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert (await c.post("/v1/messages", json=body, headers={"x-api-key": "k-123"})).status_code == 200
            assert (await c.get("/health")).status_code == 401
    finally:
        await lst.stop()


async def test_non_loopback_without_a_key_is_refused(workbench) -> None:
    with pytest.raises(ListenerError, match="without a listener key"):
        await Listener(workbench, "0.0.0.0", 0).start()


async def test_port_in_use_is_a_clear_error_and_the_loop_lives_on(workbench) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(ListenerError, match=f"port {port} on 127.0.0.1 is in use"):
            await Listener(workbench, "127.0.0.1", port).start()
        await asyncio.sleep(0.01)
    finally:
        blocker.close()


async def test_access_log_has_method_path_status_but_no_key_or_prompt(workbench, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="mlxwb.listener")
    lst = Listener(workbench, "127.0.0.1", 0, api_key="k-secret-4711")
    await lst.start()
    try:
        async with httpx.AsyncClient(base_url=lst.url, timeout=60) as c:
            r = await c.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer k-secret-4711"},
                json={
                    "model": "tiny",
                    "max_tokens": 2,
                    "stream": True,
                    "messages": [{"role": "user", "content": "prompt-marker-xyz"}],
                },
            )
            assert r.status_code == 200
            assert (await c.get("/health", headers={"x-api-key": "wrong-key-0815"})).status_code == 401
    finally:
        await lst.stop()
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "mlxwb.listener"]
    assert any(line.startswith("POST /v1/chat/completions 200") for line in lines), lines
    assert any(line.startswith("GET /health 401") for line in lines), lines
    text = "\n".join(caplog.text.splitlines() + lines)
    for secret in ("k-secret-4711", "wrong-key-0815", "prompt-marker-xyz"):
        assert secret not in text


async def test_a_client_gone_while_its_body_arrives_is_logged_as_gone_not_as_a_bug(listener, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="mlxwb.listener")
    host, port = listener.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 100000\r\n\r\n{"model": "tiny", "messages": ['
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the body is being read
    writer.close()
    await writer.wait_closed()
    lines: list[str] = []
    for _ in range(100):
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "mlxwb.listener"]
        if any(line.startswith("POST /v1/chat/completions") for line in lines):
            break
        await asyncio.sleep(0.02)
    assert any(line.startswith("POST /v1/chat/completions 499") for line in lines), lines
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
