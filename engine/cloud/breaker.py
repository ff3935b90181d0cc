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
      the cancellation passes through pybreaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

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


class _Storage(pybreaker.CircuitMemoryStorage):
    """Memory storage that can ignore success bookkeeping while a cancellation passes through."""

    def __init__(self) -> None:
        super().__init__(CLOSED)
        self.neutral = False

    def reset_counter(self) -> None:
        if not self.neutral:
            super().reset_counter()

    def increment_success_counter(self) -> None:
        if not self.neutral:
            super().increment_success_counter()


class _Relay(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: "BackendBreaker") -> None:
        self._owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
        old_name = getattr(old, "name", None) or CLOSED
        new_name = getattr(new, "name", None) or CLOSED
        if old_name != new_name:
            self._owner._publish(old_name, new_name)


class BackendBreaker:
    def __init__(self, backend: str, fail_max: int, reset_timeout: float) -> None:
        self.backend = backend
        self._storage = _Storage()
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
        self.last_error: str | None = None
        self.last_error_at: float | None = None

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
    def state(self) -> str:
        """The effective state; performs a due open -> half-open move (and publishes it)."""
        current = self._cb.current_state
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
        return max(0.0, (due - datetime.now(timezone.utc)).total_seconds())

    def add_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[BreakerEvent], None]) -> None:
        self._listeners.remove(fn)

    def record_error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

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
