"""A client that goes away ends its request at once, streaming or not, before or after the first
chunk: the upstream request is closed (the fake upstream sees the disconnect) and the local
generation leaves the MLX thread (the engine's running and queued counts drop to 0)."""

from __future__ import annotations

import httpx
import pytest

from router.workbench import Workbench
from tests.fixtures.fake_upstream import OPENAI_PATH, Reply, openai_text_stream
from tests.listener.helpers import HELLO, LONG, leave, post, until


async def logged_status(wb: Workbench) -> str:
    assert await until(lambda: bool(wb.store.recent_requests(limit=1)))
    return wb.store.recent_requests(limit=1)[0].status


# ---------------------------------------------------------------- cloud: the upstream request is closed


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "whole"])
async def test_gone_before_the_first_chunk_closes_the_upstream_request(
    listener, workbench, fake_upstream, stream: bool
) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(delay=3600))
    client = post(listener, {"model": "gpt-4o", "messages": HELLO, "stream": stream})
    assert await until(lambda: fake_upstream.count(OPENAI_PATH) == 1)
    await leave(client)
    assert await fake_upstream.await_disconnects(1, timeout=10)
    assert await logged_status(workbench) == "client_gone"
    assert listener.open_requests == 0


async def test_gone_after_the_first_chunk_closes_the_upstream_request(listener, workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream("one two three four"), stall_after=2))
    async with (
        httpx.AsyncClient(base_url=listener.url, timeout=60) as c,
        c.stream("POST", "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO, "stream": True}) as r,
    ):
        async for line in r.aiter_lines():
            if '"one"' in line:
                break
    assert await fake_upstream.await_disconnects(1, timeout=10)
    assert await logged_status(workbench) == "client_gone"
    assert listener.open_requests == 0


# ---------------------------------------------------------------- local: the generation leaves the thread


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "whole"])
async def test_gone_while_generating_frees_the_local_slot(listener, workbench, stream: bool) -> None:
    await workbench.local.load("tiny-llama-mlx")
    client = post(listener, {"model": "tiny", "messages": HELLO, "stream": stream, **LONG})
    assert await until(lambda: workbench.local.snapshot().running == 1)
    await leave(client)
    assert await until(lambda: workbench.local.snapshot().running == 0)
    assert await logged_status(workbench) == "client_gone"


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "whole"])
async def test_gone_while_queued_leaves_the_queue(one_slot, stream: bool) -> None:
    wb, listener = one_slot
    await wb.local.load("tiny-llama-mlx")
    running = post(listener, {"model": "tiny", "messages": HELLO, "stream": True, **LONG})
    assert await until(lambda: wb.local.snapshot().running == 1)
    waiting = post(listener, {"model": "tiny", "messages": HELLO, "stream": stream, **LONG})
    assert await until(lambda: wb.local.snapshot().queued == 1)
    await leave(waiting)
    assert await until(lambda: wb.local.snapshot().queued == 0)
    assert wb.local.snapshot().running == 1  # the first answer goes on
    assert await logged_status(wb) == "client_gone"
    await leave(running)
    assert await until(lambda: wb.local.snapshot().running == 0)
