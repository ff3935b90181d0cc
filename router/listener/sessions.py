"""The routed requests in flight, so that a client that goes away, or a listener that stops,
ends its request at once: RouteStream.aclose() cancels the attempt in flight (the upstream
request is closed, the local generation leaves its batch), from any task, at any time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive

from engine.types import UnavailableError
from router.router import RouteStream

CLIENT_GONE, SHUTDOWN = "client gone", "shutdown"


class ListenerClosing(UnavailableError):
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the listener is shutting down", status=503)


class Session:
    """One routed request; `ended_by` says who closed it early, if anyone did."""

    def __init__(self, stream: RouteStream) -> None:
        self.stream = stream
        self.ended_by: str | None = None

    async def end(self, reason: str) -> None:
        if self.ended_by is None:
            self.ended_by = reason
        await self.stream.aclose()


class Sessions:
    def __init__(self) -> None:
        self._open: set[Session] = set()
        self.closing = False

    def open(self, stream: RouteStream) -> Session:
        if self.closing:
            raise ListenerClosing()
        session = Session(stream)
        self._open.add(session)
        return session

    async def close(self, session: Session) -> None:
        self._open.discard(session)
        await session.stream.aclose()

    async def close_all(self) -> None:
        """The listener stops: every open request ends now (streams with a final error event)."""
        self.closing = True
        sessions = list(self._open)
        await asyncio.gather(*(s.end(SHUTDOWN) for s in sessions), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._open)


@contextlib.asynccontextmanager
async def ended_if_client_leaves(receive: Receive, session: Session) -> AsyncIterator[None]:
    """While the body runs (waiting for the first chunk, or for a whole answer), a disconnect
    ends the session. Once a stream is handed to sse-starlette, its own listener takes over."""
    watcher = asyncio.ensure_future(_end_on_disconnect(receive, session))
    try:
        yield
    finally:
        watcher.cancel()


async def _end_on_disconnect(receive: Receive, session: Session) -> None:
    # The body has been read: what arrives now is the disconnect (or a spurious wake-up).
    while (await receive())["type"] != "http.disconnect":
        pass
    await session.end(CLIENT_GONE)
