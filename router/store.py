"""SQLite storage through sqlite-utils: backends, rules, settings, request log, conversations.

One file, WAL, mode 0600, schema version in PRAGMA user_version. API keys are never stored here.
The connection is bound to the thread that opened it: use a Store from the event-loop thread only
(a thread that needs the DB opens its own Store on the same file).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from router.rules import Rule, Step

SCHEMA_VERSION = 2
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "token", "authorization")


class StoreError(RuntimeError):
    """The database cannot be used; the message says why and what to do. The file is untouched."""


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
    db["backends"].create({"name": str, "kind": str, "base_url": str, "settings": str, "enabled": int,
                           "created_at": float}, pk="name")
    db["rules"].create({"id": int, "pattern": str, "backend": str, "model": str, "fallbacks": str,
                        "priority": int, "enabled": int, "note": str, "created_at": float, "updated_at": float},
                       pk="id")
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["meta"].create({"key": str, "value": int}, pk="key")
    db["meta"].insert({"key": "config_version", "value": 0})
    db["request_log"].create({
        "id": int, "at": float, "request_id": str, "front_end": str, "protocol": str, "model": str,
        "rule_id": int, "attempts": str, "final_backend": str, "final_model": str, "tokens_in": int,
        "tokens_out": int, "ttft_s": float, "tokens_per_s": float, "latency_s": float, "status": str,
        "error": str, "prompt": str}, pk="id")
    db["request_log"].create_index(["at"])
    db["conversations"].create({"id": int, "title": str, "model": str, "system_prompt": str, "messages": str,
                                "created_at": float, "updated_at": float}, pk="id")


def _v2_cloud_switch_and_breakers(db: Any) -> None:
    """Breaker state shared by every process on this file, and the cloud routing switch.

    The switch is off for a new database. One that was already in use (it holds backends, rules,
    settings, conversations or logged requests) keeps cloud routing on: an upgrade must not change
    where prompts go."""
    db["breakers"].create({"backend": str, "state": str, "failures": int, "opened_at": float,
                           "last_error": str, "last_error_at": float, "updated_at": float}, pk="backend")
    used = any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()
               for t in ("backends", "rules", "settings", "conversations", "request_log"))
    if used:
        db.execute("INSERT OR IGNORE INTO settings (key, value) VALUES ('cloud_routing', 'true')")


# Migrations in order; MIGRATIONS[i] brings user_version i to i + 1.
MIGRATIONS: list[Callable[[Any], None]] = [_v1, _v2_cloud_switch_and_breakers]


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


class Store:
    def __init__(self, db: Any, path: Path, *, log_prompts: bool = False, max_rows: int = 10000,
                 max_age_days: float = 30.0) -> None:
        self.db = db
        self.path = path
        self.notices: list[str] = []
        self.log_prompts = log_prompts
        self.max_rows = max_rows
        self.max_age_days = max_age_days
        self._own_writes = 0
        self._inserts = 0
        self._seen_data_version: int | None = None
        self._config_version = 0

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, **kw: Any) -> "Store":
        import sqlite_utils

        path = Path(path).expanduser()
        notices: list[str] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for the database {path}: {exc.strerror or exc}") from None
        if path.exists() and not path.is_file():
            raise StoreError(f"the database path {path} is not a file")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"the database {path} is not readable and writable by this user")
        version = cls._peek_version(path)
        if version == "corrupt":
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                extra = Path(f"{path}{suffix}")
                if extra.exists():
                    extra.replace(Path(f"{aside}{suffix}"))
            notices.append(f"the database {path} was damaged or not SQLite; it was moved aside to {aside} "
                           "and a fresh one was created")
            version = 0
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise StoreError(
                f"the database {path} was written by a newer mlx-workbench (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade mlx-workbench or point MLXWB_DB at another file. It was not changed."
            )
        try:
            if not path.exists():
                # Created private before SQLite opens it: SQLite gives -wal/-shm the main file's mode,
                # and there is no window in which the file is world-readable under a lax umask.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(str(path))
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            db.execute("PRAGMA busy_timeout = 5000")
            store = cls(db, path, **kw)
            store.notices = notices
            store._migrate(int(version))
        except (sqlite3.OperationalError, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from None
        _chmod_private(path)
        store._config_version = store._read_config_version()
        return store

    @staticmethod
    def _peek_version(path: Path) -> int | str:
        """user_version without writing anything; "corrupt" if the file is not a healthy SQLite DB."""
        if not path.exists() or path.stat().st_size == 0:
            return 0
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return "corrupt"
        return version if ok == "ok" else "corrupt"

    def _migrate(self, version: int) -> None:
        while version < SCHEMA_VERSION:
            with self.db.atomic():
                MIGRATIONS[version](self.db)
                version += 1
                self.db.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ change detection

    def _read_config_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()
        return int(row[0]) if row else 0

    def _bump(self) -> None:
        """Inside a write transaction: mark rules/backends/settings as changed for every reader."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE key = 'config_version'")
        self._own_writes += 1

    def change_token(self) -> tuple[int, int]:
        """Cheap: one PRAGMA, plus one tiny read only when some connection has committed."""
        dv = self.db.execute("PRAGMA data_version").fetchone()[0]
        if dv != self._seen_data_version:
            self._seen_data_version = dv
            self._config_version = self._read_config_version()
        return (self._config_version, self._own_writes)

    # ------------------------------------------------------------ backends

    @staticmethod
    def _backend(row: dict[str, Any]) -> BackendRecord:
        return BackendRecord(name=row["name"], kind=row["kind"], base_url=row["base_url"],
                             settings=json.loads(row["settings"] or "{}"), enabled=bool(row["enabled"]),
                             created_at=row["created_at"])

    def list_backends(self) -> list[BackendRecord]:
        return [self._backend(r) for r in self.db["backends"].rows_where(order_by="name")]

    def get_backend(self, name: str) -> BackendRecord | None:
        rows = list(self.db["backends"].rows_where("name = ?", [name]))
        return self._backend(rows[0]) if rows else None

    def save_backend(self, rec: BackendRecord) -> BackendRecord:
        bad = _secret_keys(rec.settings)
        if bad:
            raise ValueError(f"backend settings must not hold secrets ({', '.join(bad)}); use `mlx-workbench keys set`")
        if rec.name == "local":
            raise ValueError("'local' is the built-in MLX engine; choose another name")
        rec.created_at = rec.created_at or time.time()
        with self.db.atomic():
            self.db["backends"].upsert({"name": rec.name, "kind": rec.kind, "base_url": rec.base_url,
                                        "settings": json.dumps(rec.settings), "enabled": int(rec.enabled),
                                        "created_at": rec.created_at}, pk="name")
            self._bump()
        return rec

    def delete_backend(self, name: str) -> bool:
        with self.db.atomic():
            n = self.db.execute("DELETE FROM backends WHERE name = ?", [name]).rowcount
            if n:
                self._bump()
        return bool(n)

    # ------------------------------------------------------------ rules

    @staticmethod
    def _rule(row: dict[str, Any]) -> Rule:
        return Rule(pattern=row["pattern"], backend=row["backend"], model=row["model"],
                    fallbacks=[Step(s["backend"], s.get("model")) for s in json.loads(row["fallbacks"] or "[]")],
                    priority=row["priority"], enabled=bool(row["enabled"]), note=row["note"] or "",
                    id=row["id"], created_at=row["created_at"], updated_at=row["updated_at"])

    @staticmethod
    def _rule_row(rule: Rule) -> dict[str, Any]:
        return {"pattern": rule.pattern, "backend": rule.backend, "model": rule.model,
                "fallbacks": json.dumps([asdict(s) for s in rule.fallbacks]), "priority": rule.priority,
                "enabled": int(rule.enabled), "note": rule.note, "created_at": rule.created_at,
                "updated_at": rule.updated_at}

    def list_rules(self) -> list[Rule]:
        return [self._rule(r) for r in self.db["rules"].rows_where(order_by="id")]

    def get_rule(self, rule_id: int) -> Rule | None:
        rows = list(self.db["rules"].rows_where("id = ?", [rule_id]))
        return self._rule(rows[0]) if rows else None

    def add_rule(self, rule: Rule) -> Rule:
        now = time.time()
        rule.created_at, rule.updated_at = now, now
        with self.db.atomic():
            rule.id = self.db["rules"].insert(self._rule_row(rule)).last_pk
            self._bump()
        return rule

    def update_rule(self, rule: Rule) -> Rule:
        if rule.id is None or self.get_rule(rule.id) is None:
            raise KeyError(f"no rule with id {rule.id}")
        rule.updated_at = time.time()
        with self.db.atomic():
            self.db["rules"].update(rule.id, self._rule_row(rule))
            self._bump()
        return rule

    def delete_rule(self, rule_id: int) -> bool:
        with self.db.atomic():
            n = self.db.execute("DELETE FROM rules WHERE id = ?", [rule_id]).rowcount
            if n:
                self._bump()
        return bool(n)

    # ------------------------------------------------------------ settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        with self.db.atomic():
            self.db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")
            self._bump()

    # ------------------------------------------------------------ cloud switch and shared breakers

    def cloud_routing(self) -> bool:
        """Whether cloud backends may be used (off for a new database)."""
        return bool(self.get_setting("cloud_routing", False))

    def set_cloud_routing(self, on: bool) -> None:
        self.set_setting("cloud_routing", bool(on))

    def breaker_rows(self) -> dict[str, dict[str, Any]]:
        """Every backend's shared breaker state: {name: {state, failures, opened_at, last_error, ...}}."""
        return {r["backend"]: r for r in self.db["breakers"].rows}

    def breaker_version(self) -> int:
        """Changes whenever any connection committed anything (cheap: one PRAGMA)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def save_breaker(self, backend: str, **values: Any) -> None:
        """Write only the given fields of one backend's breaker row (no change-token bump: breaker
        moves must not make every process reload rules and rebuild backends)."""
        with self.db.atomic():
            self.db["breakers"].upsert({"backend": backend, **values, "updated_at": time.time()}, pk="backend")

    def add_breaker_failure(self, backend: str, error: str | None) -> int:
        """Count one failure atomically (two processes failing at once both count); the new count."""
        now = time.time()
        with self.db.atomic():
            self.db.execute(
                "INSERT INTO breakers (backend, state, failures, last_error, last_error_at, updated_at) "
                "VALUES (?, 'closed', 1, ?, ?, ?) ON CONFLICT(backend) DO UPDATE SET failures = failures + 1, "
                "last_error = excluded.last_error, last_error_at = excluded.last_error_at, "
                "updated_at = excluded.updated_at", [backend, error, now, now])
            row = self.db.execute("SELECT failures FROM breakers WHERE backend = ?", [backend]).fetchone()
        return int(row[0])

    # ------------------------------------------------------------ request log

    def log_request(self, rec: RequestRecord) -> int:
        rec.at = rec.at or time.time()
        row = {k: v for k, v in asdict(rec).items() if k != "id"}
        row["attempts"] = json.dumps(rec.attempts)
        if not self.log_prompts:
            row["prompt"] = None
        with self.db.atomic():
            rec.id = self.db["request_log"].insert(row).last_pk
        self._inserts += 1
        if self._inserts % 100 == 0:
            self.prune()
        return rec.id

    def recent_requests(self, limit: int = 100, after_id: int | None = None) -> list[RequestRecord]:
        where, args = ("id > ?", [after_id]) if after_id is not None else (None, [])
        rows = self.db["request_log"].rows_where(where, args, order_by="id desc", limit=limit)
        out = []
        for r in rows:
            r = dict(r)
            r["attempts"] = json.loads(r["attempts"] or "[]")
            out.append(RequestRecord(**r))
        return out

    def prune(self) -> int:
        cutoff = time.time() - self.max_age_days * 86400
        with self.db.atomic():
            n = self.db.execute("DELETE FROM request_log WHERE at < ?", [cutoff]).rowcount
            n += self.db.execute(
                "DELETE FROM request_log WHERE id <= (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [self.max_rows],
            ).rowcount
        return n

    # ------------------------------------------------------------ conversations

    def save_conversation(self, conv: Conversation) -> Conversation:
        now = time.time()
        conv.created_at = conv.created_at or now
        conv.updated_at = now
        row = {"title": conv.title, "model": conv.model, "system_prompt": conv.system_prompt,
               "messages": json.dumps(conv.messages), "created_at": conv.created_at, "updated_at": now}
        with self.db.atomic():
            if conv.id is None:
                conv.id = self.db["conversations"].insert(row).last_pk
            else:
                self.db["conversations"].upsert({"id": conv.id, **row}, pk="id")
        return conv

    def _conversation(self, r: dict[str, Any]) -> Conversation:
        return Conversation(title=r["title"], model=r["model"], messages=json.loads(r["messages"] or "[]"),
                            system_prompt=r["system_prompt"] or "", id=r["id"], created_at=r["created_at"],
                            updated_at=r["updated_at"])

    def list_conversations(self, limit: int = 50) -> list[Conversation]:
        return [self._conversation(r) for r in
                self.db["conversations"].rows_where(order_by="updated_at desc", limit=limit)]

    def get_conversation(self, conv_id: int) -> Conversation | None:
        rows = list(self.db["conversations"].rows_where("id = ?", [conv_id]))
        return self._conversation(rows[0]) if rows else None

    def delete_conversation(self, conv_id: int) -> bool:
        with self.db.atomic():
            return bool(self.db.execute("DELETE FROM conversations WHERE id = ?", [conv_id]).rowcount)
