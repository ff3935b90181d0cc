"""Breaker state in SQLite: one breaker per backend for every process on the same database.

The engine's breakers (engine/cloud/breaker.py) keep their shared part in a `BreakerStates`; this
one is the store's `breakers` table. Reads are cached and reread only when some other connection
committed (SQLite's data_version) or this process changed its backends; writes happen only when a
breaker changes (a failure, a state move), never on a request that simply succeeds.

Writes go through the store's writer thread, so a breaker moving never holds the event loop (a
write may wait seconds for another process's lock). Until a write is committed, this process sees
its own change through an overlay on the cached rows: pybreaker reads the counter right after
counting a failure, and must see it.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

from engine.cloud.breaker import SharedBreaker
from router.store import Store
from router.writer import WriteFailed

_FIELDS = ("state", "failures", "opened_at", "last_error", "last_error_at")


class _Pending:
    """This process's changes to one backend's row that the writer has not committed yet."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.latest: concurrent.futures.Future[Any] | None = None

    def committed(self) -> bool:
        # The writer runs jobs in order: when the latest is done, every earlier one is.
        return self.latest is not None and self.latest.done()


class SQLiteBreakerStates:
    def __init__(self, store: Store, on_failed: Callable[[WriteFailed], None] | None = None) -> None:
        self._store = store
        self._on_failed = on_failed
        self._version: tuple[int, int] | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, _Pending] = {}

    def _rows_now(self) -> dict[str, dict[str, Any]]:
        version = self._store.breaker_version()
        if version != self._version:
            self._version = version
            self._rows = self._store.breaker_rows(wait_for_writer=False)
        return self._rows

    def _row(self, backend: str) -> dict[str, Any] | None:
        pending = self._pending.get(backend)
        # Asked before the rows are read: a write committed by then is in what is read next.
        committed = pending is not None and pending.committed()
        row = self._rows_now().get(backend)
        if pending is None:
            return row
        if committed:
            del self._pending[backend]
            return row
        return {"backend": backend, "state": "closed", "failures": 0, **(row or {}), **pending.values}

    def _submit(self, backend: str, values: dict[str, Any], write: Callable[[Store], Any], what: str) -> None:
        pending = self._pending.setdefault(backend, _Pending())
        pending.values.update(values)
        pending.latest = self._store.writer.submit(write, what=what, detail=backend, on_failed=self._on_failed)

    def load(self, backend: str) -> SharedBreaker:
        row = self._row(backend)
        if row is None:
            return SharedBreaker()
        return SharedBreaker(**{k: row[k] for k in _FIELDS if row.get(k) is not None})

    def save(self, backend: str, **values: Any) -> None:
        self._submit(
            backend,
            values,
            lambda store: store.save_breaker(backend, **values),
            f"save the breaker state of {backend!r}",
        )

    def add_failure(self, backend: str, error: str | None) -> int:
        """Count one failure; the count as this process sees it now (the database's own count,
        which also holds other processes' failures, is incremented atomically by the writer)."""
        row = self._row(backend)
        failures = int((row or {}).get("failures") or 0) + 1
        self._submit(
            backend,
            {"failures": failures, "last_error": error, "last_error_at": time.time()},
            lambda store: store.add_breaker_failure(backend, error),
            f"count a failure of {backend!r}",
        )
        return failures

    def states(self) -> dict[str, str]:
        """Every stored breaker's state, by backend (a backend never failed has no row: closed)."""
        names = set(self._rows_now()) | set(self._pending)
        states = {}
        for name in names:
            row = self._row(name)
            if row is not None:
                states[name] = row.get("state") or "closed"
        return states
