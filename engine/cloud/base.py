"""The cloud backend base: one httpx client with retries and one circuit breaker per backend.

Request life (`CloudBackend.stream`):

1. The breaker admits the call or it fails fast with UnavailableError (attempts=0), without
   touching the network (see breaker.py for the half-open single probe and the outcome policy).
2. POST through `RetryTransport(Retry(...))` wrapping a counting transport wrapping
   `AsyncHTTPTransport`. Retried: connect errors, timeouts and a dropped connection before the
   response headers, and statuses 429/500/502/503/504 (+529 for Anthropic), with exponential
   backoff and jitter, honouring Retry-After (capped by max_backoff_wait). Never retried:
   other statuses (400/401/403/404/422...) and anything after the headers arrived.
3. Timeouts: connect (httpx); first byte = per attempt, until the response headers (enforced in
   the counting transport so a timed-out attempt is retried); idle = between two body reads
   (enforced here around each read, httpx's read timeout cannot tell headers from body);
   total = the whole request, retries included, as one deadline checked at every await
   (no timeout context spans a `yield`).
4. The whole consumption of the stream runs inside the breaker's guard: a stream counts as a
   success only when it completed.

Errors leave as engine.types errors carrying backend, status and attempts. The API key lives only
in the backend's private attribute and the request headers; every message is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, ClassVar, Literal

from engine.cloud.breaker import BackendBreaker, BreakerOpen, is_cancellation
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
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CloudKind = Literal["openai", "anthropic", "openai-compatible"]
KINDS: tuple[str, ...] = ("openai", "anthropic", "openai-compatible")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Client errors that must never be retried nor count against the breaker.
CLIENT_ERROR_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 415, 422})
_ATTEMPTS_KEY = "mlxwb.attempts"
_LATENCY_WINDOW = 100
_MAX_ERROR_BODY = 64 * 1024


@dataclass
class CloudConfig:
    """How to reach one cloud backend. Never holds the API key (that comes from router/secrets)."""

    name: str
    kind: CloudKind
    base_url: str
    retries: int = 2
    backoff_factor: float = 0.5
    max_backoff_wait: float = 30.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
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
        for name in ("connect_timeout", "first_byte_timeout", "idle_timeout", "total_timeout", "max_backoff_wait"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")
        if self.backoff_factor < 0 or self.reset_timeout < 0:
            raise ValueError("backoff_factor and reset_timeout: must not be negative")


class _StreamTimeout(Exception):
    def __init__(self, which: Literal["idle", "total"]) -> None:
        super().__init__(which)
        self.which = which


def _make_transport(cfg: CloudConfig, statuses: frozenset[int]) -> "httpx.AsyncBaseTransport":
    import httpx
    from httpx_retries import Retry, RetryTransport

    class AttemptTransport(httpx.AsyncBaseTransport):
        """Counts every attempt actually made and bounds each one's wait for response headers."""

        def __init__(self, inner: httpx.AsyncBaseTransport, first_byte_timeout: float) -> None:
            self._inner = inner
            self._first_byte_timeout = first_byte_timeout

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            counter = request.extensions.get(_ATTEMPTS_KEY)
            if counter is not None:
                counter[0] += 1
            try:
                async with asyncio.timeout(self._first_byte_timeout):
                    return await self._inner.handle_async_request(request)
            except TimeoutError:
                # An httpx timeout, so that httpx-retries retries it like any read timeout.
                raise httpx.ReadTimeout(
                    f"no response headers within {self._first_byte_timeout:g} s", request=request
                ) from None

        async def aclose(self) -> None:
            await self._inner.aclose()

    retry = Retry(
        total=cfg.retries,
        allowed_methods=Retry.RETRYABLE_METHODS | {"POST"},
        status_forcelist=statuses,
        backoff_factor=cfg.backoff_factor,
        backoff_jitter=0.5,
        respect_retry_after_header=True,
        max_backoff_wait=cfg.max_backoff_wait,
    )
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
    return RetryTransport(transport=AttemptTransport(inner, cfg.first_byte_timeout), retry=retry)


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
        return ordered[rank - 1]


class CloudBackend:
    """A `Backend` (engine.types) talking to one cloud API. Subclasses supply the wire format."""

    kind: str
    # Statuses retried for this API on top of RETRY_STATUSES.
    extra_retry_statuses: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, cfg: CloudConfig, api_key: str | None) -> None:
        import httpx

        self.cfg = cfg
        self.name = cfg.name
        self.kind = cfg.kind
        self.__api_key = api_key or ""
        self._breaker = BackendBreaker(cfg.name, cfg.fail_max, cfg.reset_timeout)
        self._stats = _Stats()
        self._client = httpx.AsyncClient(
            transport=_make_transport(cfg, RETRY_STATUSES | self.extra_retry_statuses),
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout,
                # Body reads are bounded by the idle timeout here, headers by the first-byte one.
                read=None,
                write=cfg.first_byte_timeout,
                pool=cfg.first_byte_timeout,
            ),
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

    def _stream_decoder(self) -> "_Decoder":
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
            latency_p50_s=s.percentile(0.50),
            latency_p95_s=s.percentile(0.95),
            latency_p99_s=s.percentile(0.99),
            recent_latencies_s=list(s.latencies),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            what = f"cannot connect to {self.cfg.base_url}: {exc or type(exc).__name__}"
        elif isinstance(exc, httpx.ReadTimeout):
            what = f"no response within the first-byte timeout ({self.cfg.first_byte_timeout:g} s)"
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
                    async for chunk in exchange:
                        if first:
                            self._stats.latencies.append(time.perf_counter() - started)
                            first = False
                        yield chunk
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
                finally:
                    # Closed here, not whenever the garbage collector gets to it: an early
                    # aclose() by the caller must drop the upstream connection at once.
                    await exchange.aclose()
        except BreakerOpen as exc:
            raise self._error(UnavailableError, exc.reason, 0) from None

    async def _exchange(self, request: ChatRequest, attempts: list[int]) -> AsyncIterator[Chunk]:
        import httpx

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.total_timeout
        headers = {**self.cfg.extra_headers, **self._request_headers(request), **self._auth_headers(self.__api_key)}
        if request.stream:
            headers["accept"] = "text/event-stream"
        http_request = self._client.build_request(
            "POST",
            self._endpoint(),
            json=self._request_body(request),
            headers=headers,
            extensions={_ATTEMPTS_KEY: attempts},
        )
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._client.send(http_request, stream=True)
        except TimeoutError:
            raise self._error(
                UnavailableError, f"no answer within the total timeout ({self.cfg.total_timeout:g} s)", attempts[0]
            ) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, attempts[0]) from exc

        try:
            if not 200 <= response.status_code < 300:
                raw = await self._read_body(response, deadline, attempts, limit=_MAX_ERROR_BODY)
                raise self._status_error(response.status_code, raw, attempts[0])
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                chunks = self._read_stream(response, request, deadline, attempts)
                try:
                    async for chunk in chunks:
                        yield chunk
                finally:
                    await chunks.aclose()
            else:
                raw = await self._read_body(response, deadline, attempts)
                for chunk in self._result_chunks(raw, request, attempts):
                    yield chunk
        finally:
            # Closing an unfinished response drops the connection: the upstream stops at once.
            await response.aclose()

    async def _read_body(
        self, response: "httpx.Response", deadline: float, attempts: list[int], limit: int | None = None
    ) -> bytes:
        import httpx

        parts: list[bytes] = []
        size = 0
        try:
            async for part in self._timed(response.aiter_bytes(), deadline):
                parts.append(part)
                size += len(part)
                if limit is not None and size >= limit:
                    break
        except _StreamTimeout as exc:
            raise self._timeout_error(exc, attempts[0]) from None
        except httpx.HTTPError as exc:
            raise self._error(
                UnavailableError, f"response body interrupted: {type(exc).__name__}: {exc}", attempts[0]
            ) from exc
        return b"".join(parts)

    def _timeout_error(self, exc: _StreamTimeout, attempts: int) -> EngineError:
        if exc.which == "idle":
            text = f"stream stalled: nothing received for {self.cfg.idle_timeout:g} s (idle timeout)"
        else:
            text = f"no complete answer within the total timeout ({self.cfg.total_timeout:g} s)"
        return self._error(UnavailableError, text, attempts)

    async def _timed(self, source: AsyncIterator[Any], deadline: float) -> AsyncIterator[Any]:
        """Re-yield `source`, bounding each wait by the idle timeout and the overall deadline."""
        loop = asyncio.get_running_loop()
        iterator = aiter(source)
        try:
            while True:
                idle_at = loop.time() + self.cfg.idle_timeout
                try:
                    async with asyncio.timeout_at(min(idle_at, deadline)):
                        item = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise _StreamTimeout("idle" if idle_at < deadline else "total") from None
                yield item
        finally:
            await _aclose(iterator)

    async def _read_stream(
        self, response: "httpx.Response", request: ChatRequest, deadline: float, attempts: list[int]
    ) -> AsyncIterator[Chunk]:
        import httpx

        from engine.protocol.sse import SSEFormatError, aiter_sse

        decoder = self._stream_decoder()
        lines = self._timed(response.aiter_lines(), deadline)
        events = aiter_sse(lines)
        model = request.model
        try:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except _StreamTimeout as exc:
                    raise self._timeout_error(exc, attempts[0]) from None
                except SSEFormatError as exc:
                    # Not chained: the offending upstream text may echo anything (scrubbed above).
                    raise self._error(UnavailableError, f"malformed stream: {exc}", attempts[0]) from None
                except httpx.HTTPError as exc:
                    raise self._error(
                        UnavailableError, f"stream interrupted: {type(exc).__name__}: {exc}", attempts[0]
                    ) from exc
                try:
                    chunks, model, done = decoder.feed(event.event, event.data, model)
                except UnavailableError as exc:
                    raise self._adopt(exc, attempts[0])
                except Exception as exc:
                    raise self._error(
                        UnavailableError, f"malformed stream data: {type(exc).__name__}: {exc}", attempts[0]
                    ) from None
                for chunk in chunks:
                    chunk.backend = self.name
                    chunk.model = chunk.model or model
                    yield chunk
                if done:
                    return
            raise self._error(UnavailableError, "stream ended before the answer was complete", attempts[0])
        finally:
            await _aclose(events)
            await lines.aclose()

    def _result_chunks(self, raw: bytes, request: ChatRequest, attempts: list[int]) -> list[Chunk]:
        try:
            body = json.loads(raw)
            result = self._parse_result(body)
        except UnavailableError as exc:
            raise self._adopt(exc, attempts[0])
        except Exception as exc:
            # Whatever the parser calls it (even a RejectedError), a bad answer is the upstream's fault.
            raise self._error(
                UnavailableError, f"malformed response: {type(exc).__name__}: {exc}", attempts[0]
            ) from None
        model = result.model or (body.get("model") if isinstance(body, dict) else None) or request.model
        deltas = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(result.tool_calls)]
        return [
            Chunk(text=result.text, tool_calls=deltas, thinking=result.thinking, backend=self.name, model=model),
            Chunk(finish_reason=result.finish_reason or "stop", usage=result.usage, backend=self.name, model=model),
        ]


async def _aclose(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class _Decoder:
    """Adapts a protocol stream decoder to one SSE event: (chunks, upstream model, finished)."""

    def feed(self, event: str | None, data: str, model: str) -> tuple[list[Chunk], str, bool]:
        raise NotImplementedError
