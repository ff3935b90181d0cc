"""What an answer says about itself: which backend answered and why not another, the input tokens
up front, the priority it asked for, and the limits of the model it goes to."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.fake_upstream import ANTHROPIC_PATH, OPENAI_PATH, Reply, anthropic_text_stream
from tests.listener.helpers import HELLO, LONG, leave, post, sse_events, until

ANTHROPIC_HELLO = {"messages": HELLO, "max_tokens": 5}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_every_answer_names_its_backend_and_model(listener, path: str, stream: bool) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(path, json={"model": "tiny", "stream": stream, **ANTHROPIC_HELLO})
    assert r.status_code == 200
    assert r.headers["x-mlxwb-backend"] == "local/tiny-llama-mlx"
    assert "x-mlxwb-failover" not in r.headers


async def test_a_failover_says_what_failed_before(listener, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(status=503, json={"error": {"message": "down for\nrepairs"}}))
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert r.status_code == 200 and r.headers["x-mlxwb-backend"] == "anthropic/claude-fake"
    note = r.headers["x-mlxwb-failover"]
    assert note.startswith("openai unavailable: ") and "down for repairs" in note  # one line


async def test_message_start_carries_the_exact_input_tokens_of_a_local_model(listener) -> None:
    body = {"model": "tiny", "stream": True, "system": "Be brief.", **ANTHROPIC_HELLO}
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        counted = (await c.post("/v1/messages/count_tokens", json=body)).json()["input_tokens"]
        events = sse_events((await c.post("/v1/messages", json=body)).text)
    start = json.loads(events[0][1])
    assert events[0][0] == "message_start" and counted > 3
    assert start["message"]["usage"]["input_tokens"] == counted
    delta = json.loads(next(d for e, d in events if e == "message_delta"))
    assert delta["usage"]["input_tokens"] == counted


async def test_message_start_passes_an_anthropic_upstreams_input_tokens_through(listener, fake_upstream) -> None:
    fake_upstream.set_default(ANTHROPIC_PATH, Reply(stream=anthropic_text_stream("Hi there", usage=(4321, 2))))
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post("/v1/messages", json={"model": "claude-x", "stream": True, **ANTHROPIC_HELLO})
    start = json.loads(sse_events(r.text)[0][1])
    assert start["message"]["usage"]["input_tokens"] == 4321


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_max_tokens_beyond_the_model_is_a_400_naming_the_limit(listener, path: str) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(path, json={"model": "tiny", "messages": HELLO, "max_tokens": 10**30})
        assert r.status_code == 400
        assert "at most 511" in r.text and "512 tokens" in r.text and "tiny-llama-mlx" in r.text
        if path == "/v1/chat/completions":
            assert r.json()["error"]["param"] == "max_tokens"
        r = await c.post(path, json={"model": "tiny", "messages": HELLO, "max_tokens": 512})
        # Anthropic clients must send max_tokens and send their own model's maximum: the answer stops at
        # the local model's context instead (below a ceiling that only nonsense exceeds).
        assert r.status_code == (200 if path == "/v1/messages" else 400)


async def test_a_bad_priority_header_is_a_400_naming_it(listener) -> None:
    async with httpx.AsyncClient(base_url=listener.url, timeout=60) as c:
        r = await c.post(
            "/v1/chat/completions",
            headers={"x-mlxwb-priority": "urgent"},
            json={"model": "tiny", "messages": HELLO, "max_tokens": 2},
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-mlxwb-priority"
    assert "high, normal, low" in r.json()["error"]["message"]


async def test_priority_high_reaches_the_local_engine(one_slot) -> None:
    """With one place in the batch taken, a normal request waits and a high one goes in at once
    (the engine's overflow for high requests): only the header can have told it apart."""
    wb, listener = one_slot
    await wb.local.load("tiny-llama-mlx")
    first = post(listener, {"model": "tiny", "messages": HELLO, "stream": True, **LONG})
    assert await until(lambda: wb.local.snapshot().running == 1)
    normal = post(listener, {"model": "tiny", "messages": HELLO, "stream": True, **LONG})
    assert await until(lambda: wb.local.snapshot().queued == 1)

    urgent = post(listener, {"model": "tiny", "messages": HELLO, "stream": True, **LONG}, {"x-mlxwb-priority": "high"})
    try:
        assert await until(lambda: wb.local.snapshot().running == 2)
        assert wb.local.snapshot().queued == 1  # the normal one still waits
    finally:
        for client in (urgent, normal, first):
            await leave(client)
