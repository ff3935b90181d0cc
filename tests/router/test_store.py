"""The SQLite store: schema, WAL and 0600, CRUD, damaged / newer / unwritable files, change detection."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from router.rules import Rule, Step
from router.store import (
    SCHEMA_VERSION,
    BackendRecord,
    Conversation,
    RequestRecord,
    RetryPolicy,
    Store,
    StoreBusyError,
    StoreError,
    StoreFullError,
    WriteFailed,
)
from tests.router.storage_fixtures import FullDiskStore, hold_lock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "wb.db")
    yield s
    s.close()


def test_fresh_db_has_schema_wal_and_private_mode(store: Store) -> None:
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert {"backends", "rules", "settings", "request_log", "conversations"} <= set(store.db.table_names())


def test_rules_round_trip(store: Store) -> None:
    r = store.add_rule(
        Rule("gpt-*", "openai", model=None, fallbacks=[Step("anthropic", "claude-x")], priority=3, note="cloud")
    )
    assert r.id is not None and r.created_at
    got = store.get_rule(r.id)
    assert got.fallbacks == [Step("anthropic", "claude-x")] and got.priority == 3 and got.note == "cloud"
    got.enabled = False
    store.update_rule(got)
    assert store.get_rule(r.id).enabled is False
    assert store.delete_rule(r.id) and store.get_rule(r.id) is None and not store.delete_rule(r.id)


def test_backends_round_trip_and_refuse_secrets(store: Store) -> None:
    store.save_backend(BackendRecord("openai", "openai", "https://api.openai.com/v1", {"retries": 3}))
    assert store.get_backend("openai").settings == {"retries": 3}
    with pytest.raises(ValueError, match="must not hold secrets"):
        store.save_backend(BackendRecord("x", "openai", "http://h", {"api_key": "sk-123"}))
    with pytest.raises(ValueError, match="built-in"):
        store.save_backend(BackendRecord("local", "openai", "http://h"))
    assert store.delete_backend("openai") and store.list_backends() == []


def test_conversations_and_settings(store: Store) -> None:
    c = store.save_conversation(Conversation("t", "demo", [{"role": "user", "content": "hi"}], "be brief"))
    c.messages.append({"role": "assistant", "content": "hello"})
    store.save_conversation(c)
    assert store.get_conversation(c.id).messages[-1]["content"] == "hello"
    assert [x.id for x in store.list_conversations()] == [c.id]
    store.set_setting("default_backend", "openai")
    assert store.get_setting("default_backend") == "openai" and store.get_setting("nope", 5) == 5


def test_request_log_is_bounded_and_keeps_no_prompt_by_default(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "log.db", max_rows=20)
    for i in range(250):
        s.log_request(
            RequestRecord(
                "tui", "canonical", f"m{i}", prompt="secret question", attempts=[{"backend": "local", "outcome": "ok"}]
            )
        )
    s.prune()
    rows = s.recent_requests(limit=1000)
    assert len(rows) == 20 and rows[0].model == "m249"
    assert rows[0].attempts == [{"backend": "local", "outcome": "ok"}]
    assert all(r.prompt is None for r in rows)
    old = RequestRecord("tui", "canonical", "ancient", at=1.0)
    s.log_request(old)
    s.prune()
    assert "ancient" not in {r.model for r in s.recent_requests(limit=1000)}
    s.close()
    kept = Store.open(tmp_path / "log2.db", log_prompts=True)
    kept.log_request(RequestRecord("tui", "canonical", "m", prompt="q"))
    assert kept.recent_requests()[0].prompt == "q"
    kept.close()


def test_garbage_file_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    junk = b"this is not sqlite at all" * 100
    path.write_bytes(junk)
    s = Store.open(path)
    assert s.notices and "moved aside" in s.notices[0]
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == junk
    s.add_rule(Rule("x", "local"))
    s.close()


def test_truncated_db_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    s = Store.open(path)
    for i in range(300):
        s.add_rule(Rule(f"pattern-{i}-" + "x" * 200, "local"))
    s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    s2 = Store.open(path)
    assert s2.notices and s2.list_rules() == []
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())
    s2.close()


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(StoreError, match="newer mlx-workbench"):
        Store.open(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_unusable_locations_give_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store.open(blocker / "sub" / "wb.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="not a file"):
        Store.open(tmp_path / "dir.db")


def test_change_token_sees_other_connections_and_processes(tmp_path: Path, store: Store) -> None:
    t0 = store.change_token()
    assert store.change_token() == t0
    other = Store.open(store.path)
    other.add_rule(Rule("x", "local"))
    t1 = store.change_token()
    assert t1 != t0
    other.close()
    code = (
        "import sys; from router.store import Store; from router.rules import Rule; "
        "s = Store.open(sys.argv[1]); s.add_rule(Rule('y', 'local')); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(store.path)], check=True, cwd=ROOT, timeout=60)
    assert store.change_token() != t1
    assert {r.pattern for r in store.list_rules()} == {"x", "y"}
    # Request-log writes don't count as configuration changes.
    t2 = store.change_token()
    Store.open(store.path).log_request(RequestRecord("cli", "canonical", "m"))
    assert store.change_token() == t2


async def test_on_the_loop_data_version_is_read_once_per_turn_but_the_own_writer_is_seen_at_once(
    store: Store,
) -> None:
    import asyncio

    other = Store.open(store.path)
    try:
        t0 = store.change_token()
        other.add_rule(Rule("x", "local"))
        # The same turn of the loop: another connection's commit is not looked for again...
        assert store.change_token() == t0
        await asyncio.sleep(0)
        # ...the next turn sees it.
        t1 = store.change_token()
        assert t1 != t0
        # A commit by this store's own writer thread is seen within the same turn: the breaker
        # overlay drops its pending values once the writer's job is done and must read them back.
        version = store.breaker_version()
        store.log_request_later(RequestRecord("listener", "openai", "m"))
        assert store.writer.flush(5)
        assert store.breaker_version() != version
    finally:
        other.close()


def test_files_stay_private_under_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        s = Store.open(tmp_path / "lax.db")
        s.add_rule(Rule("x", "local"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
        s.close()
    finally:
        os.umask(old)
    assert {"lax.db", "lax.db-wal"} <= set(modes)
    assert set(modes.values()) == {0o600}


def test_a_second_migration_is_one_more_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.store as store_mod

    path = tmp_path / "wb.db"
    s = Store.open(path)
    s.add_rule(Rule("keep-me", "local"))
    s.close()

    def v2(db) -> None:
        db["rules"].add_column("tag", str)

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, v2])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    s = Store.open(path)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "tag" in s.db["rules"].columns_dict
    assert [r.pattern for r in s.list_rules()] == ["keep-me"]
    s.close()


def test_a_failing_migration_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.store as store_mod

    path = tmp_path / "wb.db"
    Store.open(path).close()

    def broken(db) -> None:
        db["rules"].add_column("half_done", str)
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, broken])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        Store.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "half_done" not in {r[1] for r in conn.execute("PRAGMA table_info(rules)")}
    conn.close()


def test_request_log_prunes_itself_without_an_explicit_call(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "auto.db", max_rows=10)
    for i in range(100):
        s.log_request(RequestRecord("tui", "canonical", f"m{i}"))
    count = s.db.execute("SELECT count(*) FROM request_log").fetchone()[0]
    assert count == 10
    s.close()


def test_recent_requests_after_id_returns_only_newer(store: Store) -> None:
    ids = [store.log_request(RequestRecord("cli", "openai", f"m{i}", status="ok")) for i in range(5)]
    newer = store.recent_requests(after_id=ids[2])
    assert [r.id for r in newer] == [ids[4], ids[3]]


def test_no_api_key_ever_reaches_the_database_file(tmp_path: Path, memory_keyring) -> None:
    from router.secrets import Secrets

    key = "sk-never-in-sqlite-0123456789"
    path = tmp_path / "wb.db"
    s = Store.open(path)
    Secrets(env={}).set("openai", key)
    s.save_backend(BackendRecord("openai", "openai", "https://api.openai.com/v1", {"retries": 1}))
    for bad in ({"api_key": key}, {"extra_headers": {"Authorization": f"Bearer {key}"}}, {"x-api-key": key}):
        with pytest.raises(ValueError, match="must not hold secrets") as exc:
            s.save_backend(BackendRecord("leaky", "openai", "http://h", bad))
        assert key not in str(exc.value)
    s.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in blob


def test_corrupt_file_takes_its_wal_companions_aside(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    path.write_bytes(b"garbage" * 500)
    Path(f"{path}-wal").write_bytes(b"stale wal")
    s = Store.open(path)
    assert s.list_rules() == [] and len(s.notices) == 1
    asides = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    wal = [n for n in asides if n.endswith("-wal")]
    assert len(wal) == 1 and (tmp_path / wal[0]).read_bytes() == b"stale wal"
    assert b"stale wal" not in Path(f"{path}-wal").read_bytes()
    s.close()


def test_change_token_covers_settings_and_backends_from_elsewhere(store: Store) -> None:
    other = Store.open(store.path)
    t = store.change_token()
    other.set_setting("default_backend", "openai")
    t2 = store.change_token()
    assert t2 != t and store.get_setting("default_backend") == "openai"
    other.save_backend(BackendRecord("b", "openai", "http://h"))
    t3 = store.change_token()
    assert t3 != t2
    assert not other.delete_backend("nope") and store.change_token() == t3  # a no-op write is not a change
    other.delete_backend("b")
    assert store.change_token() != t3
    other.close()
    own = store.change_token()
    store.add_rule(Rule("mine", "local"))
    assert store.change_token() != own


def test_two_stores_interleave_writes_without_locking_errors(tmp_path: Path) -> None:
    a, b = Store.open(tmp_path / "wb.db"), Store.open(tmp_path / "wb.db")
    for i in range(20):
        (a if i % 2 else b).add_rule(Rule(f"r{i}", "local"))
        (b if i % 2 else a).log_request(RequestRecord("cli", "canonical", f"m{i}"))
    assert len(a.list_rules()) == 20 and len(b.recent_requests(limit=100)) == 20
    a.close()
    b.close()


# ---------------------------------------------------------------- errors that are not damage


def test_full_disk_is_a_full_error_and_the_data_stays(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    s = Store.open(path)
    kept = [s.add_rule(Rule(f"kept-{i}", "local")).id for i in range(3)]
    s.db.execute(f"PRAGMA max_page_count = {s.db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreFullError, match=r"could not save the rule .* is full .* intact") as exc:
        for i in range(10000):
            kept.append(s.add_rule(Rule(f"more-{i}-" + "z" * 500, "local")).id)
    assert exc.value.kind == "full"
    with pytest.raises(StoreFullError, match="could not save the conversation"):
        s.save_conversation(Conversation("big", "m", [{"role": "user", "content": "q" * 20000}]))
    assert [r.id for r in s.list_rules()] == kept  # reads still work, nothing half-written
    s.close()
    assert [p.name for p in tmp_path.iterdir() if ".corrupt" in p.name] == []
    again = Store.open(path)  # space is back: a connection without the limit
    assert again.notices == [] and [r.id for r in again.list_rules()] == kept
    again.add_rule(Rule("after", "local"))
    again.close()


def test_a_lock_held_a_moment_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    Store.open(path).close()
    holder = hold_lock(path, 1.0)
    s = Store.open(path)
    rule = s.add_rule(Rule("waited", "local"))  # BEGIN IMMEDIATE: the busy timeout applies
    assert holder.wait(timeout=60) == 0
    patterns = [r.pattern for r in s.list_rules()]
    assert "waited" in patterns and len(patterns) == 51 and rule.id
    s.close()


def test_a_lock_held_past_the_policy_is_a_busy_error_and_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    Store.open(path).close()
    s = Store.open(path, policy=RetryPolicy(busy_timeout_s=0.2, attempts=2, pause_s=0.01))
    holder = hold_lock(path, 60)
    try:
        with pytest.raises(StoreBusyError, match=r"could not save the rule 'late': .* locked by another process"):
            s.add_rule(Rule("late", "local"))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert s.list_rules() == []
    s.close()


# ---------------------------------------------------------------- the writer thread


async def test_log_request_later_returns_at_once_and_readers_see_the_row(store: Store) -> None:
    future = store.log_request_later(RequestRecord("tui", "canonical", "m1", request_id="a1"))
    [row] = store.recent_requests()  # read-your-writes: waits for what this store handed over
    assert future.done() and future.result() == row.id and row.request_id == "a1"
    assert store.writer.written == 1 and store.writer.failed == 0


async def test_writer_reports_a_failed_write_on_the_loop_and_in_the_log(tmp_path: Path, caplog) -> None:
    import asyncio
    import logging
    import threading

    s = FullDiskStore.open(tmp_path / "wb.db")
    seen: list[tuple[WriteFailed, int]] = []
    caplog.set_level(logging.ERROR, logger="router.writer")
    future = s.log_request_later(
        RequestRecord("tui", "canonical", "m", request_id="r" * 12),
        on_failed=lambda e: seen.append((e, threading.get_ident())),
    )
    with pytest.raises(StoreFullError):
        await asyncio.wrap_future(future)
    await asyncio.sleep(0)  # the callback was scheduled on this loop
    [(event, thread)] = seen
    assert thread == threading.get_ident() and event.kind == "full" and event.detail == "r" * 12
    assert event.what == "write the request log" and "is full" in event.error
    assert any("is full" in r.getMessage() and "r" * 12 in r.getMessage() for r in caplog.records)
    assert s.writer.failed == 1
    s.close()
    after = s.log_request_later(RequestRecord("tui", "canonical", "m"))  # closed: reported, not raised
    with pytest.raises(StoreError, match="store is closed"):
        after.result(timeout=5)


async def test_asave_conversation_keeps_a_snapshot_and_sets_the_id(store: Store) -> None:
    conv = Conversation("t", "demo", [{"role": "user", "content": "question"}])
    saved = await store.asave_conversation(conv)
    assert saved is conv and conv.id is not None and conv.created_at
    conv.messages.append({"role": "assistant", "content": "partial", "unfinished": True})
    assert store.get_conversation(conv.id).messages == [{"role": "user", "content": "question"}]
    await store.asave_conversation(conv)
    assert store.get_conversation(conv.id).messages[-1] == {
        "role": "assistant",
        "content": "partial",
        "unfinished": True,
    }
    assert [c.id for c in store.list_conversations()] == [conv.id]


async def test_writer_run_raises_the_store_error_to_the_awaiting_caller(tmp_path: Path) -> None:
    s = FullDiskStore.open(tmp_path / "wb.db")
    with pytest.raises(StoreFullError):
        await s.writer.run(
            lambda w: w.log_request(RequestRecord("x", "canonical", "m", request_id="r" * 12)),
            what="write the request log",
        )
    assert await s.writer.run(lambda w: len(w.list_rules()), what="count") == 0  # the thread lives on
    s.close()
