"""route(request): the attempt chain, failover before the first chunk, one log record per request.

Failover happens only before the first chunk and only on "unavailable" errors (connect error,
deadline passed, 5xx/429 after retries, open breaker, local load failure) — and, on chains with more
than one step, on a model the local engine simply doesn't have. Rejected requests (400/401/403/404/
422 from a cloud backend) come back at once. After the first chunk a failure ends the stream with an
error chunk; nothing is swapped mid-answer.

A request ends with exactly one of these statuses (the request log's `status`):
  ok              the answer was delivered to its end;
  client_gone     the caller went away (closed the stream, cancelled its task, disconnected);
  upstream_error  the backend failed after its first chunk (cut, malformed, stalled, error event);
  rejected        the backend refused the request (4xx), or the local model does not exist;
  unavailable     no step of the chain could answer (the message lists why, step by step);
  error           a bug in the workbench or a backend (the exception's type and text).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.types import (
    Backend,
    CancelledError,
    ChatRequest,
    Chunk,
    EngineError,
    ModelNotFoundError,
    RejectedError,
    UnavailableError,
    Usage,
)
from router.events import (
    CloudRoutingChanged,
    EventBus,
    RequestFinished,
    RequestProgress,
    RequestStarted,
    RequestStatus,
    RulesChanged,
)
from router.rules import CLOUD_OFF, ChainStep, Explanation, Rule, explain
from router.store import RequestRecord, Store
from router.timing import AnswerTimer

PROGRESS_EVERY_S = 0.25

OK, CLIENT_GONE, UPSTREAM_ERROR = "ok", "client_gone", "upstream_error"
REJECTED, UNAVAILABLE, ERROR, SKIPPED = "rejected", "unavailable", "error", "skipped"
CLIENT_GONE_TEXT = "the client went away before the answer was complete"
CLOUD_ON_HINT = "to use cloud backends, turn cloud routing on: `mlx-workbench cloud on`, or in the TUI"


@dataclass
class Attempt:
    backend: str
    model: str
    outcome: str  # ok | unavailable | rejected | skipped | client_gone | upstream_error | error
    latency_s: float
    error: str | None = None


def _breaker_state(backend: Backend) -> str:
    return getattr(backend, "breaker_state", None) or backend.snapshot().state


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, GeneratorExit, CancelledError))


async def _finish_off(cleanup: Awaitable[None]) -> None:
    """Await a cleanup to its end even if this task is cancelled meanwhile: under an anyio cancel
    scope (Starlette) every await re-raises the cancellation, which would leave an upstream
    response open. The cleanup runs on in its own task; the cancellation still propagates."""
    await asyncio.shield(asyncio.ensure_future(cleanup))


async def _aclose(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class RouteStream:
    """The chunks of one routed request, with the trace of what was tried.

    `aclose()` may be called from any task at any time, also while another task awaits the next
    chunk: the attempt in flight is cancelled at once (the upstream request closed, a local
    generation dropped) and that waiting task gets an engine `CancelledError`."""

    def __init__(self, router: Router, request: ChatRequest, front_end: str, protocol: str) -> None:
        self.request_id = request.metadata.get("request_id") or uuid.uuid4().hex[:12]
        self.trace: list[Attempt] = []
        self.explanation: Explanation = router.explain(request.model)
        self.status: str | None = None  # set once, when the outcome is known
        self.error: str | None = None
        self.answered_by: str | None = None  # "backend/model" once the first chunk arrived
        self.record: RequestRecord | None = None
        self._router = router
        self._request = request
        self._front_end = front_end
        self._protocol = protocol
        self._started = self._last_progress = 0.0
        self._chunks = self._chars = 0
        self._usage: Usage | None = None
        self._timer = AnswerTimer()
        self._complete = False
        self._answered: ChainStep | None = None
        self._answer_index = 0
        self._stepping: asyncio.Task[Any] | None = None
        self._step_done: asyncio.Event | None = None
        self._interrupted = False
        self._closer: asyncio.Future[None] | None = None
        self._gen = self._run()

    # ------------------------------------------------------------ the iterator the front ends see

    def __aiter__(self) -> RouteStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._closer is not None:
            raise StopAsyncIteration
        task = asyncio.current_task()
        self._stepping = task
        try:
            return await self._gen.__anext__()
        except asyncio.CancelledError:
            # Our own aclose() cancelled this step: consume that request, keep any other.
            if self._interrupted and task is not None and task.uncancel() == 0:
                raise CancelledError("the request was closed") from None
            raise
        finally:
            self._stepping = None
            if self._step_done is not None:
                self._step_done.set()

    async def aclose(self) -> None:
        if self._closer is None:
            self._closer = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closer)

    async def _close(self) -> None:
        task = self._stepping
        if task is not None and not task.done():
            self._interrupted = True
            self._step_done = asyncio.Event()
            task.cancel()
            await self._step_done.wait()
        await self._gen.aclose()

    @property
    def usage(self) -> Usage | None:
        """The backend's token counts with TTFT and speed as measured here (None before any text)."""
        return self._timer.usage(self._usage)

    def failover_note(self) -> str:
        """What failed before the answer, e.g. "local unavailable: cannot load ...", or ""."""
        before = self.trace[: self._answer_index] if self._answered is not None else self.trace
        return "; ".join(f"{a.backend} {a.outcome}" + (f": {a.error}" if a.error else "") for a in before)

    # ------------------------------------------------------------ one request, start to end

    async def _run(self) -> AsyncGenerator[Chunk, None]:
        self._begin()
        try:
            if await self._router.prepare():
                self.explanation = self._router.explain(self._request.model)
            step, stream, chunk, t0 = await self._first_chunk()
            try:
                while chunk is not None:
                    self._deliver(step, chunk)
                    yield chunk
                    chunk = await anext(stream, None)
            except EngineError as exc:
                gone = isinstance(exc, CancelledError)
                self._attempt(step, CLIENT_GONE if gone else UPSTREAM_ERROR, t0, None if gone else str(exc))
                self._settle(CLIENT_GONE if gone else UPSTREAM_ERROR, CLIENT_GONE_TEXT if gone else str(exc))
                exc.backend = exc.backend or step.backend
                yield Chunk(finish_reason="error", error=exc, backend=step.backend, model=step.model)
                return
            except BaseException as exc:
                if _is_cancellation(exc):
                    self._attempt(step, OK if self._complete else CLIENT_GONE, t0)
                else:
                    self._attempt(step, ERROR, t0, f"{type(exc).__name__}: {exc}")
                raise
            finally:
                await _finish_off(_aclose(stream))
            self._attempt(step, OK, t0)
            self._settle(OK)
        except BaseException as exc:
            self._settle_failure(exc)
            raise
        finally:
            self._persist()

    async def _first_chunk(self) -> tuple[ChainStep, AsyncIterator[Chunk], Chunk | None, float]:
        """The attempt loop: the first step that produces its first chunk, or the reason none did."""
        backends = self._router.backends()
        chain = self.explanation.chain
        failures: list[str] = []
        for step in chain:
            backend = backends.get(step.backend)
            if step.skipped or backend is None:
                reason = step.reason or "no such backend"
                self.trace.append(Attempt(step.backend, step.model, SKIPPED, 0.0, reason))
                failures.append(f"{step.backend}: {reason}")
                continue
            t0 = time.perf_counter()
            self._status(
                step.backend, f"asking {step.backend}/{step.model}" + (f" ({'; '.join(failures)})" if failures else "")
            )
            metadata = {**self._request.metadata, "on_status": self._status_of(step.backend)}
            stream = backend.stream(replace(self._request, model=step.model, metadata=metadata))
            try:
                first = await anext(stream, None)
            except BaseException as exc:
                if not self._fails_over(exc, backend, len(chain)):
                    self._attempt(step, self._outcome_of(exc), t0, self._text_of(exc))
                    await _finish_off(_aclose(stream))
                    raise
                assert isinstance(exc, EngineError)
                self._attempt(step, UNAVAILABLE, t0, exc.message)
                failures.append(f"{step.backend}: {exc.message}")
                await _finish_off(_aclose(stream))
                continue
            self._answered, self._answer_index = step, len(self.trace)
            return step, stream, first, t0
        message = "all backends unavailable: " + "; ".join(failures)
        if any(s.reason == CLOUD_OFF for s in chain):
            message += f"; {CLOUD_ON_HINT}"
        raise UnavailableError(message, status=503, attempts=len(self.trace))

    @staticmethod
    def _fails_over(exc: BaseException, backend: Backend, chain_length: int) -> bool:
        if isinstance(exc, ModelNotFoundError):
            # The local engine not having a model is "try the next step" on a longer chain.
            return getattr(backend, "kind", "") == "local" and chain_length > 1
        return isinstance(exc, UnavailableError)

    @staticmethod
    def _outcome_of(exc: BaseException) -> str:
        if _is_cancellation(exc):
            return CLIENT_GONE
        if isinstance(exc, RejectedError):
            return REJECTED
        return UNAVAILABLE if isinstance(exc, UnavailableError) else ERROR

    @staticmethod
    def _text_of(exc: BaseException) -> str | None:
        if _is_cancellation(exc):
            return None
        return exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------ trace, events, outcome

    def _status(self, backend: str | None, text: str) -> None:
        self._router.events.publish(RequestStatus(self.request_id, backend, text))

    def _status_of(self, backend: str) -> Callable[[str], None]:
        """For the backend: say what the request waits on ("loading demo 45%"); any thread may call it."""
        return lambda text: self._status(backend, text)

    def _begin(self) -> None:
        self._timer = AnswerTimer()
        self._started = self._last_progress = time.perf_counter()
        req = self._request
        self._router.events.publish(RequestStarted(self.request_id, req.model, self._front_end, self._protocol))

    def _attempt(self, step: ChainStep, outcome: str, t0: float, error: str | None = None) -> None:
        self.trace.append(Attempt(step.backend, step.model, outcome, time.perf_counter() - t0, error))

    def _deliver(self, step: ChainStep, chunk: Chunk) -> None:
        """Bookkeeping for one chunk on its way out (no I/O: this is the token path)."""
        if chunk.error is None:
            chunk.backend = chunk.backend or step.backend
            chunk.model = chunk.model or step.model
        if self.answered_by is None:
            self.answered_by = f"{step.backend}/{chunk.model or step.model}"
        if chunk.text:
            self._timer.text()
        if chunk.usage is not None and chunk.finish_reason:
            # Only a final chunk's usage is the answer's: a first chunk may carry the prompt's alone.
            self._usage = chunk.usage = self._timer.usage(chunk.usage)
        if chunk.finish_reason and chunk.error is None:
            self._complete = True
        self._chunks += 1
        self._chars += len(chunk.text)
        now = time.perf_counter()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._router.events.publish(RequestProgress(self.request_id, step.backend, self._chunks, self._chars))

    def _settle(self, status: str, error: str | None = None) -> None:
        if self.status is None:
            self.status, self.error = status, error

    def _settle_failure(self, exc: BaseException) -> None:
        if _is_cancellation(exc):
            # Closed after the final chunk went out: the answer was complete all the same.
            self._settle(OK if self._complete else CLIENT_GONE, None if self._complete else CLIENT_GONE_TEXT)
        elif isinstance(exc, EngineError):
            self._settle(self._outcome_of(exc), str(exc))
        else:
            self._settle(ERROR, f"{type(exc).__name__}: {exc}")

    def _build_record(self) -> RequestRecord:
        req = self._request
        rule = self.explanation.rule
        record = RequestRecord(
            front_end=self._front_end,
            protocol=self._protocol,
            model=req.model,
            rule_id=rule.id if rule else None,
            request_id=self.request_id,
        )
        if self._router.log_prompts:
            record.prompt = "\n".join(f"{m.role}: {m.content}" for m in req.messages)
        if self._answered is not None:
            record.final_backend, record.final_model = self._answered.backend, self._answered.model
        record.status, record.error = self.status or ERROR, self.error
        record.attempts = [a.__dict__ for a in self.trace]
        record.latency_s = time.perf_counter() - self._started
        if self._usage is not None:
            # Counts as the backend reported them; a stream that ended early reported none.
            u = self._usage
            record.tokens_in, record.tokens_out = u.prompt_tokens, u.completion_tokens
        measured = self.usage
        if measured is not None:
            # Timings measured here, the same way for every backend (router/timing.py).
            record.ttft_s, record.tokens_per_s = measured.ttft_s, measured.tokens_per_s
        return record

    def _persist(self) -> None:
        self.record = record = self._build_record()
        # The answer never waits for its log row, nor fails with it: the store's writer thread
        # writes it, and a row it cannot write is logged and published as a WriteFailed event.
        self._router.store.log_request_later(record, on_failed=self._router.events.publish)
        self._router.events.publish(RequestFinished(self.request_id, record.status, record))


class Router:
    def __init__(
        self,
        store: Store,
        backends: Callable[[], Mapping[str, Backend]],
        events: EventBus,
        *,
        default_backend: str = "local",
        log_prompts: bool = False,
        prepare: Callable[[], Awaitable[bool]] | None = None,
        breaker_states: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.store = store
        self.backends = backends
        self.events = events
        self._config_default = default_backend
        self.log_prompts = log_prompts
        self._prepare = prepare
        self._breaker_states = breaker_states
        self._token: Any = None
        self._rules: list[Rule] = []
        self._default = default_backend
        self._cloud = False

    async def prepare(self) -> bool:
        """Finish what must not run on the event loop before routing (key look-ups); True if the
        backends changed."""
        return await self._prepare() if self._prepare is not None else False

    def rules(self) -> list[Rule]:
        """The rules, reread only when the store says something changed (any process)."""
        token = self.store.change_token()
        if token != self._token:
            first = self._token is None
            self._token = token
            self._rules = self.store.list_rules()
            self._default = self.store.get_setting("default_backend", self._config_default)
            cloud = self.store.cloud_routing()
            if not first:
                self.events.publish(RulesChanged())
            if first or cloud != self._cloud:
                self._cloud = cloud
                self.events.publish(CloudRoutingChanged(cloud))
        return self._rules

    @property
    def default_backend(self) -> str:
        self.rules()
        return self._default

    @property
    def cloud_routing(self) -> bool:
        """The switch as the database has it now (another process may have flipped it)."""
        self.rules()
        return self._cloud

    def explain(self, model: str) -> Explanation:
        rules = self.rules()
        if self._breaker_states is not None:
            states = dict(self._breaker_states())
        else:
            states = {name: _breaker_state(b) for name, b in self.backends().items()}
        return explain(rules, model, self._default, states, cloud_routing=self._cloud)

    def route(self, request: ChatRequest, *, front_end: str = "tui", protocol: str = "canonical") -> RouteStream:
        request.validate()
        return RouteStream(self, request, front_end, protocol)
