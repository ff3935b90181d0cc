"""The circuit breaker of a cloud backend: opening, fast failure, the single half-open probe,
events, manual control, and what does and does not count as a failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.cloud import make_cloud_backend
from engine.types import RejectedError, UnavailableError
from tests.cloud import ANTHROPIC, FLAVOURS, OPENAI, EventLog, Flavour, chat, consume, text_of
from tests.fixtures.fake_upstream import FakeUpstream, Reply

pytestmark = pytest.mark.timeout(60)

FAST = {"retries": 0, "fail_max": 3, "reset_timeout": 0.5}


@pytest.fixture
async def make(fake_upstream: FakeUpstream):
    built = []

    def _make(flavour: Flavour, listeners=(), **overrides):
        backend = make_cloud_backend(flavour.config(fake_upstream, **overrides), "sk-k", listeners=listeners)
        built.append(backend)
        return backend

    yield _make
    for backend in built:
        await backend.aclose()


async def _fail_until_open(backend, fake: FakeUpstream, path: str, n: int) -> None:
    fake.set_default(path, 500)
    for _ in range(n):
        _, error = await consume(backend.stream(chat()))
        assert isinstance(error, UnavailableError) and error.status == 500
    fake.set_default(path, None)


async def _wait_half_open(backend, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while backend.snapshot().state != "half-open":
        assert time.monotonic() < deadline, "breaker never half-opened"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_open_after_fail_max_then_fast_fail_without_the_server(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    log = EventLog()
    backend = make(flavour, listeners=[log], retries=1, fail_max=3, reset_timeout=30)
    await _fail_until_open(backend, fake_upstream, flavour.path, 3)
    assert fake_upstream.count() == 6  # 3 requests x 2 attempts
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.fail_max) == ("open", 3, 3)
    assert snap.seconds_to_half_open is not None and 25 < snap.seconds_to_half_open <= 30
    assert log.transitions() == [("closed", "open")]
    assert log.events[0].backend == flavour.name and "500" in (log.events[0].last_error or "")

    # Fails fast, checked structurally (no request sent, no attempt made), not by a timing of a few ms.
    with pytest.raises(UnavailableError) as info:
        await anext(backend.stream(chat()))
    assert fake_upstream.count() == 6
    assert info.value.attempts == 0 and info.value.backend == flavour.name
    assert "circuit breaker open" in info.value.message


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_half_open_probe_success_closes(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    log = EventLog()
    backend = make(flavour, listeners=[log], **FAST)
    await _fail_until_open(backend, fake_upstream, flavour.path, 3)
    before = fake_upstream.count()
    assert backend.snapshot().state == "open"
    await _wait_half_open(backend)
    assert backend.snapshot().seconds_to_half_open is None
    chunks, error = await consume(backend.stream(chat()))
    assert error is None and text_of(chunks) == flavour.default_text
    assert fake_upstream.count() == before + 1
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures) == ("closed", 0)
    assert log.transitions() == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_half_open_probe_failure_reopens(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    log = EventLog()
    backend = make(flavour, listeners=[log], **FAST)
    await _fail_until_open(backend, fake_upstream, flavour.path, 3)
    await _wait_half_open(backend)
    fake_upstream.script(flavour.path, 503)
    _, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError) and error.status == 503
    snap = backend.snapshot()
    assert snap.state == "open"
    assert snap.seconds_to_half_open is not None and snap.seconds_to_half_open > 0.2
    assert log.transitions()[-2:] == [("open", "half-open"), ("half-open", "open")]


async def test_no_call_during_reset_timeout_means_lazy_half_open_is_still_seen(
    fake_upstream: FakeUpstream, make
) -> None:
    """pybreaker only half-opens on the next call; the snapshot reports the due move itself,
    so a router that skips open backends still sends the probe."""
    log = EventLog()
    backend = make(OPENAI, listeners=[log], **FAST)
    await _fail_until_open(backend, fake_upstream, OPENAI.path, 3)
    await asyncio.sleep(0.6)
    assert backend.breaker_state == "half-open"
    assert log.transitions()[-1] == ("open", "half-open")


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_half_open_lets_exactly_one_concurrent_probe_through(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    backend = make(flavour, **FAST)
    await _fail_until_open(backend, fake_upstream, flavour.path, 3)
    await _wait_half_open(backend)
    before = fake_upstream.count()
    fake_upstream.script(flavour.path, Reply(delay=0.5))

    results = await asyncio.gather(*(consume(backend.stream(chat())) for _ in range(2)))
    errors = [e for _, e in results]
    ok = [c for c, e in results if e is None]
    assert len(ok) == 1 and text_of(ok[0]) == flavour.default_text
    [refused] = [e for e in errors if e is not None]
    assert isinstance(refused, UnavailableError) and "probe in flight" in refused.message
    assert refused.attempts == 0
    assert fake_upstream.count() == before + 1
    assert backend.snapshot().state == "closed"


async def test_an_interrupted_probe_frees_the_gate_and_stays_half_open(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI, **FAST)
    await _fail_until_open(backend, fake_upstream, OPENAI.path, 3)
    await _wait_half_open(backend)
    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream("a b c d e f g"), chunk_delay=0.05))
    stream = backend.stream(chat())
    await anext(stream)
    await stream.aclose()
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures) == ("half-open", 3)
    # The next caller is the new probe.
    chunks, error = await consume(backend.stream(chat()))
    assert error is None and text_of(chunks) == OPENAI.default_text
    assert backend.snapshot().state == "closed"


async def test_client_errors_do_not_count_but_reset_the_consecutive_count(fake_upstream: FakeUpstream, make) -> None:
    backend = make(ANTHROPIC, **FAST)
    fake_upstream.script(ANTHROPIC.path, 500, 500)
    for _ in range(2):
        await consume(backend.stream(chat()))
    assert backend.snapshot().consecutive_failures == 2
    fake_upstream.script(ANTHROPIC.path, 401, 401, 401, 401)
    for _ in range(4):
        _, error = await consume(backend.stream(chat()))
        assert isinstance(error, RejectedError) and error.status == 401
    snap = backend.snapshot()
    # The upstream answered coherently: it is up (documented in engine/cloud/breaker.py).
    assert (snap.state, snap.consecutive_failures) == ("closed", 0)
    assert snap.errors == 6


async def test_user_cancel_neither_trips_nor_resets(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI, **FAST)
    fake_upstream.script(OPENAI.path, 500, 500)
    for _ in range(2):
        await consume(backend.stream(chat()))
    for _ in range(5):
        fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream("a b c d e f"), chunk_delay=0.02))
        stream = backend.stream(chat())
        await anext(stream)
        await stream.aclose()
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.errors) == ("closed", 2, 2)


async def test_trip_and_reset_from_the_ui(fake_upstream: FakeUpstream, make) -> None:
    log = EventLog()
    backend = make(OPENAI, listeners=[log], fail_max=5, reset_timeout=60)
    backend.trip_breaker()
    snap = backend.snapshot()
    assert snap.state == "open" and snap.seconds_to_half_open is not None and snap.seconds_to_half_open > 50
    _, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError) and fake_upstream.count() == 0
    backend.reset_breaker()
    assert backend.snapshot().state == "closed"
    _, error = await consume(backend.stream(chat()))
    assert error is None and fake_upstream.count() == 1
    assert log.transitions() == [("closed", "open"), ("open", "closed")]
    assert all(e.backend == "openai" and e.at > 0 for e in log.events)


async def test_a_failing_listener_does_not_break_requests(fake_upstream: FakeUpstream, make) -> None:
    log = EventLog()

    def broken(event) -> None:
        raise RuntimeError("listener bug")

    backend = make(OPENAI, listeners=[broken, log], **FAST)
    await _fail_until_open(backend, fake_upstream, OPENAI.path, 3)
    assert log.transitions() == [("closed", "open")]


async def test_snapshot_statistics(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI, retries=0)
    for _ in range(6):
        _, error = await consume(backend.stream(chat()))
        assert error is None
    fake_upstream.script(OPENAI.path, 502)
    await consume(backend.stream(chat()))
    snap = backend.snapshot()
    assert (snap.name, snap.kind, snap.requests, snap.errors) == ("openai", "openai", 7, 1)
    assert len(snap.recent_latencies_s) == 6
    assert snap.latency_p50_s is not None and snap.latency_p95_s is not None and snap.latency_p99_s is not None
    assert 0 < snap.latency_p50_s <= snap.latency_p95_s <= snap.latency_p99_s <= max(snap.recent_latencies_s)
    assert snap.last_error is not None and "502" in snap.last_error
