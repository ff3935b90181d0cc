"""One breaker per backend for every process on the same database (pybreaker storage in SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.types import ChatRequest, Message, UnavailableError, collect
from router.config import AppConfig
from router.events import BreakerChanged, CloudRoutingChanged
from router.rules import Rule, Step
from router.store import BackendRecord, Store
from router.workbench import Workbench
from tests.fixtures.fake_upstream import OPENAI_PATH, FakeUpstream

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"retries": 0, "fail_max": 2, "reset_timeout": 300.0, "deadline": 5.0}


def cli(*argv: str) -> str:
    """`mlx-workbench ...` in another process, on the same data directory (MLXWB_DATA_DIR)."""
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, capture_output=True, text=True, check=False, timeout=90
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ask(model: str = "smart") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", "hi")], max_tokens=8)


@pytest.fixture
async def wb(isolated_env: Path, fake_upstream: FakeUpstream):
    from router.config import load_config

    bench = Workbench.open(load_config(None))
    assert bench.store.path.parent == isolated_env  # the CLI in another process opens this very file
    bench.set_cloud_routing(True)
    bench.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, dict(SETTINGS)))
    bench.store.add_rule(Rule("smart", "openai", model="gpt-fake", fallbacks=[Step("anthropic")]))
    await bench.prepare()
    yield bench
    await bench.aclose()


def _health(name: str) -> dict:
    return next(b for b in json.loads(cli("backends", "health", "--json")) if b["name"] == name)


async def test_failures_here_open_the_breaker_for_the_other_process(wb: Workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, 500)
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await collect(wb.router.route(ask()))
    assert wb.breaker_states()["openai"] == "open"
    wb.store.writer.flush()  # breaker writes leave the loop for the writer thread
    seen = _health("openai")
    assert (seen["state"], seen["consecutive_failures"]) == ("open", 2)
    assert "500" in (seen["last_error"] or "")
    chain = json.loads(cli("rules", "explain", "smart", "--json"))["chain"]
    assert (chain[0]["backend"], chain[0]["state"], chain[0]["reason"]) == ("openai", "open", "breaker open")


async def test_trip_and_reset_from_another_process_act_here(wb: Workbench, fake_upstream) -> None:
    events: list = []
    wb.events.add_callback(events.append)
    await collect(wb.router.route(ask()))
    assert fake_upstream.count() == 1
    cli("backends", "trip", "openai")
    stream = wb.router.route(ask())  # next request: the shared state says open, openai is skipped
    with pytest.raises(UnavailableError, match="openai: breaker open"):
        await collect(stream)
    assert fake_upstream.count() == 1
    assert [(e.event.old, e.event.new) for e in events if isinstance(e, BreakerChanged)] == [("closed", "open")]
    cli("backends", "reset", "openai")
    await collect(wb.router.route(ask()))
    assert fake_upstream.count() == 2
    assert [e.event.new for e in events if isinstance(e, BreakerChanged)] == ["open", "closed"]


async def test_reset_here_is_seen_by_the_other_process(wb: Workbench) -> None:
    wb.trip_breaker("openai")
    wb.store.writer.flush()
    assert _health("openai")["state"] == "open"
    wb.reset_breaker("openai")
    wb.store.writer.flush()
    assert (_health("openai")["state"], _health("openai")["consecutive_failures"]) == ("closed", 0)


async def test_successful_requests_write_no_breaker_state(wb: Workbench, monkeypatch) -> None:
    writes: list[str] = []
    for name in ("save_breaker", "add_breaker_failure"):  # on every Store: the writer thread has its own
        real = getattr(Store, name)
        monkeypatch.setattr(
            Store, name, lambda *a, _real=real, _name=name, **k: (writes.append(_name), _real(*a, **k))[1]
        )
    for _ in range(5):
        await collect(wb.router.route(ask()))
    wb.store.writer.flush()
    assert writes == []
    wb.trip_breaker("openai")  # and the counting does see a change
    wb.store.writer.flush()
    assert writes and set(writes) == {"save_breaker"}  # state, then opened-at


async def test_a_process_follows_the_switch_flipped_elsewhere_and_publishes_it(wb: Workbench) -> None:
    events: list = []
    wb.events.add_callback(events.append)
    cli("cloud", "off")
    wb.sync()  # what a UI timer calls: no request needed to notice
    assert [e.enabled for e in events if isinstance(e, CloudRoutingChanged)] == [False]
    assert wb.router.explain("smart").chain[0].reason == "cloud routing is off"


def test_reset_acts_on_a_state_stored_before_this_process_started(tmp_path: Path) -> None:
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path, model_dirs=[], scan_hf_cache=False))
    wb = Workbench.open(cfg)
    try:
        wb.store.save_backend(BackendRecord("remote", "openai", "http://127.0.0.1:9/v1", {}))
        wb.breakers.save("remote", state="open", opened_at=0.0)
        assert wb.breakers.states()["remote"] == "open"
        wb.reset_breaker("remote")
        assert wb.breaker_states()["remote"] == "closed"
        with pytest.raises(KeyError):
            wb.trip_breaker("nope")
    finally:
        wb.store.close()


async def test_removing_a_backend_forgets_its_breaker_in_every_process(wb: Workbench, fake_upstream) -> None:
    url = fake_upstream.openai_url
    wb.trip_breaker("openai")
    wb.store.writer.flush()
    assert _health("openai")["state"] == "open"
    # Removed and added again in another process: the new backend starts closed, there and here.
    cli("backends", "rm", "openai", "--force")  # a rule still uses it
    cli("backends", "add", "openai", "--kind", "openai", "--base-url", url)
    seen = _health("openai")
    assert (seen["state"], seen["consecutive_failures"], seen["last_error"]) == ("closed", 0, None)
    assert wb.breaker_states()["openai"] == "closed"
    await collect(wb.router.route(ask()))
    assert fake_upstream.count() == 1
    # The same in this process, whose breaker cache must not keep the removed row.
    wb.trip_breaker("openai")
    assert wb.breaker_states()["openai"] == "open"
    wb.store.delete_backend("openai")
    wb.store.save_backend(BackendRecord("openai", "openai", url, dict(SETTINGS)))
    assert wb.breaker_states()["openai"] == "closed"
    assert wb.store.breaker_rows() == {}


async def test_a_failure_after_the_backend_was_removed_does_not_bring_its_row_back(wb: Workbench) -> None:
    wb.store.delete_backend("openai")
    wb.breakers.add_failure("openai", "upstream answered 500")
    wb.breakers.save("openai", state="open", opened_at=1.0)
    assert wb.store.breaker_rows() == {}  # waits for the writer: it wrote nothing
    assert wb.breakers.load("openai").state == "closed"


async def test_breaker_writes_never_hold_the_event_loop(wb: Workbench, fake_upstream, monkeypatch) -> None:
    import sqlite3
    import threading

    threads: list[str] = []
    for name in ("save_breaker", "add_breaker_failure"):
        real = getattr(Store, name)
        monkeypatch.setattr(
            Store,
            name,
            lambda *a, _real=real, **k: (threads.append(threading.current_thread().name), _real(*a, **k))[1],
        )
    fake_upstream.set_default(OPENAI_PATH, 500)
    # Another process's long transaction holds the write lock while the breaker counts and opens.
    holder = sqlite3.connect(wb.store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for _ in range(2):
            with pytest.raises(UnavailableError, match="openai: upstream answered 500"):
                await collect(wb.router.route(ask()))
        # Seen here at once (pybreaker reads the count it just wrote), while nothing is committed yet.
        assert wb.breaker_states()["openai"] == "open"
        with pytest.raises(UnavailableError, match="openai: breaker open"):
            await collect(wb.router.route(ask()))
        assert fake_upstream.count() == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wb.store.writer.flush()
    assert threads and threading.current_thread().name not in threads
    row = wb.store.breaker_rows()["openai"]
    assert (row["state"], row["failures"]) == ("open", 2)
    assert _health("openai")["state"] == "open"
