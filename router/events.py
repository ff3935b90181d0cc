"""In-process pub/sub for the TUI and the listener. Publishing never blocks and never raises:
a slow subscriber loses its oldest events (and is told how many), routing goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.types import BreakerEvent

log = logging.getLogger(__name__)


@dataclass
class RequestStarted:
    request_id: str
    model: str
    front_end: str
    protocol: str
    at: float = field(default_factory=time.time)


@dataclass
class RequestProgress:
    """At most every 0.25 s while an answer streams. Chunks, not tokens: a backend says how many
    tokens it produced only at the end (RequestFinished.record.tokens_out)."""

    request_id: str
    backend: str
    chunks: int
    chars: int
    at: float = field(default_factory=time.time)


@dataclass
class RequestStatus:
    """What a request waits on now, in words for a person ("asking openai/gpt-4o", "loading demo 45 %")."""

    request_id: str
    backend: str | None
    text: str
    at: float = field(default_factory=time.time)


@dataclass
class RequestFinished:
    request_id: str
    status: str  # ok | client_gone | upstream_error | rejected | unavailable | error (router/router.py)
    record: Any  # router.store.RequestRecord
    at: float = field(default_factory=time.time)


@dataclass
class BreakerChanged:
    """A backend's breaker moved (closed / open / half-open), in this process or in another one on
    the same database (seen at this process's next look at that breaker)."""

    event: BreakerEvent


@dataclass
class CloudRoutingChanged:
    """The cloud routing switch as this process now follows it: published once when the router
    first reads the settings, then on every change (made here or by another process)."""

    enabled: bool
    at: float = field(default_factory=time.time)


@dataclass
class RulesChanged:
    at: float = field(default_factory=time.time)


@dataclass
class BackendsChanged:
    at: float = field(default_factory=time.time)


class Subscription:
    """An async iterator over events; bounded, dropping the oldest when full."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.loop = asyncio.get_running_loop()
        self.dropped = 0
        self.closed = False

    def _put(self, event: Any) -> None:
        if self.closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def get(self) -> Any:
        """The next event (bound the wait with `asyncio.timeout`)."""
        return await self._queue.get()

    def close(self) -> None:
        self.closed = True
        self._bus._subs.discard(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._callbacks: list[Callable[[Any], None]] = []

    def subscribe(self, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def add_callback(self, fn: Callable[[Any], None]) -> Callable[[], None]:
        self._callbacks.append(fn)
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    def publish(self, event: Any) -> None:
        for fn in list(self._callbacks):
            try:
                fn(event)
            except Exception:  # a broken subscriber must not break routing
                log.exception("event callback %r failed", fn)
        for sub in list(self._subs):
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub.loop:
                sub._put(event)
            elif not sub.loop.is_closed():
                sub.loop.call_soon_threadsafe(sub._put, event)
