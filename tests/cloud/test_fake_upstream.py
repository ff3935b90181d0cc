"""The fake upstream itself: scripted replies, defaults, streams, cuts, stalls, disconnects."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.fixtures.fake_upstream import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    FakeUpstream,
    Reply,
    anthropic_text_stream,
    openai_error,
    openai_text_stream,
)


def _sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_default_answers_follow_protocol_and_stream_flag(fake_upstream: FakeUpstream) -> None:
    with httpx.Client(base_url=fake_upstream.url, timeout=10) as client:
        r = client.post(OPENAI_PATH, json={"model": "gpt-x", "messages": []})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "Hello from fake openai"
        assert r.json()["model"] == "gpt-x"

        r = client.post(OPENAI_PATH, json={"model": "gpt-x", "stream": True})
        assert r.headers["content-type"].startswith("text/event-stream")
        data = _sse_data(r.text)
        assert data[-1] == "[DONE]"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in map(json.loads, data[:-1]) if c["choices"])
        assert text == "Hello from fake openai"

        r = client.post(ANTHROPIC_PATH, json={"model": "claude-x", "stream": False})
        assert r.json()["content"][0]["text"] == "Hello from fake anthropic"
        r = client.post(ANTHROPIC_PATH, json={"model": "claude-x", "stream": True})
        assert "event: message_stop" in r.text
    assert fake_upstream.count() == 4
    assert fake_upstream.count(OPENAI_PATH) == 2
    assert fake_upstream.count("anthropic") == 2
    assert fake_upstream.completed == 4


def test_scripted_replies_in_order_and_requests_recorded(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        "openai",
        503,
        Reply(status=400, json=openai_error("bad temperature"), headers={"x-test": "yes"}),
    )
    with httpx.Client(base_url=fake_upstream.url, timeout=10) as client:
        r1 = client.post(OPENAI_PATH, json={"model": "m"}, headers={"Authorization": "Bearer k"})
        r2 = client.post(OPENAI_PATH, json={"model": "m"})
        r3 = client.post(OPENAI_PATH, json={"model": "m"})
    assert r1.status_code == 503 and "error" in r1.json()
    assert r2.status_code == 400 and r2.json()["error"]["message"] == "bad temperature"
    assert r2.headers["x-test"] == "yes"
    assert r3.status_code == 200
    first = fake_upstream.requests[0]
    assert first.headers["authorization"] == "Bearer k"
    assert first.json == {"model": "m"}
    assert fake_upstream.requests[0].at <= fake_upstream.requests[1].at


def test_set_default_and_reset(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(ANTHROPIC_PATH, 500)
    with httpx.Client(base_url=fake_upstream.url, timeout=10) as client:
        assert client.post(ANTHROPIC_PATH, json={}).status_code == 500
        assert client.post(ANTHROPIC_PATH, json={}).status_code == 500
        fake_upstream.reset()
        assert fake_upstream.count() == 0
        assert client.post(ANTHROPIC_PATH, json={}).status_code == 200


def test_cut_after_ends_body_abruptly(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("openai", Reply(stream=openai_text_stream("one two three four five"), cut_after=3))
    received: list[str] = []
    with (
        httpx.Client(base_url=fake_upstream.url, timeout=10) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", OPENAI_PATH, json={"stream": True}) as r,
    ):
        for line in r.iter_lines():
            received.append(line)
    assert len([x for x in received if x.startswith("data:")]) == 3


async def test_stall_keeps_connection_open_and_disconnect_is_seen(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("anthropic", Reply(stream=anthropic_text_stream("a b c d e"), stall_after=3))
    async with (
        httpx.AsyncClient(base_url=fake_upstream.url, timeout=10) as client,
        client.stream("POST", ANTHROPIC_PATH, json={"stream": True}) as r,
    ):
        lines = r.aiter_lines()
        events = 0
        while events < 3:  # an event ends with its blank line
            line = await lines.__anext__()
            events += line == ""
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(0.5):
                await lines.__anext__()
    assert await fake_upstream.await_disconnects(1, timeout=5)
    assert fake_upstream.completed == 0


def test_raw_lines_sent_verbatim(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("openai", Reply(raw_lines=['data: {"a": 1}', "", "this is not sse", ""]))
    with httpx.Client(base_url=fake_upstream.url, timeout=10) as client:
        r = client.post(OPENAI_PATH, json={"stream": True})
    assert r.text == 'data: {"a": 1}\n\nthis is not sse\n\n'


def test_delay_before_headers_and_disconnect_during_delay(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script("openai", Reply(delay=30))
    with (
        httpx.Client(base_url=fake_upstream.url, timeout=httpx.Timeout(10, read=0.3)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post(OPENAI_PATH, json={})
    assert fake_upstream.wait_for_disconnects(1, timeout=5)


def test_factory_starts_independent_servers(fake_upstream: FakeUpstream, fake_upstream_factory) -> None:
    other = fake_upstream_factory()
    assert other.url != fake_upstream.url
    other.set_default("openai", 503)
    with httpx.Client(timeout=10) as client:
        assert client.post(other.url + OPENAI_PATH, json={}).status_code == 503
        assert client.post(fake_upstream.url + OPENAI_PATH, json={}).status_code == 200
    assert other.count() == 1 and fake_upstream.count() == 1
