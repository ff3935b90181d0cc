"""How the store talks to SQLite: errors in the user's terms, one retry policy, write transactions.

Every write is one `BEGIN IMMEDIATE` transaction: it takes the write lock before reading anything,
so SQLite's busy handler can wait for another process instead of failing at once (a plain `BEGIN`
that reads first cannot be upgraded once someone else has committed, and fails immediately with
"database is locked" whatever the busy timeout). What is left over (a lock held past the busy
timeout, WAL recovery by another process) is retried by `RetryPolicy`, the only retry loop.

SQLite's errors become `StoreError`s that say what happened (busy, disk full, read-only, damaged,
I/O) and that nothing was changed; none of them means "move the file aside", except damage found
when the file is opened (see `Store.open`).
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Primary result codes (extended codes carry them in the low byte).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26


class StoreError(RuntimeError):
    """The database could not be used; the message says why and what to do. Data is left in place."""

    kind = "error"


class StoreBusyError(StoreError):
    """Another process held the database past the retry policy; try again."""

    kind = "busy"


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full; what was saved before is intact."""

    kind = "full"


class StoreReadOnlyError(StoreError):
    """The file, its -wal/-shm companions or their folder cannot be written by this user."""

    kind = "read-only"


class StoreDamagedError(StoreError):
    """SQLite says the file is damaged or is not a database."""

    kind = "damaged"


class StoreIOError(StoreError):
    """The operating system reported an I/O error."""

    kind = "io"


def primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.Error):
        return False
    code = primary_code(exc)
    if code is not None:
        return code in (_BUSY, _LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def is_damage(exc: BaseException) -> bool:
    """True only for "this file is damaged / not a database", never for locks, space or permissions."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = primary_code(exc)
    if code is not None:
        return code in (_CORRUPT, _NOTADB)
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


def _folder_writable(path: Path) -> bool:
    return os.access(path.parent, os.W_OK | os.X_OK)


def store_error(exc: sqlite3.Error, path: Path, what: str) -> StoreError:
    """`exc` in the user's terms: what could not be done, why, and that the data is where it was."""
    code = primary_code(exc)
    why = str(exc)
    if is_busy(exc):
        return StoreBusyError(
            f"could not {what}: the database {path} stayed locked by another process "
            f"({why}); nothing was changed, try again"
        )
    if code == _FULL:
        return StoreFullError(
            f"could not {what}: the disk holding {path} is full ({why}); free some space "
            "and try again. What was saved before is intact"
        )
    if code in (_READONLY, _PERM) or (code == _CANTOPEN and not _folder_writable(path)):
        return StoreReadOnlyError(
            f"could not {what}: the database {path} or its folder is read-only for this "
            f"user ({why}); SQLite also needs to create {path.name}-wal and "
            f"{path.name}-shm next to it. Nothing was changed"
        )
    if code == _CANTOPEN:
        return StoreError(
            f"could not {what}: cannot open the database {path} or its {path.name}-wal / "
            f"{path.name}-shm files ({why}); check they are files this user can read and write"
        )
    if is_damage(exc):
        return StoreDamagedError(
            f"could not {what}: the database {path} is damaged ({why}); it was left in "
            "place. Restart mlx-workbench to have it checked and moved aside"
        )
    if code == _IOERR:
        return StoreIOError(
            f"could not {what}: the disk reported an I/O error on {path} ({why}); nothing else was changed"
        )
    return StoreError(f"could not {what}: {why} (database {path})")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a write waits for another process: SQLite's own busy handler for `busy_timeout_s`
    per attempt, then a short random pause, at most `attempts` times. Only lock errors are retried:
    a full disk or a read-only file does not get better by trying again at once."""

    busy_timeout_s: float = 5.0
    attempts: int = 3
    pause_s: float = 0.05

    def run(self, op: Callable[[], T], path: Path, what: str) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return op()
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise store_error(exc, path, what) from exc
                if attempt == self.attempts:
                    raise store_error(exc, path, what) from exc
                log.info("database %s busy (%s) on attempt %d to %s; retrying", path, exc, attempt, what)
                time.sleep(self.pause_s * attempt * (0.5 + random.random()))
        raise AssertionError("unreachable: the loop returns or raises")


def connect(path: Path, policy: RetryPolicy, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection bound to this thread, with the policy's busy timeout (no statement run yet).
    Read-only, it never writes or deletes anything (a read-write connection to a damaged file
    deletes its -wal on close)."""
    target = f"{path.absolute().as_uri()}?mode=ro" if read_only else str(path)
    try:
        return sqlite3.connect(target, timeout=policy.busy_timeout_s, uri=read_only)
    except sqlite3.Error as exc:
        raise store_error(exc, path, "open the database") from exc


def write(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """`body` inside one BEGIN IMMEDIATE transaction; committed, or rolled back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # SQLite may already have rolled back (disk full, I/O error)
                log.debug("rollback after a failed write: %s", exc)
        raise
    return result
