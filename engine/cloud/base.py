"""The cloud backend base: one httpx client with retries and one circuit breaker per backend.

Request life (`CloudBackend.stream`):

1. The breaker admits the call or it fails fast with UnavailableError (attempts=0), without
   touching the network (see breaker.py for the half-open single probe and the outcome policy).
2. POST through `RetryTransport` wrapping a counting transport wrapping `AsyncHTTPTransport`.
   Retried: connect errors (nothing reached the upstream) and the statuses 429/500/502/503/504
   (+529 for Anthropic), with exponential backoff and jitter, honouring Retry-After. Never
   retried: other statuses (400/401/403/404/422...), a request whose answer did not come in time
   (the upstream may be working on it, and billing it), anything after the headers arrived.
3. The first-token deadline (per backend, default 15 s) bounds everything before the first
   chunk: connects, retries, backoff waits, the response headers and the stream up to its first
   token. A wait (Retry-After or backoff) that would end after it gives up at once, and so does
   the deadline itself: the router then tries its next step. The upstream is always asked to
   stream, so a long answer to a non-streaming request is not mistaken for a dead upstream.
   Then only a stall detector: idle = the longest silence between two body reads once the first
   token has arrived (before it, the deadline alone decides), enforced around each body read
   by one timer per stream (deadlines.py; httpx's read timeout cannot tell headers from body).
   A healthy answer is never cut, however long it runs: the total cap (the whole request,
   checked at every read, no timeout context spans a `yield`) is off unless the backend's
   settings set `total_timeout`.
   Connect = each TCP/TLS connect (httpx).
4. The whole consumption of the stream runs inside the breaker's guard: a stream counts as a
   success only when it completed.

Errors leave as engine.types errors carrying backend, status and attempts. The API key lives only
in the backend's private attribute and the request headers; every message is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from engine.cloud import KINDS, CloudKind
from engine.cloud.breaker import BackendBreaker, BreakerOpen, BreakerStates, is_cancellation
from engine.cloud.deadlines import Bounds, StreamTimeout, timed
from engine.types import (
    BackendSnapshot,
    BreakerEvent,
    ChatRequest,
    ChatResult,
    Chunk,
    EngineError,
    ModelNotFoundError,
    RejectedError,
    ToolCallDelta,
    UnavailableError,
    percentile,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Client errors that must never be retried nor count against the breaker.
CLIENT_ERROR_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 415, 422})
_ATTEMPTS_KEY = "mlxwb.attempts"
# A callable given the attempt number (2, 3...) when a retry is sent: the router's status line.
_RETRY_KEY = "mlxwb.on_retry"
_LATENCY_WINDOW = 100
_MAX_ERROR_BODY = 64 * 1024
# After the answer's last event: how long and how much of the rest to read for connection reuse.
_DRAIN_S = 1.0
_DRAIN_READS = 16
# How often idle pooled connections are checked for an upstream that closed them.
_SWEEP_S = 1.0


@dataclass
class CloudConfig:
    """How to reach one cloud backend. Never holds the API key (that comes from router/secrets)."""

    name: str
    kind: CloudKind
    base_url: str
    retries: int = 2
    backoff_factor: float = 0.5
    max_backoff_wait: float = 30.0
    connect_timeout: float = 3.0
    deadline: float = 15.0
    idle_timeout: float = 60.0
    # Off by default: a cap on the whole answer would cut long healthy streams; the stall
    # detector (idle_timeout) is what ends a dead one.
    total_timeout: float | None = None
    fail_max: int = 5
    reset_timeout: float = 30.0
    # Values may be secrets too (e.g. an Azure "api-key"): kept out of the repr.
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)
    default_model: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: must start with http:// or https://, not {self.base_url!r}")
        if self.retries < 0:
            raise ValueError("retries: must be 0 or more")
        if self.fail_max < 1:
            raise ValueError("fail_max: must be at least 1")
        for name in ("connect_timeout", "deadline", "idle_timeout", "max_backoff_wait"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise ValueError("total_timeout: must be positive (or unset: no cap on the whole answer)")
        if self.backoff_factor < 0 or self.reset_timeout < 0:
            raise ValueError("backoff_factor and reset_timeout: must not be negative")


class _WaitBeyondDeadline(Exception):
    """The upstream asked for a wait (Retry-After, or our backoff) that ends after the deadline."""

    def __init__(self, status: int | None, wait: float, left: float) -> None:
        super().__init__(status, wait, left)
        self.status, self.wait, self.left = status, wait, left


def _retry_policy(cfg: CloudConfig, statuses: frozenset[int]) -> Any:
    import httpx
    from httpx_retries import Retry

    class DeadlineRetry(Retry):
        """httpx-retries' policy, bounded by one request's deadline: a wait that would end after it
        raises instead of sleeping (the next step of the chain is better than a late answer)."""

        deadline = math.inf

        def increment(self) -> DeadlineRetry:
            new = self.for_deadline(self.deadline)
            new.attempts_made = self.attempts_made + 1
            return new

        def for_deadline(self, deadline: float) -> DeadlineRetry:
            new = copy.copy(self)
            new.deadline = deadline
            return new

        def asked_wait(self, response: httpx.Response | Exception) -> float:
            retry_after = response.headers.get("Retry-After", "") if isinstance(response, httpx.Response) else ""
            if retry_after.strip():
                try:
                    # Compared uncapped: a retry before the upstream's own date would be refused again.
                    return self.parse_retry_after(retry_after)
                except ValueError:
                    log.debug("ignoring a malformed Retry-After: %r", retry_after)
            return self.backoff_strategy() if self.attempts_made > 0 else 0.0

        async def asleep(self, response: httpx.Response | Exception) -> None:
            wait = self.asked_wait(response)
            left = self.deadline - asyncio.get_running_loop().time()
            if wait >= left:
                status = response.status_code if isinstance(response, httpx.Response) else None
                raise _WaitBeyondDeadline(status, wait, left)
            wait = min(wait, self.max_backoff_wait)
            await asyncio.sleep(wait)
            self.elapsed_sleep += wait

    return DeadlineRetry(
        total=cfg.retries,
        allowed_methods=Retry.RETRYABLE_METHODS | {"POST"},
        status_forcelist=statuses,
        # Only errors where the upstream cannot have received the request: a POST that met a read
        # timeout or a dropped connection may be running (and billed) upstream already.
        retry_on_exceptions=[httpx.ConnectError, httpx.ConnectTimeout],
        backoff_factor=cfg.backoff_factor,
        backoff_jitter=0.5,
        respect_retry_after_header=True,
        max_backoff_wait=cfg.max_backoff_wait,
    )


def _make_transport(retry: Any, inner: httpx.AsyncHTTPTransport) -> httpx.AsyncBaseTransport:
    import httpx
    from httpx_retries import RetryTransport

    class AttemptTransport(httpx.AsyncBaseTransport):
        """Counts every attempt actually made."""

        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self._inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            counter = request.extensions.get(_ATTEMPTS_KEY)
            if counter is not None:
                counter[0] += 1
                on_retry = request.extensions.get(_RETRY_KEY)
                if on_retry is not None and counter[0] > 1:
                    on_retry(counter[0])
            return await self._inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self._inner.aclose()

    return RetryTransport(transport=AttemptTransport(inner), retry=retry)


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)


class CloudBackend:
    """A `Backend` (engine.types) talking to one cloud API. Subclasses supply the wire format."""

    kind: str
    # Statuses retried for this API on top of RETRY_STATUSES.
    extra_retry_statuses: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, cfg: CloudConfig, api_key: str | None, breaker_states: BreakerStates | None = None) -> None:
        import httpx

        from engine.cloud.network import AsyncioBackend

        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        self.__api_key = api_key or ""
        self._breaker = BackendBreaker(cfg.name, cfg.fail_max, cfg.reset_timeout, breaker_states)
        self._stats = _Stats()
        self._retry = _retry_policy(cfg, RETRY_STATUSES | self.extra_retry_statuses)
        # As many idle connections kept as may be open: with httpx's 20, 64 concurrent listener
        # clients made the pool reconnect to the upstream all the time (177 connects in one bench run).
        self._http = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
        # httpx offers no parameter for httpcore's network backend; its pool takes one (network.py).
        pool = self._http._pool
        if not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpcore's connection pool changed: engine/cloud/network.py is not plugged in")
        pool._network_backend = AsyncioBackend()
        self._sweeper: asyncio.Task[None] | None = None
        self._url = httpx.URL(self._endpoint())  # parsed once: httpx would parse the string per request
        self._client = httpx.AsyncClient(
            transport=_make_transport(self._retry, self._http),
            # Everything but the connect is bounded here, by the deadlines (httpx's read timeout
            # cannot tell the wait for headers from a pause in the body).
            timeout=httpx.Timeout(connect=cfg.connect_timeout, read=None, write=None, pool=None),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, "
            f"base_url={self.cfg.base_url!r}, state={self._breaker.state!r})"
        )

    # ------------------------------------------------------------ hooks for the wire format

    def _endpoint(self) -> str:
        raise NotImplementedError

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def _request_body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _request_headers(self, request: ChatRequest) -> dict[str, str]:
        """Headers that depend on the request (a client's own protocol headers passed through)."""
        return {}

    def _parse_result(self, body: Any) -> ChatResult:
        raise NotImplementedError

    def _upstream_error(self, status: int, body: Any) -> str:
        raise NotImplementedError

    def _stream_decoder(self) -> _Decoder:
        raise NotImplementedError

    # ------------------------------------------------------------ breaker and health

    def add_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._breaker.add_listener(fn)

    def remove_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._breaker.remove_listener(fn)

    def reset_breaker(self) -> None:
        self._breaker.reset()

    def trip_breaker(self) -> None:
        self._breaker.trip()

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def snapshot(self) -> BackendSnapshot:
        b, s = self._breaker, self._stats
        state = b.state
        return BackendSnapshot(
            name=self.name,
            kind=self.kind,
            state=state,
            consecutive_failures=b.consecutive_failures,
            fail_max=b.fail_max,
            seconds_to_half_open=b.seconds_to_half_open(),
            last_error=b.last_error,
            last_error_at=b.last_error_at,
            requests=s.requests,
            errors=s.errors,
            latency_p50_s=percentile(s.latencies, 0.50),
            latency_p95_s=percentile(s.latencies, 0.95),
            latency_p99_s=percentile(s.latencies, 0.99),
            recent_latencies_s=list(s.latencies),
        )

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._client.aclose()

    def _watch_pool(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close kept-alive connections that the upstream closed, or that outlived keep-alive.
        httpcore notices only when it next needs a connection; until then such a socket sits in
        CLOSE-WAIT (for hours, on a backend nobody uses). Ends when no connection is left."""
        pool = self._http._pool  # httpx keeps httpcore's pool private; its connections API is public
        while True:
            await asyncio.sleep(_SWEEP_S)
            live = [c for c in pool.connections if not c.is_closed()]
            for conn in live:
                if conn.is_idle() and conn.has_expired():
                    await conn.aclose()
            if not live:
                return

    # ------------------------------------------------------------ errors

    def _scrub(self, text: str | None) -> str | None:
        if text is None or not self.__api_key:
            return text
        return text.replace(self.__api_key, "***")

    def _error(
        self,
        cls: type[EngineError],
        message: str,
        attempts: int,
        *,
        status: int | None = None,
        upstream_message: str | None = None,
    ) -> EngineError:
        return cls(
            self._scrub(message) or "",
            backend=self.name,
            status=status,
            upstream_message=self._scrub(upstream_message),
            attempts=attempts,
        )

    def _adopt(self, exc: EngineError, attempts: int) -> EngineError:
        """An engine error raised by a decoder: make sure it names us and holds no key."""
        exc.backend = exc.backend or self.name
        exc.attempts = exc.attempts if exc.attempts is not None else attempts
        exc.message = self._scrub(exc.message) or ""
        exc.upstream_message = self._scrub(exc.upstream_message)
        exc.args = (exc.message,)
        return exc

    def _status_error(self, status: int, raw: bytes, attempts: int) -> EngineError:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        try:
            upstream = self._upstream_error(status, body)
        except Exception as exc:  # a parser must not hide the status itself
            log.debug("could not parse the error body of %s: %r", self.name, exc)
            upstream = None
        upstream = upstream or (body if isinstance(body, str) and body.strip() else None)
        if upstream and len(upstream) > 500:
            upstream = upstream[:500] + "..."
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        message = f"upstream answered {status}{tries}" + (f": {upstream}" if upstream else "")
        if status == 404:
            cls: type[EngineError] = ModelNotFoundError
        elif 400 <= status < 500 and status not in (408, 429):
            cls = RejectedError
        else:
            cls = UnavailableError
        return self._error(cls, message, attempts, status=status, upstream_message=upstream)

    def _transport_error(self, exc: BaseException, attempts: int) -> EngineError:
        import httpx

        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, httpx.ConnectTimeout):
            what = f"cannot connect to {self.cfg.base_url}: no connection within {self.cfg.connect_timeout:g} s"
        elif isinstance(exc, httpx.ConnectError):
            what = f"cannot connect to {self.cfg.base_url}: {str(exc) or type(exc).__name__}"
        elif isinstance(exc, httpx.TimeoutException):
            what = f"timed out: {type(exc).__name__}"
        else:
            what = f"request failed: {type(exc).__name__}: {exc}"
        return self._error(UnavailableError, what + tries, attempts)

    # ------------------------------------------------------------ the request

    def _target(self, request: ChatRequest) -> ChatRequest:
        if self.cfg.default_model and request.model in ("", "default"):
            return replace(request, model=self.cfg.default_model)
        return request

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return self._stream(request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        request.validate()
        if self._client.is_closed:
            raise self._error(UnavailableError, "backend is closed", 0)
        attempts = [0]
        started = time.perf_counter()
        breaker = self._breaker
        try:
            with breaker.calling():
                self._stats.requests += 1
                first = True
                exchange = self._exchange(self._target(request), attempts)
                try:
                    try:
                        async for chunk in exchange:
                            if first:
                                self._stats.latencies.append(time.perf_counter() - started)
                                first = False
                            yield chunk
                    finally:
                        # Closed here, not whenever the garbage collector gets to it: an early
                        # aclose() by the caller must drop the upstream connection at once.
                        await exchange.aclose()
                except EngineError as exc:
                    self._stats.errors += 1
                    breaker.record_error(str(exc))
                    raise
                except BaseException as exc:
                    if not is_cancellation(exc):
                        # A bug, not the upstream: still a failed request, and it is reported.
                        self._stats.errors += 1
                        breaker.record_error(f"{type(exc).__name__}: {self._scrub(str(exc))}")
                    raise
        except BreakerOpen as exc:
            raise self._error(UnavailableError, exc.reason, 0) from None

    async def _exchange(self, request: ChatRequest, attempts: list[int]) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        total = self.cfg.total_timeout
        bounds = Bounds(first=now + self.cfg.deadline, total=math.inf if total is None else now + total)
        response = await self._send(request, attempts, bounds)
        try:
            if not 200 <= response.status_code < 300:
                raw = await self._read_body(response, bounds, attempts, limit=_MAX_ERROR_BODY)
                raise self._status_error(response.status_code, raw, attempts[0])
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                chunks = self._read_stream(response, request, bounds, attempts)
                try:
                    async for chunk in chunks:
                        yield chunk
                finally:
                    await chunks.aclose()
            else:
                # An upstream that ignored "stream": true answers with the whole result at once.
                raw = await self._read_body(response, bounds, attempts)
                for chunk in self._result_chunks(raw, request, attempts):
                    yield chunk
        finally:
            # Closing an unfinished response drops the connection: the upstream stops at once.
            await _finish_off(response.aclose())
            self._watch_pool()

    def _on_retry(self, request: ChatRequest) -> Callable[[int], None] | None:
        """Says "openai: retry 1/2" to the router's status callback, when the request carries one."""
        on_status = request.metadata.get("on_status")
        if not callable(on_status):
            return None
        return lambda attempt: on_status(f"{self.name}: retry {attempt - 1}/{self.cfg.retries}")

    async def _send(self, request: ChatRequest, attempts: list[int], bounds: Bounds) -> httpx.Response:
        """POST (retried by the transport) until the response headers, within the first-token deadline."""
        import httpx

        headers = {
            **self.cfg.extra_headers,
            **self._request_headers(request),
            **self._auth_headers(self.__api_key),
            "accept": "text/event-stream",
            "content-type": "application/json",
        }
        deadline = min(bounds.first, bounds.total)
        http_request = self._client.build_request(
            "POST",
            self._url,
            content=_json_bytes(self._request_body(replace(request, stream=True))),
            headers=headers,
            extensions={
                _ATTEMPTS_KEY: attempts,
                "retry": self._retry.for_deadline(deadline),
                _RETRY_KEY: self._on_retry(request),
            },
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await self._client.send(http_request, stream=True)
        except TimeoutError:
            raise self._timeout_error(StreamTimeout(bounds.next(math.inf)[1]), attempts[0]) from None
        except _WaitBeyondDeadline as exc:
            raise self._error(
                UnavailableError,
                (
                    f"upstream answered {exc.status} and asked to wait {exc.wait:g} s"
                    if exc.status
                    else f"the next retry would come after {exc.wait:.1f} s"
                )
                + f", past the first-token deadline ({max(exc.left, 0.0):.1f} s left)",
                attempts[0],
                status=exc.status,
            ) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, attempts[0]) from exc

    async def _read_body(
        self, response: httpx.Response, bounds: Bounds, attempts: list[int], limit: int | None = None
    ) -> bytes:
        import httpx

        parts: list[bytes] = []
        size = 0
        try:
            async for part in timed(response.aiter_bytes(), bounds, self.cfg.idle_timeout):
                parts.append(part)
                size += len(part)
                if limit is not None and size >= limit:
                    break
        except (StreamTimeout, httpx.HTTPError) as exc:
            raise self._read_error(exc, attempts[0], "response body interrupted") from exc
        return b"".join(parts)

    def _read_error(self, exc: Exception, attempts: int, what: str) -> EngineError:
        """A body read that failed: one of the request's bounds passed, or the connection broke."""
        if isinstance(exc, StreamTimeout):
            return self._timeout_error(exc, attempts)
        return self._error(UnavailableError, f"{what}: {type(exc).__name__}: {exc}", attempts)

    def _timeout_error(self, exc: StreamTimeout, attempts: int) -> EngineError:
        if exc.which == "first":
            text = f"no first token within the deadline ({self.cfg.deadline:g} s)"
        elif exc.which == "idle":
            text = f"stream stalled: nothing received for {self.cfg.idle_timeout:g} s (idle timeout)"
        else:
            text = f"no complete answer within the total timeout ({self.cfg.total_timeout or 0:g} s)"
        return self._error(UnavailableError, text, attempts)

    async def _read_stream(
        self, response: httpx.Response, request: ChatRequest, bounds: Bounds, attempts: list[int]
    ) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks, parsed a network read at a time: every event that a read completes
        is decoded at once, and only reads (not lines) pass through the deadline timer."""
        from engine.protocol.sse import SSEFormatError, SSEParser

        decoder = self._stream_decoder()
        parser = SSEParser()
        reads = timed(response.aiter_bytes(), bounds, self.cfg.idle_timeout)
        model = request.model
        try:
            while True:
                part = await self._next_read(reads, attempts)
                try:
                    for event in parser.feed(part) if part is not None else parser.close():
                        chunks, model, done = self._decode(decoder, event.event, event.data, model, attempts)
                        for chunk in chunks:
                            chunk.backend = self.name
                            chunk.model = chunk.model or model
                            bounds.first = math.inf  # the first token is here: from now on, idle and total
                            yield chunk
                        if done:
                            await self._drain(reads)
                            return
                except SSEFormatError as exc:
                    # Not chained: the offending upstream text may echo anything (scrubbed above).
                    raise self._error(UnavailableError, f"malformed stream: {exc}", attempts[0]) from None
                if part is None:
                    raise self._error(UnavailableError, "stream ended before the answer was complete", attempts[0])
        finally:
            await reads.aclose()

    async def _next_read(self, reads: AsyncIterator[bytes], attempts: list[int]) -> bytes | None:
        """The next piece of the body as it came off the network; None at its end."""
        import httpx

        try:
            return await anext(reads)
        except StopAsyncIteration:
            return None
        except (StreamTimeout, httpx.HTTPError) as exc:
            raise self._read_error(exc, attempts[0], "stream interrupted") from exc

    def _decode(
        self, decoder: _Decoder, event: str | None, data: str, model: str, attempts: list[int]
    ) -> tuple[list[Chunk], str, bool]:
        try:
            return decoder.feed(event, data, model)
        except Exception as exc:
            raise self._upstream_fault(exc, attempts[0], "malformed stream data") from None

    def _upstream_fault(self, exc: Exception, attempts: int, what: str) -> EngineError:
        """What a decoder or parser raised: the upstream's fault whatever it is called (even a
        RejectedError), as an UnavailableError that names this backend and holds no key."""
        if isinstance(exc, UnavailableError):
            return self._adopt(exc, attempts)
        return self._error(UnavailableError, f"{what}: {type(exc).__name__}: {exc}", attempts)

    @staticmethod
    async def _drain(reads: AsyncIterator[bytes]) -> None:
        """Read the end of a finished stream (its last bytes are usually in flight) so that the
        connection goes back to the pool; an upstream that keeps talking loses its connection."""
        try:
            async with asyncio.timeout(_DRAIN_S):
                for _ in range(_DRAIN_READS):
                    await anext(reads)
        except (StopAsyncIteration, TimeoutError, StreamTimeout):
            return
        except Exception as exc:  # whatever follows the answer cannot spoil it
            log.debug("ignoring what followed the end of a stream: %r", exc)

    def _result_chunks(self, raw: bytes, request: ChatRequest, attempts: list[int]) -> list[Chunk]:
        try:
            body = json.loads(raw)
            result = self._parse_result(body)
        except Exception as exc:
            raise self._upstream_fault(exc, attempts[0], "malformed response") from None
        model = result.model or (body.get("model") if isinstance(body, dict) else None) or request.model
        deltas = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(result.tool_calls)]
        return [
            Chunk(text=result.text, tool_calls=deltas, thinking=result.thinking, backend=self.name, model=model),
            Chunk(finish_reason=result.finish_reason or "stop", usage=result.usage, backend=self.name, model=model),
        ]


def _json_bytes(body: dict[str, Any]) -> bytes:
    """The request body as JSON: orjson, since an agent's request with its tool schemas is tens of
    kB, encoded on the event loop before the first byte; json for what orjson refuses (an integer
    beyond 64 bits), so that the upstream still gets to judge it."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def _finish_off(cleanup: Awaitable[None]) -> None:
    """Await a cleanup to its end even if this task is cancelled meanwhile (an anyio cancel scope
    re-raises at every await): an interrupted close would leave the upstream request running.
    The cleanup goes on in its own task; the cancellation still reaches the caller."""
    await asyncio.shield(asyncio.ensure_future(cleanup))


class _Decoder:
    """Adapts a protocol stream decoder to one SSE event: (chunks, upstream model, finished)."""

    def feed(self, event: str | None, data: str, model: str) -> tuple[list[Chunk], str, bool]:
        raise NotImplementedError
