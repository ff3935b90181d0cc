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
from tests.fixtures.fake_upstream import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Reply,
    anthropic_error_event,
    anthropic_text_stream,
    openai_text_stream,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "retries": 0,
    "backoff_factor": 0.01,
    "connect_timeout": 2.0,
    "deadline": 5.0,
    "idle_timeout": 2.0,
    "total_timeout": 20.0,
    "fail_max": 2,
    "reset_timeout": 30.0,
}


def ask(model: str, **kw) -> ChatRequest:
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return ChatRequest(model=model, messages=[Message("user", "Hello world")], **kw)


@pytest.fixture
async def wb(tmp_path: Path, tiny_models_dir: Path, fake_upstream, memory_keyring):
    cfg = AppConfig(engine=EngineConfig(data_dir=tmp_path / "data", model_dirs=[tiny_models_dir], scan_hf_cache=False))
    bench = Workbench.open(cfg)
    bench.set_cloud_routing(True)  # a new data directory starts with it off
    bench.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, dict(FAST)))
    bench.store.save_backend(BackendRecord("anthropic", "anthropic", fake_upstream.anthropic_url, dict(FAST)))
    bench.secrets.set("openai", "sk-test-openai-0123456789abcdefghij")
    bench.secrets.set("anthropic", "fake-anthropic-key-0123456789abcdefghij")
    bench.refresh_keys()
    await bench.prepare()  # the key look-ups run off the loop
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
    assert wb.store.recent_requests()[0].status == "rejected"


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
    first = await stream.__anext__()
    assert first.backend == "local"
    assert (stream.trace[0].outcome, stream.trace[0].error) == ("skipped", "breaker open")
    await stream.aclose()
    assert fake_upstream.count() == before


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
    row = wb.store.recent_requests()[0]
    assert row.status == "rejected" and "401" in row.error
    assert [(a["backend"], a["outcome"]) for a in row.attempts] == [("openai", "rejected")]


async def test_failure_after_first_chunk_ends_with_an_error_chunk(wb: Workbench, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("one two three four five six"), cut_after=3))
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("anthropic")]))
    chunks = [c async for c in wb.router.route(ask("smart"))]
    assert chunks[-1].error is not None and chunks[-1].finish_reason == "error"
    assert any(c.text for c in chunks[:-1])
    assert fake_upstream.count(ANTHROPIC_PATH) == 0
    row = wb.store.recent_requests()[0]
    assert row.status == "upstream_error" and "interrupted" in row.error
    assert [(a["backend"], a["outcome"]) for a in row.attempts] == [("openai", "upstream_error")]


async def test_all_unavailable_is_a_503_with_the_trace(wb: Workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, 500)
    fake_upstream.set_default(ANTHROPIC_PATH, 500)
    wb.store.add_rule(Rule("smart", "openai", fallbacks=[Step("anthropic")]))
    with pytest.raises(UnavailableError, match=r"all backends unavailable: openai: .*; anthropic: ") as exc:
        await collect(wb.router.route(ask("smart")))
    assert exc.value.status == 503
    row = wb.store.recent_requests()[0]
    assert row.status == "unavailable" and row.error.startswith("all backends unavailable") and not row.final_backend
    assert [(a["backend"], a["outcome"]) for a in row.attempts] == [
        ("openai", "unavailable"),
        ("anthropic", "unavailable"),
    ]


async def test_rule_edited_in_another_process_is_used_next(wb: Workbench) -> None:
    with pytest.raises(RejectedError, match="not found"):
        await collect(wb.router.route(ask("alias")))
    code = (
        "import sys; from router.store import Store; from router.rules import Rule; "
        "s = Store.open(sys.argv[1]); s.add_rule(Rule('alias', 'local', model='tiny-llama-mlx')); s.close()"
    )
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


async def test_consumer_closing_early_is_logged_as_client_gone(wb: Workbench) -> None:
    stream = wb.router.route(ask("tiny-llama-mlx", max_tokens=200, temperature=1.0, seed=1))
    await stream.__anext__()
    await stream.aclose()
    row = wb.store.recent_requests()[0]
    assert row.status == "client_gone"
    assert [a["outcome"] for a in row.attempts] == ["client_gone"]
    assert row.tokens_out is None  # the engine never said how many: no chunk count posing as tokens


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


def _slow_openai(wb: Workbench, fake_upstream, **settings) -> None:
    wb.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, {**FAST, **settings}))
    wb.store.add_rule(Rule("smart", "openai", model="gpt-fake", fallbacks=[Step("anthropic", "claude-fake")]))


@pytest.mark.parametrize(
    "reply",
    [Reply(delay=3600), Reply(status=429, headers={"Retry-After": "100"})],
    ids=["never-answers", "429-retry-after-100"],
)
async def test_failover_within_the_deadline_plus_half_a_second(wb: Workbench, fake_upstream, reply) -> None:
    fake_upstream.set_default(OPENAI_PATH, reply)
    _slow_openai(wb, fake_upstream, retries=3, deadline=1.0)
    await wb.prepare()
    started = time.perf_counter()
    stream = wb.router.route(ask("smart"))
    first = await stream.__anext__()
    elapsed = time.perf_counter() - started
    await stream.aclose()
    assert first.backend == "anthropic" and stream.answered_by == "anthropic/claude-fake"
    assert elapsed <= 1.5
    assert fake_upstream.count(OPENAI_PATH) == 1  # never re-sent
    assert stream.failover_note().startswith("openai unavailable: ")
    assert "deadline" in stream.failover_note()
    assert wb.backends()["openai"].snapshot().consecutive_failures == 1  # the breaker counts it


async def test_aclose_before_the_first_chunk_closes_the_upstream_request(wb: Workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(delay=3600))
    wb.store.add_rule(Rule("smart", "openai", model="gpt-fake"))
    stream = wb.router.route(ask("smart"))
    waiting = asyncio.create_task(stream.__anext__())
    while fake_upstream.count(OPENAI_PATH) == 0:
        await asyncio.sleep(0.01)
    await stream.aclose()
    assert await fake_upstream.await_disconnects(1, timeout=5)
    with pytest.raises(EngineCancelledError):
        await waiting
    row = wb.store.recent_requests()[0]
    assert row.status == "client_gone" and [a["outcome"] for a in row.attempts] == ["client_gone"]
    assert wb.backends()["openai"].snapshot().consecutive_failures == 0  # a client leaving is no failure


async def test_aclose_after_the_first_chunk_closes_the_upstream_request(wb: Workbench, fake_upstream) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream("one two three"), stall_after=2))
    wb.store.add_rule(Rule("smart", "openai", model="gpt-fake"))
    stream = wb.router.route(ask("smart"))
    assert (await stream.__anext__()).text == "one"
    waiting = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.05)
    await stream.aclose()
    assert await fake_upstream.await_disconnects(1, timeout=5)
    with pytest.raises(EngineCancelledError):
        await waiting
    assert wb.store.recent_requests()[0].status == "client_gone"


async def test_aclose_cancels_a_local_generation(wb: Workbench) -> None:
    stream = wb.router.route(ask("tiny-llama-mlx", max_tokens=3000, temperature=1.0, seed=3))
    await stream.__anext__()
    worker = wb.local._worker
    assert worker.active_count() == 1
    await stream.aclose()
    for _ in range(500):  # the MLX thread drops it before its next decode step
        if worker.active_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert worker.active_count() == 0


def _openai_line(text: str) -> str:
    import json

    return "data: " + json.dumps(openai_text_stream(text)[1])


@pytest.mark.parametrize(
    "path,reply,says",
    [
        (OPENAI_PATH, Reply(stream=openai_text_stream("one two three"), cut_after=2), "stream interrupted"),
        (OPENAI_PATH, Reply(raw_lines=[_openai_line("one"), "", "<html>proxy error</html>"]), "malformed stream"),
        (OPENAI_PATH, Reply(stream=openai_text_stream("one two three"), stall_after=2), "stream stalled"),
        (
            ANTHROPIC_PATH,
            Reply(stream=[*anthropic_text_stream("one two")[:4], anthropic_error_event("Overloaded")]),
            "Overloaded",
        ),
    ],
    ids=["cut", "malformed", "stall", "error-event"],
)
async def test_upstream_failures_after_the_first_chunk_are_upstream_errors(
    wb: Workbench, fake_upstream, path: str, reply: Reply, says: str
) -> None:
    fake_upstream.script(path, reply)
    for name, url in (("openai", fake_upstream.openai_url), ("anthropic", fake_upstream.anthropic_url)):
        wb.store.save_backend(BackendRecord(name, name, url, {**FAST, "idle_timeout": 0.5}))
    wb.store.add_rule(Rule("smart", "openai" if path == OPENAI_PATH else "anthropic"))
    stream = wb.router.route(ask("smart"))
    chunks = [c async for c in stream]
    await stream.aclose()  # as a front end does after relaying the error: it must not rewrite it
    assert chunks[0].text == "one" and chunks[-1].error is not None
    row = wb.store.recent_requests()[0]
    assert row.status == "upstream_error" and says in row.error, row.error
    assert [a["outcome"] for a in row.attempts] == ["upstream_error"]


async def test_a_cancel_scope_disconnect_is_client_gone_with_the_attempt(wb: Workbench, fake_upstream) -> None:
    """What Starlette does when an HTTP client disconnects: the handler's cancel scope is cancelled,
    and every later await in it is cancelled again."""
    import anyio

    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream("one two three"), stall_after=2))
    wb.store.add_rule(Rule("smart", "openai", model="gpt-fake"))
    stream = wb.router.route(ask("smart"))
    with anyio.CancelScope() as scope:
        try:
            async for chunk in stream:
                if chunk.text == "one":
                    scope.cancel()
        finally:
            await stream.aclose()
    assert await fake_upstream.await_disconnects(1, timeout=5)
    row = wb.store.recent_requests()[0]
    assert (row.status, row.error) == ("client_gone", "the client went away before the answer was complete")
    assert [(a["backend"], a["outcome"]) for a in row.attempts] == [("openai", "client_gone")]
    assert "CancelledError" not in (row.error or "")


# Scripted backends: each path of the router exercised deterministically, no engine or network.

from engine.types import CancelledError as EngineCancelledError  # noqa: E402
from engine.types import Chunk, ModelNotFoundError, Usage  # noqa: E402
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
    store.set_cloud_routing(True)
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
    assert row.status == "client_gone"


class Bug(Exception):
    pass


async def test_a_backend_bug_before_the_first_chunk_is_an_error_not_a_cancel(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", [Bug("off by one")])
    with pytest.raises(Bug):
        await collect(router.route(ask("m")))
    row = store.recent_requests(limit=1)[0]
    assert (row.status, row.error) == ("error", "Bug: off by one")
    assert [(a["outcome"], a["error"]) for a in row.attempts] == [("error", "Bug: off by one")]


class WithUsage(Scripted):
    """Chunks of several tokens each, and the backend's own count at the end (or none)."""

    def __init__(self, name: str, pieces: list[str], usage: Usage | None) -> None:
        super().__init__(name, "local", pieces)
        self.usage = usage

    async def stream(self, req: ChatRequest):
        for piece in self.script:
            yield Chunk(text=piece)
        yield Chunk(finish_reason="stop", usage=self.usage)


async def test_tokens_out_is_the_backends_token_count_not_the_chunk_count(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = WithUsage("local", ["three tokens here", " and four more here"], Usage(4, 7))
    await collect(router.route(ask("m")))
    row = store.recent_requests(limit=1)[0]
    assert (row.tokens_in, row.tokens_out) == (4, 7)
    backends["local"] = WithUsage("local", ["no", " count"], None)
    await collect(router.route(ask("m")))
    assert store.recent_requests(limit=1)[0].tokens_out is None


async def test_answered_by_names_the_step_that_answered(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", [UnavailableError("cannot load")])
    backends["openai"] = Scripted("openai", "openai", ["hi"])
    store.add_rule(Rule("m", "local", fallbacks=[Step("openai", "gpt-x")]))
    stream = router.route(ask("m"))
    assert stream.answered_by is None
    await stream.__anext__()
    assert stream.answered_by == "openai/gpt-x"
    assert stream.failover_note() == "local unavailable: cannot load"
    await stream.aclose()


async def test_aclose_from_another_task_before_the_first_chunk_stops_the_attempt(scripted_router) -> None:
    router, store, backends = scripted_router
    hung = backends["local"] = Scripted("local", "local", ["hang"])
    stream = router.route(ask("m"))
    waiting = asyncio.create_task(stream.__anext__())
    while hung.calls == 0:
        await asyncio.sleep(0.01)
    await stream.aclose()
    # The attempt is gone by the time aclose returns: nothing waits for the hour-long step.
    assert hung.closed_streams == 1
    with pytest.raises(EngineCancelledError):
        await waiting
    assert not waiting.cancelled()
    row = store.recent_requests(limit=1)[0]
    assert row.status == "client_gone"
    assert [a["outcome"] for a in row.attempts] == ["client_gone"]


async def test_aclose_from_another_task_after_the_first_chunk_stops_the_attempt(scripted_router) -> None:
    router, store, backends = scripted_router
    local = backends["local"] = Scripted("local", "local", ["a", "hang"])
    stream = router.route(ask("m"))
    assert (await stream.__anext__()).text == "a"
    waiting = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0.05)
    await stream.aclose()
    assert local.closed_streams == 1
    with pytest.raises(EngineCancelledError):
        await waiting
    assert store.recent_requests(limit=1)[0].status == "client_gone"


async def test_a_cancelled_consumer_is_client_gone_with_its_attempt(scripted_router) -> None:
    router, store, backends = scripted_router
    hung = backends["local"] = Scripted("local", "local", ["hang"])
    stream = router.route(ask("m"))
    task = asyncio.create_task(stream.__anext__())
    while hung.calls == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    row = store.recent_requests(limit=1)[0]
    assert (row.status, row.error) == ("client_gone", "the client went away before the answer was complete")
    assert [a["outcome"] for a in row.attempts] == ["client_gone"]
    assert hung.closed_streams == 1


async def test_closing_after_an_error_chunk_keeps_the_upstream_error(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", ["a", UnavailableError("stream interrupted: cut")])
    stream = router.route(ask("m"))
    chunks = [await stream.__anext__(), await stream.__anext__()]
    assert chunks[-1].error is not None
    await stream.aclose()  # what a front end does right after relaying the error
    row = store.recent_requests(limit=1)[0]
    assert row.status == "upstream_error" and "stream interrupted" in row.error


async def test_closing_right_after_the_final_chunk_is_ok(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", ["a"])
    stream = router.route(ask("m"))
    while not (await stream.__anext__()).finish_reason:
        pass
    await stream.aclose()
    assert store.recent_requests(limit=1)[0].status == "ok"


async def test_one_request_log_row_and_finished_event_per_request(scripted_router) -> None:
    router, store, backends = scripted_router
    backends["local"] = Scripted("local", "local", ["a", "b"])
    seen: list = []
    router.events.add_callback(seen.append)
    stream = router.route(ask("m"))
    await collect(stream)
    await stream.aclose()
    finished = [e for e in seen if isinstance(e, RequestFinished)]
    assert len(finished) == 1 and finished[0].status == "ok"
    assert len(store.recent_requests()) == 1


async def test_cloud_off_answers_from_the_local_step_and_says_why(scripted_router) -> None:
    router, store, backends = scripted_router
    cloud = backends["openai"] = Scripted("openai", "openai", ["from the cloud"])
    backends["local"] = Scripted("local", "local", ["from here"])
    store.add_rule(Rule("m", "openai", fallbacks=[Step("local")]))
    store.set_cloud_routing(False)
    stream = router.route(ask("m"))
    assert (await collect(stream)).text == "from here"
    assert cloud.calls == 0
    assert stream.failover_note() == "openai skipped: cloud routing is off"
    row = store.recent_requests(limit=1)[0]
    assert [(a["backend"], a["outcome"], a["error"]) for a in row.attempts] == [
        ("openai", "skipped", "cloud routing is off"),
        ("local", "ok", None),
    ]
    store.delete_rule(1)
    store.add_rule(Rule("m", "openai"))
    with pytest.raises(UnavailableError, match=r"cloud routing is off; .*mlx-workbench cloud on") as exc:
        await collect(router.route(ask("m")))
    assert exc.value.status == 503 and cloud.calls == 0
