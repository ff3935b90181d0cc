"""Helpers shared by the listener tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from router.listener import Listener

HELLO = [{"role": "user", "content": "Hello"}]
# Long enough never to finish during a test: seed 3 at temperature 1 does not meet the EOS early.
LONG = {"max_tokens": 500, "temperature": 1.0, "seed": 3}


def sse_events(text: str) -> list[tuple[str | None, str]]:
    out, event, data = [], None, []
    for line in text.splitlines():
        if not line:
            if data:
                out.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return out


async def until(condition: Callable[[], bool], bound_s: float = 10.0) -> bool:
    """Poll `condition`; the bound only ends a failing test, it is not what is tested."""
    for _ in range(int(bound_s / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def post(listener: Listener, body: dict[str, Any], headers: dict[str, str] | None = None) -> asyncio.Task[None]:
    """A client request in its own task; cancelling the task closes its connection."""

    async def run() -> None:
        async with (
            httpx.AsyncClient(base_url=listener.url, timeout=60) as c,
            c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
        ):
            async for _ in r.aiter_bytes():
                pass

    return asyncio.create_task(run())


async def leave(client: asyncio.Task[None]) -> None:
    client.cancel()
    await asyncio.gather(client, return_exceptions=True)
