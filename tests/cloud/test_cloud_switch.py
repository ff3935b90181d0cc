"""The cloud routing switch: off in a new data directory, on for a database that predates it, and
while off no request reaches a cloud upstream, from the CLI or either listener protocol."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from router.store import Store
from tests.fixtures.fake_upstream import ANTHROPIC_PATH, OPENAI_PATH, FakeUpstream
from tui.cli import main

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _v1_database(path: Path, *, with_a_backend: bool) -> None:
    """A database as the workbench wrote it before the switch existed (schema 1)."""
    from router import store as store_mod

    db = sqlite3.connect(path)
    try:
        import sqlite_utils

        store_mod._v1(sqlite_utils.Database(db))
        if with_a_backend:
            db.execute(
                "INSERT INTO backends (name, kind, base_url, settings, enabled, created_at) "
                "VALUES ('openai', 'openai', 'https://api.openai.com/v1', '{}', 1, 0)"
            )
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()


def test_new_database_starts_off_and_an_older_one_in_use_stays_on(tmp_path: Path) -> None:
    fresh = Store.open(tmp_path / "new.db")
    assert fresh.cloud_routing() is False
    fresh.close()
    _v1_database(tmp_path / "old.db", with_a_backend=True)
    old = Store.open(tmp_path / "old.db")
    assert old.cloud_routing() is True  # an upgrade does not change where prompts go
    old.set_cloud_routing(False)
    old.close()
    assert Store.open(tmp_path / "old.db").cloud_routing() is False  # the user's choice is kept


def test_an_older_database_never_used_starts_off(tmp_path: Path) -> None:
    _v1_database(tmp_path / "empty.db", with_a_backend=False)
    assert Store.open(tmp_path / "empty.db").cloud_routing() is False


def test_cli_status_on_off(capsys) -> None:
    code, out, _ = run(capsys, "cloud", "status", "--json")
    assert code == 0 and json.loads(out)["cloud_routing"] is False
    code, out, _ = run(capsys, "backends", "add", "openai", "--kind", "openai")
    assert code == 0 and "cloud routing is off" in out and "mlx-workbench cloud on" in out
    assert "cloud routing is on" in run(capsys, "cloud", "on")[1]
    assert json.loads(run(capsys, "cloud", "status", "--json")[1]) == {
        "cloud_routing": True,
        "cloud_backends": ["openai"],
    }
    code, out, _ = run(capsys, "backends", "add", "other", "--kind", "anthropic")
    assert "cloud routing is off" not in out
    assert "cloud routing is off" in run(capsys, "cloud", "off")[1]
    assert "cloud routing is off" in run(capsys, "cloud", "status")[1]


def _cloud_only_setup(capsys, upstream: FakeUpstream) -> None:
    for argv in (
        ("backends", "add", "openai", "--kind", "openai", "--base-url", upstream.openai_url),
        ("backends", "add", "anthropic", "--kind", "anthropic", "--base-url", upstream.anthropic_url),
        ("rules", "add", "gpt-*", "--backend", "openai", "--fallback", "anthropic:claude-fake"),
        ("rules", "add", "claude-*", "--backend", "anthropic"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 0, err


def test_explain_and_cli_chat_skip_every_cloud_step_while_off(capsys, fake_upstream: FakeUpstream) -> None:
    _cloud_only_setup(capsys, fake_upstream)
    code, out, _ = run(capsys, "rules", "explain", "gpt-4o", "--json")
    explained = json.loads(out)
    assert explained["cloud_routing"] is False
    assert [(s["backend"], s["skipped"], s["reason"]) for s in explained["chain"]] == [
        ("openai", True, "cloud routing is off"),
        ("anthropic", True, "cloud routing is off"),
    ]
    assert "skipped: cloud routing is off" in run(capsys, "rules", "explain", "gpt-4o")[1]
    code, out, err = run(capsys, "chat", "hello", "--model", "gpt-4o")
    assert code == 1
    assert "cloud routing is off" in err and "mlx-workbench cloud on" in err
    assert fake_upstream.count() == 0
    assert run(capsys, "cloud", "on")[0] == 0
    code, out, err = run(capsys, "chat", "hello", "--model", "gpt-4o")
    assert code == 0, err
    assert "Hello from fake openai" in out and fake_upstream.count(OPENAI_PATH) == 1


def _serve() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "serve", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("mlx-workbench listening on "), line + (proc.stderr.read() if proc.stderr else "")
    return proc, line.split()[3]


def test_both_listener_protocols_send_nothing_upstream_while_off(capsys, fake_upstream: FakeUpstream) -> None:
    _cloud_only_setup(capsys, fake_upstream)
    proc, url = _serve()
    try:
        openai_body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        anthropic_body = {"model": "claude-3", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        for stream in (False, True):
            r = httpx.post(url + "/v1/chat/completions", json={**openai_body, "stream": stream}, timeout=60)
            assert r.status_code == 503 and "cloud routing is off" in r.text, r.text
            r = httpx.post(url + "/v1/messages", json={**anthropic_body, "stream": stream}, timeout=60)
            assert r.status_code == 503 and "mlx-workbench cloud on" in r.text, r.text
        assert fake_upstream.count() == 0
        # The running listener follows a switch flipped by another process on its next request.
        assert run(capsys, "cloud", "on")[0] == 0
        r = httpx.post(url + "/v1/chat/completions", json=openai_body, timeout=60)
        assert r.status_code == 200 and fake_upstream.count(OPENAI_PATH) == 1
        r = httpx.post(url + "/v1/messages", json=anthropic_body, timeout=60)
        assert r.status_code == 200 and fake_upstream.count(ANTHROPIC_PATH) == 1
        assert run(capsys, "cloud", "off")[0] == 0
        r = httpx.post(url + "/v1/chat/completions", json=openai_body, timeout=60)
        assert r.status_code == 503 and fake_upstream.count() == 2
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
