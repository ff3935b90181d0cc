"""A request-log row that cannot be written never costs the answer (issue 15, item 3).

The router answers through the fake upstream; the store under it finds the disk full, or another
process holds the write lock past the retry policy. The answer is delivered whole, streamed or not;
the failure is logged and published on the EventBus as a `WriteFailed`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.types import ChatRequest, Message, collect
from router.config import AppConfig
from router.events import RequestFinished
from router.rules import Rule
from router.store import BackendRecord, RetryPolicy, Store, WriteFailed
from router.workbench import Workbench
from tests.fixtures.fake_upstream import OPENAI_DEFAULT_TEXT
from tests.router.storage_fixtures import FullDiskStore, hold_lock

UP = {"retries": 0, "connect_timeout": 5.0, "deadline": 20.0}


def ask(request_id: str, stream: bool = True) -> ChatRequest:
    return ChatRequest(
        model="gpt-x",
        messages=[Message("user", "hello")],
        max_tokens=8,
        stream=stream,
        metadata={"request_id": request_id},
    )


def workbench(tmp_path: Path, store: Store, upstream_url: str, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    monkeypatch.setenv("MLXWB_KEY_UP", "sk-upstream-0123456789")
    store.save_backend(BackendRecord("up", "openai-compatible", upstream_url, dict(UP)))
    store.add_rule(Rule("gpt-*", "up"))
    store.set_cloud_routing(True)  # off in a new data directory
    config = AppConfig(engine=EngineConfig(data_dir=tmp_path, model_dirs=[], scan_hf_cache=False), db_path=store.path)
    return Workbench(config, store)


def logged_ids(store: Store) -> set[str | None]:
    return {r.request_id for r in store.recent_requests(limit=100000) if r.front_end != "filler"}


async def test_answers_arrive_whole_when_the_disk_is_full(tmp_path, fake_upstream, monkeypatch, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="router.writer")
    wb = workbench(tmp_path, FullDiskStore.open(tmp_path / "wb.db"), fake_upstream.openai_url, monkeypatch)
    events = wb.events.subscribe()
    try:
        streamed = await collect(wb.router.route(ask("streamed")))
        whole = await collect(wb.router.route(ask("whole", stream=False)))
        assert streamed.text == OPENAI_DEFAULT_TEXT and whole.text == OPENAI_DEFAULT_TEXT
        failures: list[WriteFailed] = []
        finished: list[RequestFinished] = []
        while len(failures) < 2:
            event = await asyncio.wait_for(events.get(), 30)
            failures += [event] if isinstance(event, WriteFailed) else []
            finished += [event] if isinstance(event, RequestFinished) else []
        assert [(f.detail, f.kind, f.what) for f in failures] == [
            ("streamed", "full", "write the request log"),
            ("whole", "full", "write the request log"),
        ]
        assert [f.status for f in finished] == ["ok", "ok"]
        assert "is full" in failures[0].error
        messages = [r.getMessage() for r in caplog.records]
        assert any("streamed" in m and "is full" in m for m in messages)
        assert logged_ids(wb.store) == set()
    finally:
        events.close()
        await wb.aclose()


async def test_answers_arrive_while_another_process_holds_the_lock(tmp_path, fake_upstream, monkeypatch) -> None:
    path = tmp_path / "wb.db"
    store = Store.open(path, policy=RetryPolicy(busy_timeout_s=0.3, attempts=2, pause_s=0.01))
    wb = workbench(tmp_path, store, fake_upstream.openai_url, monkeypatch)
    wb.router.rules()  # rules and backends read before the lock is taken
    wb.backends()
    failures: list[WriteFailed] = []
    wb.events.add_callback(lambda e: failures.append(e) if isinstance(e, WriteFailed) else None)
    holder = hold_lock(path, 120)
    try:
        result = await collect(wb.router.route(ask("during-lock")))
        assert result.text == OPENAI_DEFAULT_TEXT
        assert holder.poll() is None  # answered while the other process still held the lock
        wb.store.writer.flush(30)
        await _yield_to_callbacks()
        assert [(f.detail, f.kind) for f in failures] == [("during-lock", "busy")]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    await collect(wb.router.route(ask("after-lock")))
    assert logged_ids(wb.store) == {"after-lock"}
    await wb.aclose()


async def _yield_to_callbacks() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)
