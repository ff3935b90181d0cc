"""Relay a stream of encoded events to the client with as few writes as the stream allows.

Writing each event on its own costs one pass through the ASGI send chain and one socket write per
chunk, most of a relaying listener's CPU. Here one task reads the answer and encodes its events
into an outbox while another writes: when an upstream delivers several events at once, they are
encoded back to back and leave in one write; a lone event leaves at once (no waiting to batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio

# Past this many buffered bytes, the reader lets the writer run (it sends what is there) and, if
# the client does not keep up, waits for it: a slow client must not pile up a whole answer here.
FLUSH_BYTES = 16 * 1024
HIGH_WATER_BYTES = 256 * 1024


class Outbox:
    """Bytes waiting for the client: `put` by the reading task, `take` all at once by the writer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def put(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        self._ready.set()

    @property
    def full(self) -> bool:
        return self._size >= FLUSH_BYTES

    async def wait_room(self) -> None:
        """Give the writer its turn; wait while more than HIGH_WATER_BYTES are still unsent."""
        await asyncio.sleep(0)
        if self._size >= HIGH_WATER_BYTES:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self) -> bytes | None:
        """Everything buffered, as one piece; None once closed and empty."""
        while not self._parts:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts, self._size = [], 0
        self._room.set()
        return data


async def relay(fill: Callable[[Outbox], Coroutine[Any, Any, None]]) -> AsyncIterator[bytes]:
    """Yield what `fill` puts in its outbox, batched; `fill` runs in a task of its own, is cancelled
    if the consumer stops early, and its exception (if any) is raised here."""
    outbox = Outbox()

    async def run() -> None:
        try:
            await fill(outbox)
        finally:
            outbox.close()

    task = asyncio.ensure_future(run())
    try:
        while (data := await outbox.take()) is not None:
            yield data
        await task
    finally:
        if not task.done():
            task.cancel()
            # Shielded: under a cancelled anyio scope (a client gone) every await would raise at once.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
