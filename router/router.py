"""route(request): the attempt chain, failover before the first chunk, one log record per request.

Failover happens only before the first chunk and only on "unavailable" errors (connect error,
timeout, 5xx/429 after retries, open breaker, local load failure) — and, on chains with more than
one step, on a model the local engine simply doesn't have. Rejected requests (400/401/403/404/422
from a cloud backend) come back at once. After the first chunk a failure ends the stream with an
error chunk; nothing is swapped mid-answer.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping

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
from router.events import EventBus, RequestFinished, RequestProgress, RequestStarted, RequestStatus, RulesChanged
from router.rules import Explanation, Rule, explain
from router.store import RequestRecord, Store
from router.timing import AnswerTimer

PROGRESS_EVERY_S = 0.25


@dataclass
class Attempt:
    backend: str
    model: str
    outcome: str  # ok | unavailable | rejected | skipped | cancelled | error
    latency_s: float
    error: str | None = None


def _breaker_state(backend: Backend) -> str:
    return getattr(backend, "breaker_state", None) or backend.snapshot().state


class RouteStream:
    """The chunks of one routed request, with the trace of what was tried."""

    def __init__(self, router: "Router", request: ChatRequest, front_end: str, protocol: str) -> None:
        self.request_id = request.metadata.get("request_id") or uuid.uuid4().hex[:12]
        self.trace: list[Attempt] = []
        self.explanation: Explanation = router.explain(request.model)
        self.usage: Usage | None = None
        self._router = router
        self._request = request
        self._front_end = front_end
        self._protocol = protocol
        self._gen = self._run()

    def __aiter__(self) -> "RouteStream":
        return self

    async def __anext__(self) -> Chunk:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    def failover_note(self) -> str:
        """What failed before the answer, e.g. "local unavailable: cannot load ...", or ""."""
        return "; ".join(f"{a.backend} {a.outcome}" + (f": {a.error}" if a.error else "")
                         for a in self.trace if a.outcome != "ok")

    def _status(self, backend: str | None, text: str) -> None:
        self._router.events.publish(RequestStatus(self.request_id, backend, text))

    def _status_of(self, backend: str) -> Callable[[str], None]:
        """For the backend: say what the request waits on (may be called from another thread)."""
        return lambda text: self._status(backend, text)

    async def _run(self) -> AsyncIterator[Chunk]:
        router, req = self._router, self._request
        started = time.perf_counter()
        record = RequestRecord(front_end=self._front_end, protocol=self._protocol, model=req.model,
                               rule_id=self.explanation.rule.id if self.explanation.rule else None,
                               request_id=self.request_id)
        if router.log_prompts:
            record.prompt = "\n".join(f"{m.role}: {m.content}" for m in req.messages)
        router.events.publish(RequestStarted(self.request_id, req.model, self._front_end, self._protocol))
        status, error = "error", None
        first_sent = False
        usage: Usage | None = None
        last_progress = 0.0
        tokens = 0
        timer = AnswerTimer()
        try:
            backends = router.backends()
            chain = self.explanation.chain
            failures: list[str] = []
            for i, step in enumerate(chain):
                backend = backends.get(step.backend)
                if backend is None:
                    self.trace.append(Attempt(step.backend, step.model, "skipped", 0.0, "no such backend"))
                    failures.append(f"{step.backend}: no such backend")
                    continue
                if _breaker_state(backend) == "open":
                    self.trace.append(Attempt(step.backend, step.model, "skipped", 0.0, "breaker open"))
                    failures.append(f"{step.backend}: breaker open")
                    continue
                t0 = time.perf_counter()
                self._status(step.backend, f"asking {step.backend}/{step.model}"
                             + (f" ({'; '.join(failures)})" if failures else ""))
                attempt_req = ChatRequest(**{**req.__dict__, "model": step.model,
                                             "metadata": {**req.metadata, "on_status": self._status_of(step.backend)}})
                stream = backend.stream(attempt_req)
                try:
                    first = await stream.__anext__()
                except StopAsyncIteration:
                    first = None
                except (UnavailableError, ModelNotFoundError) as exc:
                    local_missing = isinstance(exc, ModelNotFoundError) and getattr(backend, "kind", "") == "local"
                    if isinstance(exc, ModelNotFoundError) and not (local_missing and len(chain) > 1):
                        self.trace.append(Attempt(step.backend, step.model, "rejected", time.perf_counter() - t0,
                                                  str(exc)))
                        exc.backend = exc.backend or step.backend
                        error = str(exc)
                        await stream.aclose()
                        raise
                    self.trace.append(Attempt(step.backend, step.model, "unavailable", time.perf_counter() - t0,
                                              exc.message))
                    failures.append(f"{step.backend}: {exc.message}")
                    await stream.aclose()
                    continue
                except RejectedError as exc:
                    self.trace.append(Attempt(step.backend, step.model, "rejected", time.perf_counter() - t0,
                                              exc.message))
                    exc.backend = exc.backend or step.backend
                    error = str(exc)
                    await stream.aclose()
                    raise
                except BaseException:
                    await stream.aclose()
                    self.trace.append(Attempt(step.backend, step.model, "cancelled", time.perf_counter() - t0))
                    raise
                # The step answered: from here on no other backend is tried.
                record.final_backend, record.final_model = step.backend, step.model
                try:
                    chunk = first
                    while chunk is not None:
                        if chunk.error is None:
                            chunk.backend = chunk.backend or step.backend
                            chunk.model = chunk.model or step.model
                        first_sent = True
                        if chunk.text:
                            tokens += 1
                            timer.text()
                        if chunk.usage is not None:
                            usage = chunk.usage = timer.usage(chunk.usage)
                        now = time.perf_counter()
                        if now - last_progress >= PROGRESS_EVERY_S:
                            last_progress = now
                            router.events.publish(RequestProgress(self.request_id, step.backend, tokens))
                        yield chunk
                        try:
                            chunk = await stream.__anext__()
                        except StopAsyncIteration:
                            chunk = None
                except EngineError as exc:
                    outcome = "cancelled" if isinstance(exc, CancelledError) else "error"
                    self.trace.append(Attempt(step.backend, step.model, outcome, time.perf_counter() - t0, str(exc)))
                    status, error = ("cancelled" if outcome == "cancelled" else "error"), str(exc)
                    exc.backend = exc.backend or step.backend
                    yield Chunk(finish_reason="error", error=exc, backend=step.backend, model=step.model)
                    return
                finally:
                    await stream.aclose()
                self.trace.append(Attempt(step.backend, step.model, "ok", time.perf_counter() - t0))
                status = "ok"
                return
            error = "all backends unavailable: " + "; ".join(failures)
            raise UnavailableError(error, status=503, attempts=len(self.trace))
        except GeneratorExit:
            status, error = "cancelled", "the client went away"
            if record.final_backend is not None and not (self.trace and self.trace[-1].outcome == "ok"):
                self.trace.append(Attempt(record.final_backend, record.final_model or "", "cancelled",
                                          time.perf_counter() - started))
            raise
        except BaseException as exc:
            if status != "ok" and error is None:
                error = f"{type(exc).__name__}: {exc}"
                status = "cancelled" if not isinstance(exc, Exception) else "error"
            raise
        finally:
            record.status, record.error = status, error
            record.attempts = [a.__dict__ for a in self.trace]
            record.latency_s = time.perf_counter() - started
            measured = self.usage = timer.usage(usage)
            if usage is not None:
                record.tokens_in, record.tokens_out = usage.prompt_tokens, usage.completion_tokens
            elif first_sent:
                record.tokens_out = tokens
            if measured is not None:
                record.ttft_s, record.tokens_per_s = measured.ttft_s, measured.tokens_per_s
            try:
                router.store.log_request(record)
            finally:
                router.events.publish(RequestFinished(self.request_id, status, record))


class Router:
    def __init__(self, store: Store, backends: Callable[[], Mapping[str, Backend]], events: EventBus, *,
                 default_backend: str = "local", log_prompts: bool = False) -> None:
        self.store = store
        self.backends = backends
        self.events = events
        self._config_default = default_backend
        self.log_prompts = log_prompts
        self._token: Any = None
        self._rules: list[Rule] = []
        self._default = default_backend

    def rules(self) -> list[Rule]:
        """The rules, reread only when the store says something changed (any process)."""
        token = self.store.change_token()
        if token != self._token:
            first = self._token is None
            self._token = token
            self._rules = self.store.list_rules()
            self._default = self.store.get_setting("default_backend", self._config_default)
            if not first:
                self.events.publish(RulesChanged())
        return self._rules

    @property
    def default_backend(self) -> str:
        self.rules()
        return self._default

    def explain(self, model: str) -> Explanation:
        rules = self.rules()
        states = {name: _breaker_state(b) for name, b in self.backends().items()}
        return explain(rules, model, self._default, states)

    def route(self, request: ChatRequest, *, front_end: str = "tui", protocol: str = "canonical") -> RouteStream:
        request.validate()
        return RouteStream(self, request, front_end, protocol)
