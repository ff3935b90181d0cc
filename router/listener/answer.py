"""Route a parsed request and answer it: one JSON body, or server-sent events.

Every answer says who answered (`x-mlxwb-backend: <backend>/<model>`) and, when earlier steps of
the chain failed, why (`x-mlxwb-failover`). A client that goes away, or a listener that stops,
ends the routed request at once (sessions.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from engine.local.scheduler import PRIORITIES
from engine.types import CancelledError, ChatRequest, Chunk, EngineError, RejectedError, collect
from router.listener.errors import CLIENT_CLOSED, error_response
from router.listener.outbox import Outbox, relay
from router.listener.sessions import SHUTDOWN, ListenerClosing, Session, Sessions, ended_if_client_leaves
from router.listener.wires import Event, EventEncoder, Wire
from router.router import RouteStream
from router.workbench import Workbench

PRIORITY_HEADER = "x-mlxwb-priority"


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def header_text(text: str, limit: int = 500) -> str:
    """One line of printable ASCII: a header value cannot hold line breaks or other bytes."""
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")[:limit]


def answer_headers(stream: RouteStream) -> dict[str, str]:
    headers = {"x-mlxwb-backend": header_text(stream.answered_by)} if stream.answered_by else {}
    note = stream.failover_note()
    if note:
        headers["x-mlxwb-failover"] = header_text(note)
    return headers


# Anthropic's max_tokens is mandatory and agents send their own model's maximum (Claude Code: 128000)
# to every model; below this ceiling the local engine stops at the context instead of refusing.
ANTHROPIC_CLAMP_CEILING = 1 << 20


async def check_max_tokens(wb: Workbench, req: ChatRequest, stream: RouteStream, protocol: str) -> None:
    """400 naming the limit when the local model the request goes to first cannot answer that long."""
    step = next((s for s in stream.explanation.chain if not s.skipped), None)
    if req.max_tokens is None or step is None or step.backend != "local":
        return
    if protocol == "anthropic" and req.max_tokens <= ANTHROPIC_CLAMP_CEILING:
        return
    try:
        await wb.local.aresolve(step.model)  # a first look at the model folders runs off the loop
    except EngineError:
        return  # an unknown model: the route says so in its own words
    limits = wb.local.limits(step.model)
    if limits is not None and req.max_tokens > limits.max_output_tokens:
        raise RejectedError(
            f"max_tokens: {req.max_tokens} is more than {limits.model} can produce: its context holds "
            f"{limits.context_length} tokens of prompt and answer together, so at most {limits.max_output_tokens}",
            status=400,
        )


def priority_of(request: Request) -> str:
    """`x-mlxwb-priority: high|normal|low`: the request's place in the local engine's queue."""
    value = request.headers.get(PRIORITY_HEADER, "normal").strip().lower()
    if value not in PRIORITIES:
        raise RejectedError(f"{PRIORITY_HEADER}: must be one of {', '.join(PRIORITIES)}, not {value!r}", status=400)
    return value


async def answer(request: Request, wb: Workbench, req: ChatRequest, wire: Wire) -> Response:
    sessions: Sessions = request.app.state.sessions
    try:
        req.priority = priority_of(request)
        stream = wb.router.route(req, front_end="listener", protocol=wire.name)
    except EngineError as exc:
        return error_response(exc, wire.name)
    streaming = False
    try:
        await check_max_tokens(wb, req, stream, wire.name)
        session = sessions.open(stream)
    except EngineError as exc:
        await stream.aclose()
        return error_response(exc, wire.name)
    try:
        async with ended_if_client_leaves(request.receive, session):
            first = await anext(stream, None)
            if first is not None and first.error is not None:
                raise first.error
            if session.ended_by is not None:
                raise CancelledError("the request was closed")
            if req.stream:
                streaming = True
                encoder = wire.events(req, stream.request_id)
                events = _events(session, sessions, first, encoder)
                return EventSourceResponse(events, headers=answer_headers(stream), sep="\n", ping=15)
            result = await collect(_rest(stream, first))
            if session.ended_by is not None:
                raise CancelledError("the request was closed")
        return OrjsonResponse(wire.render(result, req, stream.request_id), headers=answer_headers(stream))
    except CancelledError:
        if session.ended_by == SHUTDOWN:
            return error_response(ListenerClosing(), wire.name)
        return Response(status_code=CLIENT_CLOSED)
    except EngineError as exc:
        return error_response(exc, wire.name, headers=answer_headers(stream))
    finally:
        if not streaming:
            await sessions.close(session)


async def _rest(stream: RouteStream, first: Chunk | None) -> AsyncIterator[Chunk]:
    if first is not None:
        yield first
    async for chunk in stream:
        yield chunk


def _sse(events: list[Event]) -> bytes:
    """The events of one chunk as one write: `event:` line (Anthropic) and one `data:` line each."""
    out = bytearray()
    for name, payload in events:
        if name is not None:
            out += b"event: " + name.encode() + b"\n"
        data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        out += b"data: " + data + b"\n\n"
    return bytes(out)


async def _events(
    session: Session, sessions: Sessions, first: Chunk | None, encoder: EventEncoder
) -> AsyncIterator[bytes]:
    try:
        lead, rest = await _first_words(session, first, encoder)
        if lead:
            yield lead

        async def fill(outbox: Outbox) -> None:
            await _encode_rest(session, rest, encoder, outbox)

        async for data in relay(fill):
            yield data
    finally:
        # Also reached when the client disconnects and sse-starlette cancels this generator: the
        # shield lets the close run to its end (it cancels the attempt in flight at once).
        with anyio.CancelScope(shield=True):
            await sessions.close(session)


async def _first_words(session: Session, first: Chunk | None, encoder: EventEncoder) -> tuple[bytes, Chunk | None]:
    """The answer up to its first words (or its end), encoded right here to leave in one write:
    the relay's task hops and batching start after them (0.1 ms less to the first token). Also
    returns an error chunk met on the way, for the relay to report."""
    lead = bytearray()
    chunk = first
    try:
        while chunk is not None:
            if chunk.error is not None:
                return bytes(lead), chunk
            events = encoder.encode(chunk)
            if events:
                lead += _sse(events)
            if chunk.text or chunk.tool_calls or chunk.thinking or chunk.finish_reason:
                break
            chunk = await anext(session.stream, None)  # e.g. after OpenAI's role chunk
    except CancelledError:
        pass  # our own aclose() interrupted the wait: the relay says why (ended_by)
    return bytes(lead), None


async def _encode_rest(session: Session, first: Chunk | None, encoder: EventEncoder, outbox: Outbox) -> None:
    """The answer's events into the outbox, down to its final event (or its error event)."""
    try:
        async for chunk in _rest(session.stream, first):
            if chunk.error is not None:
                outbox.put(_sse(encoder.fail(chunk.error)))
                return
            events = encoder.encode(chunk)
            if events:
                outbox.put(_sse(events))
                if outbox.full:
                    await outbox.wait_room()
    except CancelledError:
        pass  # our own aclose() interrupted the wait for the next chunk: ended_by says why
    if session.ended_by == SHUTDOWN:
        outbox.put(_sse(encoder.fail(ListenerClosing())))
    elif session.ended_by is None:
        outbox.put(_sse(encoder.finish()))
