"""SQLite storage through sqlite-utils: backends, rules, settings, request log, conversations.

One file, WAL, mode 0600, schema version in PRAGMA user_version. API keys are never stored here.
A Store's connection is bound to the thread that opened it (the event loop's). Writes that must
not hold the loop (the request log, chat turns) go through `store.writer`: one thread with its
own connection (router/writer.py). Every write is a BEGIN IMMEDIATE transaction under one retry
policy, and every SQLite error comes out as a `StoreError` in the user's terms (router/database.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from router.database import (
    RetryPolicy,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreReadOnlyError,
    connect,
    is_damage,
    write,
)
from router.rules import Rule, Step
from router.writer import WriteFailed, Writer

__all__ = [
    "BackendRecord",
    "Conversation",
    "RequestRecord",
    "RetryPolicy",
    "Store",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreError",
    "StoreFullError",
    "StoreIOError",
    "StoreReadOnlyError",
    "WriteFailed",
    "Writer",
]

T = TypeVar("T")
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "token", "authorization")


@dataclass
class BackendRecord:
    name: str
    kind: str  # "openai" | "anthropic" | "openai-compatible"
    base_url: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    created_at: float | None = None


@dataclass
class RequestRecord:
    front_end: str
    protocol: str
    model: str
    rule_id: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    final_backend: str | None = None
    final_model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    status: str = "ok"  # ok | error | cancelled
    error: str | None = None
    prompt: str | None = None
    id: int | None = None
    at: float | None = None
    request_id: str | None = None
    latency_s: float | None = None


_LOG_COLUMNS = tuple(f.name for f in fields(RequestRecord) if f.name != "id")
_LOG_INSERT = f"INSERT INTO request_log ({', '.join(_LOG_COLUMNS)}) VALUES ({', '.join('?' * len(_LOG_COLUMNS))})"


@dataclass
class Conversation:
    title: str
    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    system_prompt: str = ""
    id: int | None = None
    created_at: float | None = None
    updated_at: float | None = None


def _v1(db: Any) -> None:
    db["backends"].create(
        {"name": str, "kind": str, "base_url": str, "settings": str, "enabled": int, "created_at": float}, pk="name"
    )
    db["rules"].create(
        {
            "id": int,
            "pattern": str,
            "backend": str,
            "model": str,
            "fallbacks": str,
            "priority": int,
            "enabled": int,
            "note": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
    )
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["meta"].create({"key": str, "value": int}, pk="key")
    db["meta"].insert({"key": "config_version", "value": 0})
    db["request_log"].create(
        {
            "id": int,
            "at": float,
            "request_id": str,
            "front_end": str,
            "protocol": str,
            "model": str,
            "rule_id": int,
            "attempts": str,
            "final_backend": str,
            "final_model": str,
            "tokens_in": int,
            "tokens_out": int,
            "ttft_s": float,
            "tokens_per_s": float,
            "latency_s": float,
            "status": str,
            "error": str,
            "prompt": str,
        },
        pk="id",
    )
    db["request_log"].create_index(["at"])
    db["conversations"].create(
        {
            "id": int,
            "title": str,
            "model": str,
            "system_prompt": str,
            "messages": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
    )


def _v2_cloud_switch_and_breakers(db: Any) -> None:
    """Breaker state shared by every process on this file, and the cloud routing switch.

    The switch is off for a new database. One that was already in use (it holds backends, rules,
    settings, conversations or logged requests) keeps cloud routing on: an upgrade must not change
    where prompts go."""
    db["breakers"].create(
        {
            "backend": str,
            "state": str,
            "failures": int,
            "opened_at": float,
            "last_error": str,
            "last_error_at": float,
            "updated_at": float,
        },
        pk="backend",
    )
    used = any(
        db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
        for t in ("backends", "rules", "settings", "conversations", "request_log")
    )
    if used:
        db.execute("INSERT OR IGNORE INTO settings (key, value) VALUES ('cloud_routing', 'true')")


# Migrations in order; MIGRATIONS[i] brings user_version i to i + 1. Adding one is one function
# and one list entry: they run in one BEGIN IMMEDIATE transaction, so two processes opening an
# old (or empty) file at once cannot both apply them.
MIGRATIONS: list[Callable[[Any], None]] = [_v1, _v2_cloud_switch_and_breakers]
SCHEMA_VERSION = len(MIGRATIONS)


def _secret_keys(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """Setting names (also inside nested tables such as extra_headers) that look like credentials."""
    found = []
    for k, v in settings.items():
        norm = str(k).lower().replace("-", "_")
        if any(w in norm for w in _SECRET_WORDS) or norm in ("x_api_key", "authorization"):
            found.append(prefix + str(k))
        elif isinstance(v, dict):
            found += _secret_keys(v, f"{prefix}{k}.")
    return found


def _chmod_private(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def _prepare_location(path: Path) -> None:
    """The folder exists and the file is a private regular file, or a clear StoreError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder for the database {path}: {exc.strerror or exc}") from None
    if path.exists() and not path.is_file():
        raise StoreError(f"the database path {path} is not a file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreReadOnlyError(f"the database {path} is not readable and writable by this user; nothing was changed")
    if not path.exists():
        # Created private before SQLite opens it: SQLite gives -wal/-shm the main file's mode,
        # and there is no window in which the file is world-readable under a lax umask.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreReadOnlyError(
                f"cannot create the database {path}: {exc.strerror or exc} (is the folder {path.parent} writable?)"
            ) from None


def _damage(conn: Any) -> str | None:
    """Why the file is not a healthy database ("file is not a database", a failed quick_check),
    or None. Any other error (locked, unreadable, missing companions) is raised, not "damage"."""
    import sqlite3

    try:
        conn.execute("PRAGMA user_version").fetchone()
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise
    if rows != [("ok",)]:
        return "quick_check: " + "; ".join(str(r[0]) for r in rows[:3])
    return None


def _move_aside(path: Path, why: str) -> str:
    """Rename the damaged file (and its -wal/-shm) out of the way; the notice that says where."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return f"the database {path} was damaged ({why}); another mlx-workbench process moved it aside"
    except OSError as exc:
        raise StoreDamagedError(
            f"the database {path} is damaged ({why}) and could not be moved aside ({exc.strerror or exc}); "
            "move or delete it yourself. Nothing was changed"
        ) from None
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{path}{suffix}")
        try:
            extra.rename(Path(f"{aside}{suffix}"))
        except FileNotFoundError:
            pass  # no companion: nothing to take along
        except OSError as exc:
            raise StoreDamagedError(
                f"the damaged database {path} was moved to {aside}, but {extra} could not "
                f"follow it ({exc.strerror or exc}); move it yourself"
            ) from None
    return f"the database {path} was damaged ({why}); it was moved aside to {aside} and a fresh one was created"


class Store:
    def __init__(
        self,
        db: Any,
        path: Path,
        *,
        log_prompts: bool = False,
        max_rows: int = 10000,
        max_age_days: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.db = db
        self.path = path
        self.notices: list[str] = []
        self.log_prompts = log_prompts
        self.max_rows = max_rows
        self.max_age_days = max_age_days
        self.policy = policy or RetryPolicy()
        self._own_writes = 0
        self._inserts = 0
        self._seen_data_version: int | None = None
        self._data_version_memo: tuple[int, int] | None = None  # (writer jobs done, data_version)
        self._config_version = 0
        self._writer: Writer[Store] | None = None

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, *, policy: RetryPolicy | None = None, **kw: Any) -> Store:
        """Open (creating, checking and migrating) the database. Raises StoreError, never moves a
        healthy file: only damage found here moves it aside, with a notice in `store.notices`."""
        path = Path(path).expanduser()
        policy = policy or RetryPolicy()
        _prepare_location(path)
        notices: list[str] = []
        check = connect(path, policy, read_only=True)
        try:
            why = policy.run(lambda: _damage(check), path, "read the database")
        finally:
            check.close()
        if why is not None:
            notices.append(_move_aside(path, why))
            _prepare_location(path)
        store = cls._over(connect(path, policy), path, policy=policy, **kw)
        store.notices = notices
        try:
            store._set_up()
            _chmod_private(path)
            store._config_version = store._read_config_version()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def attach(cls, path: str | Path, *, policy: RetryPolicy | None = None, **kw: Any) -> Store:
        """A second connection (another thread's) to a database that `open` has already set up."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"the database {path} is gone (moved or deleted while mlx-workbench was running)")
        policy = policy or RetryPolicy()
        return cls._over(connect(path, policy), path, policy=policy, **kw)

    @classmethod
    def _over(cls, conn: Any, path: Path, **kw: Any) -> Store:
        import sqlite_utils

        return cls(sqlite_utils.Database(conn), path, **kw)

    def _set_up(self) -> None:
        version = self._read("read the database", lambda: self._user_version())
        self._refuse_newer(version)
        mode = self._read(
            "switch the database to WAL", lambda: self.db.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        )
        if str(mode).lower() != "wal":
            raise StoreError(f"the database {self.path} cannot use WAL mode (journal mode stays {mode})")
        if version < SCHEMA_VERSION:
            self.write(self._migrate, what="set up the database")

    def _user_version(self) -> int:
        return int(self.db.conn.execute("PRAGMA user_version").fetchone()[0])

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} was written by a newer mlx-workbench (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade mlx-workbench or point MLXWB_DB at another file. It was not changed."
            )

    def _migrate(self, db: Any) -> None:
        # Read again under the write lock: another process may have migrated since we looked.
        version = self._user_version()
        self._refuse_newer(version)
        for step in MIGRATIONS[version:SCHEMA_VERSION]:
            step(db)
        if version < SCHEMA_VERSION:
            db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close(timeout=self.policy.busy_timeout_s * self.policy.attempts + 5)
        self.db.close()

    # ------------------------------------------------------------ reading and writing

    def write(self, fn: Callable[[Any], T], *, what: str = "save the change") -> T:
        """`fn(db)` in one BEGIN IMMEDIATE transaction under the retry policy (so it may run again
        after a lock timeout). SQLite errors come out as StoreError; `what` words the message."""
        return self.policy.run(lambda: write(self.db.conn, lambda: fn(self.db)), self.path, what)

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        return self.policy.run(fn, self.path, what)

    @property
    def writer(self) -> Writer[Store]:
        """This store's single writer thread (started on first use, stopped by close())."""
        if self._writer is None:
            opts: dict[str, Any] = {
                "log_prompts": self.log_prompts,
                "max_rows": self.max_rows,
                "max_age_days": self.max_age_days,
            }
            path, policy, attach = self.path, self.policy, type(self).attach
            self._writer = Writer(lambda: attach(path, policy=policy, **opts), name=f"store-writer {path.name}")
        return self._writer

    def _written(self) -> None:
        """Read-your-writes: before reading what the writer writes, let it finish what we gave it."""
        if self._writer is not None and self._writer.pending:
            self._writer.flush(self.policy.busy_timeout_s)

    # ------------------------------------------------------------ change detection

    def _read_config_version(self) -> int:
        row = self._read(
            "read the database",
            lambda: self.db.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone(),
        )
        return int(row[0]) if row else 0

    def _bump(self) -> None:
        """Inside a write transaction: mark rules/backends/settings as changed for every reader."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'config_version'")
        self._own_writes += 1

    def change_token(self) -> tuple[int, int]:
        """Cheap: one PRAGMA, plus one tiny read only when some connection has committed."""
        dv = self._data_version()
        if dv != self._seen_data_version:
            self._config_version = self._read_config_version()
            self._seen_data_version = dv
        return (self._config_version, self._own_writes)

    # ------------------------------------------------------------ backends

    @staticmethod
    def _backend(row: dict[str, Any]) -> BackendRecord:
        return BackendRecord(
            name=row["name"],
            kind=row["kind"],
            base_url=row["base_url"],
            settings=json.loads(row["settings"] or "{}"),
            enabled=bool(row["enabled"]),
            created_at=row["created_at"],
        )

    def list_backends(self) -> list[BackendRecord]:
        return self._read(
            "read the backends", lambda: [self._backend(r) for r in self.db["backends"].rows_where(order_by="name")]
        )

    def get_backend(self, name: str) -> BackendRecord | None:
        rows = self._read("read the backends", lambda: list(self.db["backends"].rows_where("name = ?", [name])))
        return self._backend(rows[0]) if rows else None

    def save_backend(self, rec: BackendRecord) -> BackendRecord:
        bad = _secret_keys(rec.settings)
        if bad:
            raise ValueError(f"backend settings must not hold secrets ({', '.join(bad)}); use `mlx-workbench keys set`")
        if rec.name == "local":
            raise ValueError("'local' is the built-in MLX engine; choose another name")
        rec.created_at = rec.created_at or time.time()
        row = {
            "name": rec.name,
            "kind": rec.kind,
            "base_url": rec.base_url,
            "settings": json.dumps(rec.settings),
            "enabled": int(rec.enabled),
            "created_at": rec.created_at,
        }

        def save(db: Any) -> None:
            db["backends"].upsert(row, pk="name")
            self._bump()

        self.write(save, what=f"save the backend {rec.name!r}")
        return rec

    def delete_backend(self, name: str) -> bool:
        """Remove the backend and its shared breaker state (a backend added later under the same
        name starts closed)."""
        # Breaker writes still queued on the writer must land before, not after a re-add.
        self._written()

        def delete(db: Any) -> int:
            n = db.execute("DELETE FROM backends WHERE name = ?", [name]).rowcount
            db.execute("DELETE FROM breakers WHERE backend = ?", [name])
            if n:
                self._bump()
            return int(n)

        return bool(self.write(delete, what=f"delete the backend {name!r}"))

    # ------------------------------------------------------------ rules

    @staticmethod
    def _rule(row: dict[str, Any]) -> Rule:
        return Rule(
            pattern=row["pattern"],
            backend=row["backend"],
            model=row["model"],
            fallbacks=[Step(s["backend"], s.get("model")) for s in json.loads(row["fallbacks"] or "[]")],
            priority=row["priority"],
            enabled=bool(row["enabled"]),
            note=row["note"] or "",
            id=row["id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    @staticmethod
    def _rule_row(rule: Rule) -> dict[str, Any]:
        return {
            "pattern": rule.pattern,
            "backend": rule.backend,
            "model": rule.model,
            "fallbacks": json.dumps([asdict(s) for s in rule.fallbacks]),
            "priority": rule.priority,
            "enabled": int(rule.enabled),
            "note": rule.note,
            "created_at": rule.created_at,
            "updated_at": rule.updated_at,
        }

    def list_rules(self) -> list[Rule]:
        return self._read("read the rules", lambda: [self._rule(r) for r in self.db["rules"].rows_where(order_by="id")])

    def get_rule(self, rule_id: int) -> Rule | None:
        rows = self._read("read the rules", lambda: list(self.db["rules"].rows_where("id = ?", [rule_id])))
        return self._rule(rows[0]) if rows else None

    def add_rule(self, rule: Rule) -> Rule:
        now = time.time()
        rule.created_at, rule.updated_at = now, now

        def add(db: Any) -> int:
            pk = db["rules"].insert(self._rule_row(rule)).last_pk
            self._bump()
            return int(pk)

        rule.id = self.write(add, what=f"save the rule {rule.pattern!r}")
        return rule

    def update_rule(self, rule: Rule) -> Rule:
        rule.updated_at = time.time()

        def update(db: Any) -> None:
            if rule.id is None or db.execute("SELECT 1 FROM rules WHERE id = ?", [rule.id]).fetchone() is None:
                raise KeyError(f"no rule with id {rule.id}")
            db["rules"].update(rule.id, self._rule_row(rule))
            self._bump()

        self.write(update, what=f"save the rule {rule.pattern!r}")
        return rule

    def delete_rule(self, rule_id: int) -> bool:
        def delete(db: Any) -> int:
            n = db.execute("DELETE FROM rules WHERE id = ?", [rule_id]).rowcount
            if n:
                self._bump()
            return int(n)

        return bool(self.write(delete, what=f"delete the rule #{rule_id}"))

    # ------------------------------------------------------------ settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._read(
            "read the settings", lambda: self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        )
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        def save(db: Any) -> None:
            db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
            self._bump()

        self.write(save, what=f"save the setting {key!r}")

    # ------------------------------------------------------------ cloud switch and shared breakers

    def cloud_routing(self) -> bool:
        """Whether cloud backends may be used (off for a new database)."""
        return bool(self.get_setting("cloud_routing", False))

    def set_cloud_routing(self, on: bool) -> None:
        self.set_setting("cloud_routing", bool(on))

    def breaker_rows(self, *, wait_for_writer: bool = True) -> dict[str, dict[str, Any]]:
        """Every backend's shared breaker state: {name: {state, failures, opened_at, last_error, ...}}.
        By default it first lets this store's writer finish what it was given (read-your-writes);
        the event loop's breaker cache does not wait (router/breakers.py overlays its own writes)."""
        if wait_for_writer:
            self._written()
        return self._read("read the breaker states", lambda: {r["backend"]: r for r in self._rows("breakers")})

    def _rows(self, table: str) -> list[dict[str, Any]]:
        """A whole table as dicts in one statement: sqlite-utils' `db[table].rows` first looks the
        schema up (three more queries) and `db.query` adds a savepoint; the breaker states are read
        so on every request after another connection (the writer's request log) committed."""
        cursor = self.db.execute(f"SELECT * FROM [{table}]")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def breaker_version(self) -> tuple[int, int]:
        """Changes whenever another connection committed anything, or this one changed the
        backends (cheap: one PRAGMA; SQLite's data_version does not move for our own commits)."""
        return self._data_version(), self._own_writes

    def _data_version(self) -> int:
        """SQLite's data_version (it moves when another connection commits), read once per turn of
        the event loop: routing one request asks about ten times (rules, backends, breakers), 12 us
        each. A commit by this store's writer thread since is noticed at once (its count of jobs
        done moves first); another process's commit, at the next turn."""
        writer = self._writer
        done = writer.written + writer.failed if writer is not None else 0
        memo = self._data_version_memo
        if memo is not None and memo[0] == done:
            return memo[1]
        version = int(self._read("read the database", lambda: self.db.execute("PRAGMA data_version").fetchone()[0]))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return version  # no loop (the CLI): nothing to share the answer with
        self._data_version_memo = (done, version)
        loop.call_soon(self._forget_data_version)
        return version

    def _forget_data_version(self) -> None:
        self._data_version_memo = None

    @staticmethod
    def _backend_exists(db: Any, backend: str) -> bool:
        return db.execute("SELECT 1 FROM backends WHERE name = ?", [backend]).fetchone() is not None

    def save_breaker(self, backend: str, **values: Any) -> bool:
        """Write only the given fields of one backend's breaker row (no change-token bump: breaker
        moves must not make every process reload rules and rebuild backends). False, and nothing
        written, when the backend is gone (a request still running on a removed backend must not
        bring its row back)."""

        def save(db: Any) -> bool:
            if not self._backend_exists(db, backend):
                return False
            db["breakers"].upsert({"backend": backend, **values, "updated_at": time.time()}, pk="backend")
            return True

        return self.write(save, what=f"save the breaker state of {backend!r}")

    def add_breaker_failure(self, backend: str, error: str | None) -> int | None:
        """Count one failure atomically (two processes failing at once both count); the new count,
        or None (nothing written) when the backend is gone."""
        now = time.time()

        def count(db: Any) -> Any:
            if not self._backend_exists(db, backend):
                return None
            db.execute(
                "INSERT INTO breakers (backend, state, failures, last_error, last_error_at, updated_at) "
                "VALUES (?, 'closed', 1, ?, ?, ?) ON CONFLICT(backend) DO UPDATE SET failures = failures + 1, "
                "last_error = excluded.last_error, last_error_at = excluded.last_error_at, "
                "updated_at = excluded.updated_at",
                [backend, error, now, now],
            )
            return db.execute("SELECT failures FROM breakers WHERE backend = ?", [backend]).fetchone()

        row = self.write(count, what=f"count a failure of {backend!r}")
        return None if row is None else int(row[0])

    # ------------------------------------------------------------ request log

    def log_request(self, rec: RequestRecord) -> int:
        """Write one request-log row now, on this thread. The router uses `log_request_later`."""
        rec.at = rec.at or time.time()
        # In _LOG_COLUMNS' order: replacing a key keeps its place in a dict.
        row = {**{name: getattr(rec, name) for name in _LOG_COLUMNS}, "attempts": json.dumps(rec.attempts)}
        if not self.log_prompts:
            row["prompt"] = None
        values = list(row.values())
        # A plain INSERT: sqlite-utils' insert() reads the table's schema again for every row
        # (0.22 ms of the writer's CPU per request, against 0.05 ms).
        rec.id = self.write(lambda db: int(db.execute(_LOG_INSERT, values).lastrowid), what="write the request log")
        self._inserts += 1
        if self._inserts % 100 == 0:
            self.prune()
        return rec.id

    def log_request_later(
        self, rec: RequestRecord, on_failed: Callable[[WriteFailed], None] | None = None
    ) -> concurrent.futures.Future[int]:
        """Hand the row to the writer thread and return at once; never raises, never blocks.
        A row that cannot be written is logged and reported to `on_failed` (on the caller's loop)."""
        rec.at = rec.at or time.time()
        row = replace(rec, attempts=[dict(a) for a in rec.attempts])  # flat dicts: deepcopy is 10x the time

        def log(store: Store) -> int:
            rec.id = store.log_request(row)
            return rec.id

        return self.writer.submit(log, what="write the request log", detail=rec.request_id, on_failed=on_failed)

    def recent_requests(self, limit: int = 100, after_id: int | None = None) -> list[RequestRecord]:
        self._written()
        where, args = ("id > ?", [after_id]) if after_id is not None else (None, [])
        rows = self._read(
            "read the request log",
            lambda: list(self.db["request_log"].rows_where(where, args, order_by="id desc", limit=limit)),
        )
        out = []
        for r in rows:
            r = dict(r)
            r["attempts"] = json.loads(r["attempts"] or "[]")
            out.append(RequestRecord(**r))
        return out

    def prune(self) -> int:
        cutoff = time.time() - self.max_age_days * 86400

        def prune(db: Any) -> int:
            n = db.execute("DELETE FROM request_log WHERE at < ?", [cutoff]).rowcount
            n += db.execute(
                "DELETE FROM request_log WHERE id <= (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [self.max_rows],
            ).rowcount
            return int(n)

        return self.write(prune, what="trim the request log")

    # ------------------------------------------------------------ conversations

    def save_conversation(self, conv: Conversation) -> Conversation:
        now = time.time()
        conv.created_at = conv.created_at or now
        conv.updated_at = now
        row = {
            "title": conv.title,
            "model": conv.model,
            "system_prompt": conv.system_prompt,
            "messages": json.dumps(conv.messages),
            "created_at": conv.created_at,
            "updated_at": now,
        }

        def save(db: Any) -> int:
            if conv.id is None:
                return int(db["conversations"].insert(row).last_pk)
            db["conversations"].upsert({"id": conv.id, **row}, pk="id")
            return conv.id

        conv.id = self.write(save, what=f"save the conversation {conv.title!r}")
        return conv

    async def asave_conversation(self, conv: Conversation) -> Conversation:
        """save_conversation on the writer thread: the loop stays free. The messages are copied
        now, so the caller may go on appending to them. Await the first save of a new
        conversation before the next one: it assigns `conv.id`. Raises StoreError."""
        snapshot = replace(conv, messages=copy.deepcopy(conv.messages))
        saved = await self.writer.run(
            lambda store: store.save_conversation(snapshot), what=f"save the conversation {conv.title!r}"
        )
        conv.id, conv.created_at, conv.updated_at = saved.id, saved.created_at, saved.updated_at
        return conv

    def _conversation(self, r: dict[str, Any]) -> Conversation:
        return Conversation(
            title=r["title"],
            model=r["model"],
            messages=json.loads(r["messages"] or "[]"),
            system_prompt=r["system_prompt"] or "",
            id=r["id"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        self._written()
        rows = self._read(
            "read the conversations",
            lambda: list(self.db["conversations"].rows_where(order_by="updated_at desc", limit=limit)),
        )
        return [self._conversation(r) for r in rows]

    def get_conversation(self, conv_id: int) -> Conversation | None:
        self._written()
        rows = self._read(
            "read the conversations", lambda: list(self.db["conversations"].rows_where("id = ?", [conv_id]))
        )
        return self._conversation(rows[0]) if rows else None

    def delete_conversation(self, conv_id: int) -> bool:
        return bool(
            self.write(
                lambda db: db.execute("DELETE FROM conversations WHERE id = ?", [conv_id]).rowcount,
                what=f"delete the conversation #{conv_id}",
            )
        )
