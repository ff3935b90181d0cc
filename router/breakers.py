"""Breaker state in SQLite: one breaker per backend for every process on the same database.

The engine's breakers (engine/cloud/breaker.py) keep their shared part in a `BreakerStates`; this
one is the store's `breakers` table. Reads are cached and reread only when some other connection
committed (SQLite's data_version); writes happen only when a breaker changes (a failure, a state
move), never on a request that simply succeeds.
"""

from __future__ import annotations

import time
from typing import Any

from engine.cloud.breaker import SharedBreaker
from router.store import Store

_FIELDS = ("state", "failures", "opened_at", "last_error", "last_error_at")


class SQLiteBreakerStates:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._version: int | None = None
        self._rows: dict[str, dict[str, Any]] = {}

    def _rows_now(self) -> dict[str, dict[str, Any]]:
        version = self._store.breaker_version()
        if version != self._version:
            self._version = version
            self._rows = self._store.breaker_rows()
        return self._rows

    def load(self, backend: str) -> SharedBreaker:
        row = self._rows_now().get(backend)
        if row is None:
            return SharedBreaker()
        return SharedBreaker(**{k: row[k] for k in _FIELDS if row.get(k) is not None})

    def save(self, backend: str, **values: Any) -> None:
        self._store.save_breaker(backend, **values)
        # Our own commits do not move data_version: keep the cache in step by hand.
        self._rows_now().setdefault(backend, {"backend": backend}).update(values, updated_at=time.time())

    def add_failure(self, backend: str, error: str | None) -> int:
        failures = self._store.add_breaker_failure(backend, error)
        row = self._rows_now().setdefault(backend, {"backend": backend, "state": "closed"})
        row.update(failures=failures, last_error=error, last_error_at=time.time())
        return failures

    def states(self) -> dict[str, str]:
        """Every stored breaker's state, by backend (a backend never failed has no row: closed)."""
        return {name: row.get("state") or "closed" for name, row in self._rows_now().items()}
