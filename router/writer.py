"""The single writer: one thread with its own WAL connection that runs writes in order, off the loop.

sqlite-utils connections are bound to the thread that opened them, so the thread opens its own
(lazily, on the first write) through the `connect` function it is given. Callers on the event
loop hand it work and go on: `submit` never blocks and never raises; `run` is the awaitable form.
A write that still fails after the store's retry policy is logged, its future carries the
`StoreError`, and `on_failed` gets a `WriteFailed` on the loop that submitted it (for the
Health pane: publish it on the EventBus).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from router.database import StoreBusyError, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")


@dataclass(frozen=True)
class WriteFailed:
    """A write the writer gave up on. `kind` is the StoreError kind: busy (also: too many writes
    waiting), full, read-only, damaged, io, error (also: the store was closed, or a bug)."""

    what: str  # e.g. "write the request log"
    error: str  # one line, in the user's terms
    kind: str
    detail: str | None = None  # e.g. the request id
    at: float = field(default_factory=time.time)


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    what: str
    detail: str | None
    on_failed: Callable[[WriteFailed], None] | None
    loop: asyncio.AbstractEventLoop | None
    future: concurrent.futures.Future[Any]


class Writer(Generic[C]):
    def __init__(self, connect: Callable[[], C], *, name: str = "store-writer", max_pending: int = 10000) -> None:
        self._connect = connect
        self._name = name
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._max_pending = max_pending
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: C | None = None
        self.written = 0
        self.failed = 0
        self.last_failure: WriteFailed | None = None

    # ------------------------------------------------------------ callers' side

    def submit(
        self,
        fn: Callable[[C], T],
        *,
        what: str,
        detail: str | None = None,
        on_failed: Callable[[WriteFailed], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Queue `fn(connection)`; returns at once. Never raises: a refused job fails its future."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        job = _Job(fn, what, detail, on_failed, loop, concurrent.futures.Future())
        with self._idle:
            refused: StoreError | None = None
            if self._closed:
                refused = StoreError(f"could not {what}: the store is closed")
            elif self._pending >= self._max_pending:
                refused = StoreBusyError(f"could not {what}: {self._pending} writes are already waiting")
            if refused is None:
                self._pending += 1
                self._start()
        if refused is not None:
            self._fail(job, refused)
        else:
            self._queue.put(job)
        return job.future

    async def run(self, fn: Callable[[C], T], *, what: str, detail: str | None = None) -> T:
        """`fn(connection)` on the writer thread; the loop is free while it runs. Raises what fn raised."""
        return await asyncio.wrap_future(self.submit(fn, what=what, detail=detail))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written (or failed); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        return self._pending

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), then stop the thread and close its connection."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            log.error(
                "%s: %d writes still waiting after %.0f s at close; they are lost", self._name, self._pending, timeout
            )

    # ------------------------------------------------------------ the thread

    def _start(self) -> None:
        if self._thread is None:
            # A daemon: a process that exits without close() must not hang on a stuck write.
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                self._do(job)
        finally:
            self._disconnect()

    def _do(self, job: _Job) -> None:
        try:
            if not job.future.set_running_or_notify_cancel():
                return
            try:
                if self._conn is None:
                    self._conn = self._connect()
                result = job.fn(self._conn)
            except Exception as exc:
                if not isinstance(exc, StoreError):
                    log.exception("%s: unexpected error while trying to %s", self._name, job.what)
                self._fail(job, exc)
                if getattr(exc, "kind", "") in ("damaged", "read-only", "io"):
                    self._disconnect()  # reconnect on the next write: the file may have been fixed
            else:
                self.written += 1
                job.future.set_result(result)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _fail(self, job: _Job, exc: Exception) -> None:
        failed = WriteFailed(job.what, str(exc), getattr(exc, "kind", "error"), job.detail)
        self.failed += 1
        self.last_failure = failed
        log.error("%s: %s%s", self._name, failed.error, f" ({job.detail})" if job.detail else "")
        job.future.set_exception(exc)
        if job.on_failed is None:
            return
        if job.loop is not None and not job.loop.is_closed():
            try:
                job.loop.call_soon_threadsafe(_report, job.on_failed, failed)
                return
            except RuntimeError:  # the loop closed in between
                pass
        _report(job.on_failed, failed)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        close = getattr(conn, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("%s: closing its connection failed", self._name)


def _report(callback: Callable[[WriteFailed], None], failed: WriteFailed) -> None:
    try:
        callback(failed)
    except Exception:  # a broken listener must not stop the writer or the loop
        log.exception("write-failure callback %r failed", callback)
