"""The single timer per stream (engine/cloud/deadlines.py): first-token deadline, stall detector,
total cap, and a cancellation from elsewhere that must stay a cancellation."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from engine.cloud.deadlines import Bounds, StreamTimeout, timed


async def _source(gaps: list[float]) -> AsyncIterator[int]:
    """Yields 0, 1, ... after waiting each gap in turn (math.inf: never)."""
    for i, gap in enumerate(gaps):
        if gap == math.inf:
            await asyncio.Event().wait()
        await asyncio.sleep(gap)
        yield i


def _bounds(first: float = math.inf, total: float = math.inf) -> Bounds:
    now = asyncio.get_running_loop().time()
    return Bounds(first=now + first, total=now + total)


async def _collect(source: AsyncIterator[int], bounds: Bounds, idle: float) -> tuple[list[int], str | None]:
    got: list[int] = []
    try:
        async for item in timed(source, bounds, idle):
            got.append(item)
            bounds.first = math.inf  # as the backend does at the first token
    except StreamTimeout as exc:
        return got, exc.which
    return got, None


async def test_a_stream_that_keeps_talking_outlasts_every_bound() -> None:
    # 12 gaps of 0.05 s: three times the deadline and the idle bound, never silent that long.
    got, which = await _collect(_source([0.05] * 12), _bounds(first=0.2), idle=0.2)
    assert (got, which) == (list(range(12)), None)


async def test_no_first_token_is_the_deadline_not_the_stall_detector() -> None:
    got, which = await _collect(_source([math.inf]), _bounds(first=0.2), idle=0.05)
    assert (got, which) == ([], "first")


async def test_a_stall_after_the_first_token_ends_at_the_idle_bound_not_the_deadline() -> None:
    # The timer is first armed for the (long) deadline; the first token must bring it forward.
    loop = asyncio.get_running_loop()
    started = loop.time()
    got, which = await _collect(_source([0.0, 0.0, math.inf]), _bounds(first=30.0), idle=0.2)
    assert (got, which) == ([0, 1], "idle")
    assert loop.time() - started < 15.0  # long before the deadline


async def test_the_total_cap_ends_a_slow_but_alive_stream() -> None:
    got, which = await _collect(_source([0.05] * 100), _bounds(first=1.0, total=0.3), idle=1.0)
    assert which == "total"
    assert 0 < len(got) < 100


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    bounds = _bounds(first=0.3)
    task = asyncio.ensure_future(_collect(_source([math.inf]), bounds, idle=0.3))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
