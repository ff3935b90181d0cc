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
from router.store import BackendRecord
from router.workbench import Workbench
from tests.fixtures.fake_upstream import OPENAI_PATH, FakeUpstream

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"retries": 0, "fail_max": 2, "reset_timeout": 300.0, "deadline": 5.0}


def cli(*argv: str) -> str:
    """`mlx-workbench ...` in another process, on the same data directory (MLXWB_DATA_DIR)."""
    done = subprocess.run([sys.executable, "-m", "tui.cli", *argv], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=90)
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
    assert _health("openai")["state"] == "open"
    wb.reset_breaker("openai")
    assert (_health("openai")["state"], _health("openai")["consecutive_failures"]) == ("closed", 0)


async def test_successful_requests_write_no_breaker_state(wb: Workbench, monkeypatch) -> None:
    writes: list[str] = []
    for name in ("save_breaker", "add_breaker_failure"):
        real = getattr(wb.store, name)
        monkeypatch.setattr(wb.store, name, lambda *a, _real=real, _name=name, **k: (writes.append(_name),
                                                                                     _real(*a, **k))[1])
    for _ in range(5):
        await collect(wb.router.route(ask()))
    assert writes == []


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
