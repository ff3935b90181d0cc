"""Workbench wiring: backends from the store and keyring, rebuilt only on change, breakers kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import EngineConfig
from router.config import AppConfig
from router.events import BackendsChanged, BreakerChanged
from router.store import BackendRecord
from router.workbench import Workbench

FAST = {"retries": 0, "fail_max": 2, "reset_timeout": 30.0}


@pytest.fixture
async def wb(tmp_path: Path, memory_keyring):
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path / "data", model_dirs=[], scan_hf_cache=False))
    bench = Workbench.open(cfg)
    bench.store.save_backend(BackendRecord("openai", "openai", "http://127.0.0.1:9/v1", dict(FAST)))
    bench.secrets.set("openai", "sk-test-openai-0123456789abcdefghij")
    bench.refresh_keys()
    await bench.prepare()  # the key look-ups run off the loop
    yield bench
    await bench.aclose()


async def test_backends_are_local_plus_store_records(wb: Workbench) -> None:
    names = set(wb.backends())
    assert names == {"local", "openai"}
    assert wb.backends() is wb.backends()  # nothing changed: no rebuild


async def test_unrelated_change_keeps_the_backend_and_its_open_breaker(wb: Workbench) -> None:
    events: list[object] = []
    wb.events.add_callback(events.append)
    before = wb.backends()["openai"]
    wb.trip_breaker("openai")
    assert before.snapshot().state == "open"
    assert any(isinstance(e, BreakerChanged) for e in events)
    wb.store.set_setting("theme", "dark")
    after = wb.backends()["openai"]
    assert after is before
    assert after.snapshot().state == "open"
    wb.reset_breaker("openai")
    assert after.snapshot().state == "closed"


async def test_changed_settings_rebuild_the_backend(wb: Workbench) -> None:
    events: list[object] = []
    wb.events.add_callback(events.append)
    before = wb.backends()["openai"]
    wb.store.save_backend(BackendRecord("openai", "openai", "http://127.0.0.1:10/v1", dict(FAST)))
    after = wb.backends()["openai"]
    assert after is not before
    assert any(isinstance(e, BackendsChanged) for e in events)


async def test_breaker_of_an_unknown_backend_is_a_key_error(wb: Workbench) -> None:
    with pytest.raises(KeyError, match="nope"):
        wb.trip_breaker("nope")
    with pytest.raises(KeyError, match="local"):
        wb.reset_breaker("local")


async def test_default_backend_setting_overrides_config(wb: Workbench) -> None:
    assert wb.router.explain("anything").chain[0].backend == "local"
    wb.store.set_setting("default_backend", "openai")
    assert wb.router.explain("anything").chain[0].backend == "openai"


async def test_keyring_look_ups_run_off_the_event_loop(wb: Workbench, memory_keyring, monkeypatch) -> None:
    import threading
    import time

    threads: list[int] = []
    real_get = memory_keyring.get_password

    def slow_get(service: str, username: str) -> str | None:
        threads.append(threading.get_ident())
        time.sleep(0.3)  # a Secret Service over D-Bus can take this long, or much longer
        return real_get(service, username)

    monkeypatch.setattr(memory_keyring, "get_password", slow_get)
    wb.store.save_backend(BackendRecord("second", "openai", "http://127.0.0.1:11/v1", dict(FAST)))
    wb.secrets.set("second", "sk-test-second-0123456789abcdefghij")
    names = set(wb.backends())  # on the loop: must not wait for the keyring
    assert "second" not in names and "openai" in names  # the known one stays usable meanwhile
    assert await wb.prepare() is True
    assert "second" in wb.backends()
    assert threads and threading.get_ident() not in threads
    wb.refresh_keys()  # a key changed: looked up again, off the loop, while the old client serves
    before = wb.backends()["second"]
    assert wb.backends()["second"] is before
    await wb.prepare()
    assert threading.get_ident() not in threads
