"""Storage under real processes: three writers at once, two first starts at once, kill -9 in the
middle of a transaction, a full disk (PRAGMA max_page_count) and a read-only data directory.

The other processes are `tests/router/storage_child.py`; what they print after a commit is what
counts as acknowledged.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.rules import Rule
from router.store import SCHEMA_VERSION, BackendRecord, Store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def child(*args: object, env: dict[str, str] | None = None, **kw) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.router.storage_child", *map(str, args)],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        **kw,
    )


def acked(out: str, what: str) -> list[str]:
    return [line.split()[2] for line in out.splitlines() if line.startswith(f"ack {what} ")]


def wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float = 60.0) -> list[str]:
    """Lines read until `wanted` (inclusive); fails if the child ends first."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"child ended before {wanted!r}: {seen[-5:]} {proc.stderr.read()[-2000:]}")
        seen.append(line.rstrip("\n"))
        if line.startswith(wanted):
            return seen
    pytest.fail(f"no {wanted!r} within {timeout} s")


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def column(db: Path, sql: str) -> list:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute(sql)]
    finally:
        conn.close()


def drop_file_privileges() -> None:
    """As root, permission bits don't bind: drop the capabilities that bypass them (Linux), so a
    read-only folder is read-only for the child too. Runs in the child before exec."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


# ---------------------------------------------------------------- contention


def test_three_processes_write_at_once_without_a_single_locked_error(tmp_path: Path, fake_upstream) -> None:
    db, go = tmp_path / "wb.db", tmp_path / "go"
    tags, rounds = ("p0", "p1", "p2"), 25
    store = Store.open(db)
    store.save_backend(
        BackendRecord(
            "up",
            "openai-compatible",
            fake_upstream.openai_url,
            {"retries": 0, "connect_timeout": 5.0, "deadline": 20.0},
        )
    )
    store.set_cloud_routing(True)  # off in a new data directory
    for tag in tags:
        store.add_rule(Rule(f"{tag}-model", "up"))
    store.close()
    procs = [child("contend", db, tag, rounds, go, env={"MLXWB_KEY_UP": "sk-upstream-0123456789"}) for tag in tags]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]

    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert [line for line in out.splitlines() if line.startswith("failed")] == []
    rules = set(column(db, "SELECT id FROM rules"))
    for tag, (out, _) in zip(tags, outs, strict=True):
        acked_rules = {int(i) for i in acked(out, "rule")}
        assert len(acked_rules) == rounds and acked_rules <= rules
        answered = [line.split()[1] for line in out.splitlines() if line.startswith("answered ")]
        assert len(answered) == rounds
        logged = column(db, f"SELECT request_id FROM request_log WHERE front_end = '{tag}' AND status = 'ok'")
        assert sorted(logged) == sorted(answered)  # one row per answered request, none twice
    assert integrity(db) == "ok"


def test_processes_starting_at_once_on_an_empty_folder_all_open_it(tmp_path: Path) -> None:
    for attempt in range(4):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        db, go = folder / "wb.db", folder / "go"
        procs = [child("open", db, go) for _ in range(4)]
        time.sleep(0.3)
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-3000:]
            assert len(acked(out, "rule")) == 1
        assert column(db, "PRAGMA user_version") == [SCHEMA_VERSION]
        assert len(column(db, "SELECT id FROM rules")) == 4
        assert column(db, "SELECT count(*) FROM meta") == [1]


# ---------------------------------------------------------------- kill -9


def test_kill_9_inside_a_transaction_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "wb.db"
    store = Store.open(db)
    kept = [store.add_rule(Rule(f"kept-{i}", "local")).id for i in range(10)]
    store.close()
    proc = child("hold", db, 120)
    wait_for_line(proc, "in-tx")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert integrity(db) == "ok"
    patterns = column(db, "SELECT pattern FROM rules")
    assert column(db, "SELECT id FROM rules") == kept
    assert not any(p.startswith("uncommitted-") for p in patterns)
    after = Store.open(db)  # the dead process's lock is gone; the file was not moved aside
    assert after.notices == [] and after.add_rule(Rule("after", "local")).id
    after.close()


def test_kill_9_at_random_moments_of_a_write_loop(tmp_path: Path) -> None:
    db = tmp_path / "wb.db"
    rng = random.Random(15)
    all_rules: set[int] = set()
    all_logs: set[str] = set()
    for _ in range(4):
        proc = child("loop", db)
        wait_for_line(proc, "ack rule")
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert "failed" not in out and "Traceback" not in err, err[-3000:]
        all_rules |= {int(i) for i in acked(out, "rule")}
        all_logs |= set(acked(out, "log"))
        assert integrity(db) == "ok"
        assert all_rules <= set(column(db, "SELECT id FROM rules"))
        assert all_logs <= set(column(db, "SELECT request_id FROM request_log"))
    assert len(all_rules) > 4  # the loop did get to write between the kills
    store = Store.open(db)
    assert store.notices == []
    store.close()


# ---------------------------------------------------------------- full disk


def test_full_disk_is_an_error_line_and_the_file_stays_where_it_is(tmp_path: Path) -> None:
    db = tmp_path / "data" / "workbench.db"
    store = Store.open(db)
    before = [store.add_rule(Rule(f"before-{i}", "local")).id for i in range(5)]
    store.close()

    proc = child("fill", db)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not save the rule") and "is full" in lines[0], err
    filled = [int(i) for i in acked(out, "rule")]
    assert filled  # some rules fitted before the disk was full

    assert sorted(p.name for p in db.parent.iterdir() if ".corrupt" in p.name) == []
    assert integrity(db) == "ok"
    assert column(db, "SELECT id FROM rules") == before + filled
    # Space returns (a connection without the page limit): the command works, the data is all there.
    added = cli("rules", "add", "after-full", "--backend", "local")
    assert added.returncode == 0, added.stderr
    listed = cli("rules", "list")
    assert listed.returncode == 0 and "after-full" in listed.stdout and "before-4" in listed.stdout


# ---------------------------------------------------------------- read-only data directory


def test_read_only_data_folder_is_an_error_line_not_a_traceback(tmp_path: Path, isolated_env: Path) -> None:
    db = isolated_env / "workbench.db"
    store = Store.open(db)
    store.add_rule(Rule("keep-me", "local"))
    store.close()
    original = db.read_bytes()
    os.chmod(isolated_env, 0o555)
    try:
        for args in (("rules", "list"), ("rules", "add", "new", "--backend", "local"), ("chat", "hello", "-m", "x")):
            result = cli(*args, preexec_fn=drop_file_privileges)
            assert result.returncode == 1, result
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "read-only" in lines[0], result.stderr
            assert "Traceback" not in result.stderr
    finally:
        os.chmod(isolated_env, 0o755)
    assert sorted(p.name for p in isolated_env.iterdir()) == ["workbench.db"]
    assert db.read_bytes() == original
    assert cli("rules", "list").stdout.count("keep-me") == 1


def test_read_only_folder_without_a_database_says_it_cannot_create_one(isolated_env: Path) -> None:
    os.chmod(isolated_env, 0o555)
    try:
        result = cli("rules", "list", preexec_fn=drop_file_privileges)
    finally:
        os.chmod(isolated_env, 0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot create the database") and "Permission denied" in result.stderr


def test_damaged_file_in_a_read_only_folder_is_reported_and_left_alone(isolated_env: Path) -> None:
    db = isolated_env / "workbench.db"
    db.write_bytes(b"not a database at all" * 200)
    os.chmod(isolated_env, 0o555)
    try:
        result = cli("rules", "list", preexec_fn=drop_file_privileges)
    finally:
        os.chmod(isolated_env, 0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is damaged" in result.stderr and "could not be moved aside" in result.stderr
    assert db.read_bytes() == b"not a database at all" * 200
    # With a writable folder it is moved aside, and the note names where it went.
    moved = cli("rules", "list")
    assert moved.returncode == 0
    [aside] = [p for p in isolated_env.iterdir() if ".corrupt-" in p.name]
    assert f"moved aside to {aside}" in moved.stderr and aside.read_bytes() == b"not a database at all" * 200
