"""The outbox between the task that reads an answer and the one that writes it (router/listener/outbox.py)."""

from __future__ import annotations

import asyncio

import pytest

from engine.types import Chunk
from router.listener.outbox import HIGH_WATER_BYTES, Outbox, relay


async def _all(fill) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [data async for data in relay(fill)]


async def test_events_ready_together_leave_in_one_piece() -> None:
    async def fill(outbox: Outbox) -> None:
        for i in range(10):
            outbox.put(b"e%d;" % i)

    assert await _all(fill) == [b"".join(b"e%d;" % i for i in range(10))]


async def test_an_event_that_waits_for_its_source_leaves_on_its_own() -> None:
    async def fill(outbox: Outbox) -> None:
        for i in range(3):
            outbox.put(b"e%d;" % i)
            await asyncio.sleep(0.01)  # the upstream's pace: nothing more to batch

    assert await _all(fill) == [b"e0;", b"e1;", b"e2;"]


async def test_a_slow_client_holds_the_reader_at_the_high_water_mark() -> None:
    produced = 0

    async def fill(outbox: Outbox) -> None:
        nonlocal produced
        for _ in range(64):
            outbox.put(b"x" * 16 * 1024)
            produced += 1
            if outbox.full:
                await outbox.wait_room()

    stream = relay(fill)
    first = await anext(stream)
    await asyncio.sleep(0.05)  # the client takes its time; the reader must not run away
    buffered = (produced * 16 * 1024) - len(first)
    assert buffered <= HIGH_WATER_BYTES + 16 * 1024
    rest = [data async for data in stream]
    assert len(first) + sum(map(len, rest)) == 64 * 16 * 1024


async def test_the_reader_s_error_reaches_the_writer() -> None:
    async def fill(outbox: Outbox) -> None:
        outbox.put(b"a")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await _all(fill)


async def test_a_writer_that_stops_early_cancels_the_reader() -> None:
    cancelled = asyncio.Event()

    async def fill(outbox: Outbox) -> None:
        outbox.put(b"a")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = relay(fill)
    assert await anext(stream) == b"a"
    await stream.aclose()
    assert cancelled.is_set()


class _ReadyStream:
    """An answer whose chunks are all there at once, as when one upstream read holds them all."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self) -> _ReadyStream:
        return self

    async def __anext__(self) -> Chunk:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        pass


async def test_the_first_words_leave_at_once_and_what_follows_them_is_batched() -> None:
    from engine.types import ChatRequest, Message
    from router.listener.answer import _events
    from router.listener.sessions import Sessions
    from router.listener.wires import OPENAI

    req = ChatRequest(model="m", messages=[Message("user", "hi")], stream=True)
    first = Chunk(text="")  # a role chunk: nothing to say yet
    words = [Chunk(text=f"w{i} ") for i in range(20)] + [Chunk(finish_reason="stop")]
    sessions = Sessions()
    session = sessions.open(_ReadyStream(words))  # type: ignore[arg-type]
    pieces = [p async for p in _events(session, sessions, first, OPENAI.events(req, "id"))]
    # Not everything in one write after the whole answer was encoded: the first words go alone...
    assert b'"content":"w0 "' in pieces[0] and b"w1 " not in pieces[0]
    # ...and the rest, ready together, leaves together.
    assert len(pieces) == 2 and b"w19 " in pieces[1] and pieces[1].endswith(b"data: [DONE]\n\n")
