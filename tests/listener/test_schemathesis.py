"""Schemathesis over the listener's OpenAPI schema (tools and content lists included): no 5xx.

The listener runs in its own thread and loop (the store's SQLite connection belongs to the
thread that opened it), routed to the tiny local model, so every answer is a real one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from engine.config import EngineConfig
from router.config import AppConfig
from router.listener import Listener
from router.rules import Rule
from router.workbench import Workbench


@pytest.fixture
def listener_url(tmp_path: Path, tiny_models_dir: Path):
    ready: dict[str, str] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        wb = Workbench.open(
            AppConfig(engine=EngineConfig(data_dir=tmp_path / "d", model_dirs=[tiny_models_dir], scan_hf_cache=False))
        )
        wb.store.add_rule(Rule("*", "local", model="tiny-llama-mlx"))
        lst = Listener(wb, "127.0.0.1", 0)
        await lst.start()
        ready["url"] = lst.url
        started.set()
        await stop.wait()
        await lst.stop()
        await wb.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(60)
    yield ready["url"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def test_no_generated_request_gets_a_5xx(listener_url: str) -> None:
    schema = schemathesis.openapi.from_url(listener_url + "/openapi.json")
    failures = []
    calls: list[tuple[str, int]] = []
    fuzzed = {"tools": 0, "content lists": 0}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(timeout=60)
            calls.append((case.path, response.status_code))
            if isinstance(case.body, dict):
                fuzzed["tools"] += bool(case.body.get("tools"))
                fuzzed["content lists"] += any(
                    isinstance(m, dict) and isinstance(m.get("content"), list) for m in case.body.get("messages") or []
                )
            if response.status_code >= 500:
                failures.append((case.method, case.path, case.body, response.status_code, response.text[:300]))

        check()
    assert not failures, failures[:3]
    assert {p for p, _ in calls} >= {"/v1/chat/completions", "/v1/messages", "/v1/models", "/health"}
    assert any(status == 200 for p, status in calls if p == "/v1/chat/completions")
    assert all(fuzzed.values()), fuzzed
