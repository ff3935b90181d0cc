"""The TUI's own database connection, on a thread of its own.

Reads (conversations, the request log, backends) and writes (rules, backends, conversations) run
there, so a slow disk or another process holding the write lock never freezes the screen; the
caller awaits the result. SQLite connections are bound to the thread that opened them, hence one
dedicated thread with its own `Store` on the same file (WAL lets it read while others write).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from router.store import Store, StoreError

T = TypeVar("T")
log = logging.getLogger(__name__)

# What a database call can raise: the store's own errors (its StoreError family), SQLite's when
# one slips through, and the OS's (a full disk, a folder made read-only).
DB_ERRORS: tuple[type[BaseException], ...] = (StoreError, sqlite3.Error, OSError)


def describe_db_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


class TuiDatabase:
    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open_store = open_store
        self._store: Store | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tui-db")

    def _call(self, fn: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = self._open_store()
        return fn(self._store)

    async def run(self, fn: Callable[[Store], T]) -> T:
        """fn(store) on the database thread; its exception (a DB_ERRORS one, usually) is raised here."""
        return await asyncio.wrap_future(self._executor.submit(self._call, fn))

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def aclose(self) -> None:
        try:
            await asyncio.wrap_future(self._executor.submit(self._close))
        except DB_ERRORS as exc:
            log.warning("closing the TUI's database connection failed: %s", exc)
        finally:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        state: Any = "open" if self._store is not None else "not opened yet"
        return f"TuiDatabase({state})"
