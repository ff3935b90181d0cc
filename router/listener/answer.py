"""Route a parsed request and answer it: one JSON body, or server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from engine.types import ChatRequest, Chunk, collect
from router.listener.wires import EventEncoder, Wire
from router.router import Router, RouteStream


async def open_stream(router: Router, req: ChatRequest, protocol: str) -> tuple[RouteStream, Chunk | None]:
    """Route and wait for the first chunk, so that failures before it get a proper status."""
    stream = router.route(req, front_end="listener", protocol=protocol)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    if first is not None and first.error is not None:
        await stream.aclose()
        raise first.error
    return stream, first


async def _rest(stream: RouteStream, first: Chunk | None) -> AsyncIterator[Chunk]:
    if first is not None:
        yield first
    async for chunk in stream:
        yield chunk


def _sse(name: str | None, payload: Any) -> ServerSentEvent:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return ServerSentEvent(data, event=name)


async def _events(stream: RouteStream, first: Chunk | None, encoder: EventEncoder) -> AsyncIterator[ServerSentEvent]:
    try:
        async for chunk in _rest(stream, first):
            if chunk.error is not None:
                for name, payload in encoder.fail(chunk.error):
                    yield _sse(name, payload)
                return
            for name, payload in encoder.encode(chunk):
                yield _sse(name, payload)
        for name, payload in encoder.finish():
            yield _sse(name, payload)
    finally:
        # Also reached when the client disconnects: sse-starlette cancels this generator.
        await stream.aclose()


async def answer(router: Router, req: ChatRequest, wire: Wire) -> Response:
    stream, first = await open_stream(router, req, wire.name)
    if req.stream:
        return EventSourceResponse(_events(stream, first, wire.events(req, stream.request_id)), sep="\n", ping=15)
    try:
        result = await collect(_rest(stream, first))
    finally:
        await stream.aclose()
    return JSONResponse(wire.render(result, req, stream.request_id))
