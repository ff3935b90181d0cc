"""Routing end to end: the real local engine (tiny model), the loopback fake upstream, real SQLite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.types import ChatRequest, Message, RejectedError, UnavailableError, collect
from router.config import AppConfig
from router.events import BreakerChanged, RequestFinished, RequestStarted
from router.rules import Rule, Step
from router.store import BackendRecord
from router.workbench import Workbench
from tests.fixtures.fake_upstream import ANTHROPIC_PATH, OPENAI_PATH, Reply, openai_text_stream

ROOT = Path(__file__).resolve().parents[2]
FAST = {"retries": 0, "backoff_factor": 0.01, "connect_timeout": 2.0, "first_byte_timeout": 5.0,
        "idle_timeout": 2.0, "total_timeout": 20.0, "fail_max": 2, "reset_timeout": 30.0}


def ask(model: str, **kw) -> ChatRequest:
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return ChatRequest(model=model, messages=[Message("user", "Hello world")], **kw)


@pytest.fixture
async def wb(tmp_path: Path, tiny_models_dir: Path, fake_upstream, memory_keyring):
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path / "data", model_dirs=[tiny_models_dir],
                                        scan_hf_cache=False))
    bench = Workbench.open(cfg)
    bench.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, dict(FAST)))
    bench.store.save_backend(BackendRecord("anthropic", "anthropic", fake_upstream.anthropic_url, dict(FAST)))
    bench.secrets.set("openai", "sk-test-openai-0123456789abcdefghij")
    bench.secrets.set("anthropic", "fake-anthropic-key-0123456789abcdefghij")
    bench.refresh_keys()
    yield bench
    await bench.aclose()


async def test_default_route_serves_local_models(wb: Workbench) -> None:
    stream = wb.router.route(ask("tiny-llama-mlx"))
    result = await collect(stream)
    assert result.backend == "local" and result.model == "tiny-llama-mlx"
    assert [a.outcome for a in stream.trace] == ["ok"]
    [row] = wb.store.recent_requests()
    assert row.status == "ok" and row.final_backend == "local" and row.tokens_out == result.usage.completion_tokens
    assert row.prompt is None


async def test_unknown_model_on_the_default_route_is_not_found(wb: Workbench) -> None:
    with pytest.raises(RejectedError, match="not found locally") as exc:
        await collect(wb.router.route(ask("no-such-model")))
    assert exc.value.status == 404
    assert wb.store.recent_requests()[0].status == "error"


async def test_local_load_failure_fails_over_to_openai(wb: Workbench, tmp_path: Path, tiny_gguf_model: Path) -> None:
    broken_dir = wb.config.engine.model_dirs[0]
    data = tiny_gguf_model.read_bytes()
    broken = tmp_path / "data" / "models" / "broken.gguf"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(data[: len(data) // 2])
    wb.local.refresh_models()
    wb.store.add_rule(Rule("broken", "local", fallbacks=[Step("openai", "gpt-fake")]))
    stream = wb.router.route(ask("broken"))
    result = await collect(stream)
    assert result.text == "Hello from fake openai" and result.backend == "openai"
    assert [a.outcome for a in stream.trace] == ["unavailable", "ok"]
    assert "cannot load broken" in stream.failover_note()
    assert broken_dir.exists()


async def test_openai_503_fails_over_to_anthropic(wb: Workbench, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, 503)
    wb.store.add_rule(Rule("smart", "openai", model="gpt-fake", fallbacks=[Step("anthropic", "claude-fake")]))
    stream = wb.router.route(ask("smart"))
    result = await collect(stream)
    assert result.text == "Hello from fake anthropic" and result.backend == "anthropic"
    assert [(a.backend, a.outcome) for a in stream.trace] == [("openai", "unavailable"), ("anthropic", "ok")]
    row = wb.store.recent_requests()[0]
    assert [a["outcome"] for a in row.attempts] == ["unavailable", "ok"] and row.final_backend == "anthropic"
    assert fake_upstream.requests[0].json["model"] == "gpt-fake"
    assert fake_upstream.requests[1].json["model"] == "claude-fake"


async def test_open_breaker_is_skipped_without_waiting(wb: Workbench, fake_upstream) -> None:
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("local", "tiny-llama-mlx")]))
    wb.trip_breaker("openai")
    await wb.local.load("tiny-llama-mlx")
    before = fake_upstream.count()
    stream = wb.router.route(ask("smart"))
    t0 = time.perf_counter()
    first = await stream.__anext__()
    assert first.backend == "local"
    assert stream.trace[0].outcome == "skipped" and stream.trace[0].latency_s < 0.005
    await stream.aclose()
    assert fake_upstream.count() == before
    assert time.perf_counter() - t0 < 30


async def test_401_is_returned_without_failover(wb: Workbench, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, 401)
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("anthropic")]))
    stream = wb.router.route(ask("smart"))
    with pytest.raises(RejectedError) as exc:
        await collect(stream)
    assert exc.value.status == 401
    assert fake_upstream.count(ANTHROPIC_PATH) == 0
    assert [a.outcome for a in stream.trace] == ["rejected"]
    assert wb.backends()["openai"].snapshot().state == "closed"


async def test_failure_after_first_chunk_ends_with_an_error_chunk(wb: Workbench, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("one two three four five six"), cut_after=3))
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("anthropic")]))
    chunks = [c async for c in wb.router.route(ask("smart"))]
    assert chunks[-1].error is not None and chunks[-1].finish_reason == "error"
    assert any(c.text for c in chunks[:-1])
    assert fake_upstream.count(ANTHROPIC_PATH) == 0
    assert wb.store.recent_requests()[0].status == "error"


async def test_all_unavailable_is_a_503_with_the_trace(wb: Workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, 500)
    fake_upstream.set_default(ANTHROPIC_PATH, 500)
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("anthropic")]))
    with pytest.raises(UnavailableError, match="all backends unavailable: openai: .*; anthropic: ") as exc:
        await collect(wb.router.route(ask("smart")))
    assert exc.value.status == 503


async def test_rule_edited_in_another_process_is_used_next(wb: Workbench) -> None:
    with pytest.raises(RejectedError, match="not found"):
        await collect(wb.router.route(ask("alias")))
    code = ("import sys; from router.store import Store; from router.rules import Rule; "
            "s = Store.open(sys.argv[1]); s.add_rule(Rule('alias', 'local', model='tiny-llama-mlx')); s.close()")
    subprocess.run([sys.executable, "-c", code, str(wb.store.path)], check=True, cwd=ROOT, timeout=60)
    result = await collect(wb.router.route(ask("alias")))
    assert result.backend == "local" and result.model == "tiny-llama-mlx"


async def test_events_are_published_and_a_slow_subscriber_does_not_block(wb: Workbench, fake_upstream) -> None:
    slow = wb.events.subscribe(maxsize=2)
    fast = wb.events.subscribe()
    for _ in range(4):
        await collect(wb.router.route(ask("tiny-llama-mlx")))
    assert slow.dropped > 0
    seen = []
    while not fast._queue.empty():
        seen.append(fast._queue.get_nowait())
    assert sum(isinstance(e, RequestStarted) for e in seen) == 4
    assert sum(isinstance(e, RequestFinished) for e in seen) == 4
    fake_upstream.set_default(OPENAI_PATH, 500)
    wb.store.add_rule(Rule("smart", "openai"))
    for _ in range(2):
        with pytest.raises(UnavailableError):
            await collect(wb.router.route(ask("smart")))
    await asyncio.sleep(0)
    changes = []
    while not fast._queue.empty():
        e = fast._queue.get_nowait()
        if isinstance(e, BreakerChanged):
            changes.append((e.event.backend, e.event.new))
    assert ("openai", "open") in changes


async def test_consumer_closing_early_is_logged_as_cancelled(wb: Workbench) -> None:
    stream = wb.router.route(ask("tiny-llama-mlx", max_tokens=200, temperature=1.0, seed=1))
    await stream.__anext__()
    await stream.aclose()
    row = wb.store.recent_requests()[0]
    assert row.status == "cancelled"


async def test_no_key_anywhere_in_db_or_log(wb: Workbench, fake_upstream, caplog) -> None:
    fake_upstream.script(OPENAI_PATH, 401)
    wb.store.add_rule(Rule("smart", "openai"))
    with pytest.raises(RejectedError) as exc:
        await collect(wb.router.route(ask("smart")))
    await collect(wb.router.route(ask("tiny-llama-mlx")))
    wb.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = wb.store.path.read_bytes()
    for key in ("sk-test-openai-0123456789abcdefghij", "fake-anthropic-key-0123456789abcdefghij"):
        assert key.encode() not in blob
        assert key not in str(exc.value) and key not in caplog.text


# Scripted backends: each path of the router exercised deterministically, no engine or network.

from engine.types import Chunk, ModelNotFoundError  # noqa: E402
from router.events import EventBus  # noqa: E402
from router.router import Router  # noqa: E402
from router.store import Store  # noqa: E402


class Scripted:
    def __init__(self, name: str, kind: str, script: list) -> None:
        self.name, self.kind, self.script = name, kind, script
        self.breaker_state = "closed"
        self.calls = 0
        self.closed_streams = 0

    async def stream(self, req: ChatRequest):
        self.calls += 1
        try:
            for item in self.script:
                if isinstance(item, BaseException):
                    raise item
                if item == "hang":
                    await asyncio.sleep(3600)
                yield Chunk(text=item)
            yield Chunk(finish_reason="stop")
        finally:
            self.closed_streams += 1


@pytest.fixture
def scripted_router(tmp_path: Path):
    store = Store.open(tmp_path / "r.db")
    backends: dict = {}
    router = Router(store, lambda: backends, EventBus())
    yield router, store, backends
    store.close()


async def test_local_not_found_fails_over_only_on_a_longer_chain(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", [ModelNotFoundError("no such local model")])
    backends["openai"] = Scripted("openai", "openai", ["hi"])
    store.add_rule(Rule("m", "local", fallbacks=[Step("openai")]))
    chunks = [c async for c in router.route(ask("m"))]
    assert "".join(c.text or "" for c in chunks) == "hi"
    assert chunks[0].backend == "openai"
    assert backends["local"].closed_streams == 1
    with pytest.raises(ModelNotFoundError):
        await collect(router.route(ask("other")))  # default route: one step, a plain 404


async def test_consumer_closing_early_closes_the_backend_stream(scripted_router) -> None:
    router, store, backends = scripted_router
    local = backends["local"] = Scripted("local", "local", ["a", "hang"])
    stream = router.route(ask("m"))
    first = await stream.__anext__()
    assert first.text == "a"
    await stream.aclose()
    assert local.closed_streams == 1
    row = store.recent_requests(limit=1)[0]
    assert row.status == "cancelled"
