"""One circuit breaker per cloud backend: pybreaker's state machine plus what it lacks here.

pybreaker 1.4 gives the closed/open/half-open machine, the failure counter and listeners. Added:

- a single-probe gate: in half-open exactly one call goes through; others fail fast as if open
  (pybreaker lets every concurrent call through in half-open);
- an effective state: pybreaker moves open -> half-open only on the next call, so a breaker
  nobody calls would read "open" forever and a router that skips open backends would never probe
  it. Reading `state` performs the due transition (and publishes it);
- outcome policy (pybreaker counts an excluded exception as a SUCCESS):
    * failure: anything that is not excluded (UnavailableError: connect errors, timeouts, 5xx and
      429 after retries, a stream cut or malformed mid-way, an upstream error event);
    * success: normal exit, and RejectedError — the upstream answered coherently (a 4xx), so it is
      up; this resets the consecutive-failure count and closes a half-open breaker;
    * neutral: cancellation (asyncio.CancelledError, GeneratorExit from an early-closed stream,
      engine CancelledError) says nothing about the upstream's health. It neither counts as a
      failure nor resets the count nor closes a half-open breaker; an interrupted probe just frees
      the gate for the next caller. Done with a storage that ignores the success bookkeeping while
      the cancellation passes through pybreaker;
- shared state: state, failure count, opened-at and last error live in a `BreakerStates` (the
  router's is SQLite, so every process on one database sees one breaker; the default is memory).
  The storage writes only when a value changes: a success on a closed breaker with no failures
  writes nothing. A change made by another process is noticed at the next read of `state` and
  published like our own. The half-open probe gate is per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pybreaker

from engine.types import BreakerEvent, CancelledError, RejectedError

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN

_CANCELLATION = (asyncio.CancelledError, GeneratorExit, CancelledError)


def is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, _CANCELLATION)


class BreakerOpen(Exception):
    """The breaker refused the call (open, or half-open with its probe already in flight)."""

    def __init__(self, reason: str, seconds_to_half_open: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds_to_half_open = seconds_to_half_open


@dataclass(frozen=True)
class SharedBreaker:
    """The part of a breaker that every process agrees on."""

    state: str = CLOSED
    failures: int = 0
    opened_at: float | None = None  # epoch seconds
    last_error: str | None = None
    last_error_at: float | None = None


class BreakerStates(Protocol):
    """Where breakers keep their shared part, by backend name."""

    def load(self, backend: str) -> SharedBreaker: ...

    def save(self, backend: str, **values: Any) -> None: ...

    def add_failure(self, backend: str, error: str | None) -> int: ...


class MemoryBreakerStates:
    """BreakerStates for one process."""

    def __init__(self) -> None:
        self._states: dict[str, SharedBreaker] = {}

    def load(self, backend: str) -> SharedBreaker:
        return self._states.get(backend) or SharedBreaker()

    def save(self, backend: str, **values: Any) -> None:
        self._states[backend] = replace(self.load(backend), **values)

    def add_failure(self, backend: str, error: str | None) -> int:
        old = self.load(backend)
        self.save(backend, failures=old.failures + 1, last_error=error, last_error_at=time.time())
        return old.failures + 1


class _Storage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage over BreakerStates, writing on changes only; it can ignore the success
    bookkeeping while a cancellation passes through. The half-open success count stays local."""

    def __init__(self, backend: str, shared: BreakerStates) -> None:
        super().__init__(backend)
        self._backend = backend
        self._shared = shared
        self._successes = 0
        self.neutral = False
        self.pending_error: str | None = None

    @property
    def current(self) -> SharedBreaker:
        return self._shared.load(self._backend)

    @property
    def state(self) -> str:
        return self.current.state

    @state.setter
    def state(self, state: str) -> None:
        if state != self.current.state:
            self._shared.save(self._backend, state=state)

    def increment_counter(self) -> None:
        error, self.pending_error = self.pending_error, None
        self._shared.add_failure(self._backend, error)

    def reset_counter(self) -> None:
        if not self.neutral and self.current.failures:
            self._shared.save(self._backend, failures=0)

    def increment_success_counter(self) -> None:
        if not self.neutral:
            self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return self.current.failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        at = self.current.opened_at
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @opened_at.setter
    def opened_at(self, when: datetime) -> None:
        self._shared.save(self._backend, opened_at=when.timestamp())


class _Relay(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: BackendBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
        old_name = getattr(old, "name", None) or CLOSED
        new_name = getattr(new, "name", None) or CLOSED
        if old_name != new_name:
            self._owner._publish(old_name, new_name)


class BackendBreaker:
    def __init__(self, backend: str, fail_max: int, reset_timeout: float, shared: BreakerStates | None = None) -> None:
        self.backend = backend
        self._storage = _Storage(backend, shared if shared is not None else MemoryBreakerStates())
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            exclude=[RejectedError, *_CANCELLATION],
            listeners=[_Relay(self)],
            state_storage=self._storage,
            name=backend,
            # Keep the real error (UnavailableError) on the call that trips the breaker.
            throw_new_error_on_trip=False,
        )
        self._probe_in_flight = False
        self._listeners: list[Callable[[BreakerEvent], None]] = []

    # ------------------------------------------------------------ observation

    @property
    def fail_max(self) -> int:
        return self._cb.fail_max

    @property
    def reset_timeout(self) -> float:
        return self._cb.reset_timeout

    @property
    def consecutive_failures(self) -> int:
        return self._cb.fail_counter

    @property
    def last_error(self) -> str | None:
        return self._storage.current.last_error

    @property
    def last_error_at(self) -> float | None:
        return self._storage.current.last_error_at

    @property
    def state(self) -> str:
        """The effective state; publishes a change made by another process, and performs a due
        open -> half-open move (and publishes it)."""
        current = self._cb.state.name
        if current == OPEN and self.seconds_to_half_open() == 0.0:
            self._cb.half_open()
            return HALF_OPEN
        return current

    @property
    def probe_in_flight(self) -> bool:
        return self._probe_in_flight

    def seconds_to_half_open(self) -> float | None:
        if self._cb.current_state != OPEN:
            return None
        opened_at = self._storage.opened_at
        if opened_at is None:
            return 0.0
        due = opened_at + timedelta(seconds=self._cb.reset_timeout)
        return max(0.0, (due - datetime.now(UTC)).total_seconds())

    def add_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._listeners.remove(fn)

    def record_error(self, text: str) -> None:
        """The error of the call that is failing: stored with the failure it counts as. Call it
        with no await between it and the raise that leaves `calling()`."""
        self._storage.pending_error = text

    def _publish(self, old: str, new: str) -> None:
        event = BreakerEvent(self.backend, old, new, time.time(), self.last_error)
        log.info("breaker %s: %s -> %s", self.backend, old, new)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                # A broken subscriber must not break the request that changed the state.
                log.exception("breaker listener failed for %s", self.backend)

    # ------------------------------------------------------------ control

    def reset(self) -> None:
        """Close the breaker (UI action)."""
        self._cb.close()

    def trip(self) -> None:
        """Open the breaker now (UI action); it half-opens after reset_timeout as usual."""
        self._cb.open()

    # ------------------------------------------------------------ guarding a call

    def _admit(self) -> bool:
        """Raise BreakerOpen or let the call in; True when the call is the half-open probe.
        No await between the check and the flag: atomic on the event loop."""
        state = self.state
        if state == OPEN:
            wait = self.seconds_to_half_open()
            raise BreakerOpen(f"circuit breaker open (half-open in {wait:.1f} s)", wait)
        if state == HALF_OPEN:
            if self._probe_in_flight:
                raise BreakerOpen("circuit breaker half-open, probe in flight", 0.0)
            self._probe_in_flight = True
            return True
        return False

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Guard the WHOLE call (wrap the full stream consumption) with the outcome policy above."""
        probe = self._admit()
        try:
            with self._cb.calling():
                try:
                    yield
                except BaseException as exc:
                    if is_cancellation(exc):
                        self._storage.neutral = True
                    raise
        except pybreaker.CircuitBreakerError as exc:
            # Only on entry (another caller opened it between _admit and here).
            raise BreakerOpen(f"circuit breaker open ({exc})", self.seconds_to_half_open()) from None
        finally:
            self._storage.neutral = False
            if probe:
                self._probe_in_flight = False
