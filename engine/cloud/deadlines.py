"""The bounds of one cloud request's reads: the first-token deadline, the stall detector, a total cap.

One timer per stream, not one per read: `asyncio.timeout` around every read schedules and cancels
a timer handle per chunk, a measurable share of a relaying listener's CPU. Here a read only notes
when it started; the single timer, when it fires, checks whether the read in progress is past its
bound and, if so, cancels the task waiting on it (the way asyncio.timeout does), else re-arms.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

Which = Literal["first", "idle", "total"]


class StreamTimeout(Exception):
    def __init__(self, which: Which) -> None:
        super().__init__(which)
        self.which = which


@dataclass
class Bounds:
    """The absolute loop times one request must keep to; `first` is dropped at the first chunk."""

    first: float
    total: float

    def next(self, idle_at: float) -> tuple[float, Which]:
        if self.first != math.inf:
            # Before the first token only the deadline (and a total cap) count: a model may think
            # a long time before it says anything. The stall detector starts with the answer.
            return (self.first, "first") if self.first <= self.total else (self.total, "total")
        return (idle_at, "idle") if idle_at < self.total else (self.total, "total")


class Watchdog:
    """Cancels the task waiting on a read that has passed its bound; `expired` says which bound."""

    def __init__(self, bounds: Bounds, idle: float, loop: asyncio.AbstractEventLoop) -> None:
        self._bounds, self._idle, self._loop = bounds, idle, loop
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires
        self._task: asyncio.Task[Any] | None = None  # the task waiting on a read; None between reads
        self._since = 0.0  # when that read started
        self._cancelling = 0
        self.expired: Which | None = None

    def reading(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self._since = self._loop.time()
        until, _ = self._bounds.next(self._since + self._idle)
        # Bounds only move later between reads, except when the first token drops the deadline
        # for the (possibly shorter) idle bound: only then, or with no timer yet, arm it anew.
        if until < self._at:
            self._arm(until)

    def idle(self) -> None:
        self._task = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = math.inf

    def _arm(self, until: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = until
        self._handle = self._loop.call_at(until, self._fire) if until != math.inf else None

    def _fire(self) -> None:
        self._handle, self._at = None, math.inf
        task = self._task
        if task is None or self.expired is not None:
            return  # between reads: the next read arms the timer again
        until, which = self._bounds.next(self._since + self._idle)
        if self._loop.time() < until:
            self._arm(until)
            return
        self.expired = which
        self._cancelling = task.cancelling()
        task.cancel()

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """In a read's CancelledError handler: whether the cancellation was ours alone (consumed)."""
        return self.expired is not None and task.uncancel() <= self._cancelling


async def timed(source: AsyncIterator[Any], bounds: Bounds, idle: float) -> AsyncGenerator[Any, None]:
    """Re-yield `source`, each wait bounded by `idle` and the request's deadlines (StreamTimeout)."""
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(bounds, idle, loop)
    iterator = aiter(source)
    try:
        while True:
            task = asyncio.current_task()
            assert task is not None
            watchdog.reading(task)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watchdog.timed_out(task):
                    raise StreamTimeout(watchdog.expired or "idle") from None
                raise
            finally:
                watchdog.idle()
            yield item
    finally:
        watchdog.close()
        await aclose(iterator)


async def aclose(iterator: object) -> None:
    """Close an async iterator if it can be closed (a generator; a plain iterator has no aclose)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
