"""Cloud backends against the loopback fake upstream: answers, failures mid-stream, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from engine.cloud import make_cloud_backend
from engine.cloud.base import CloudConfig
from engine.types import UnavailableError, collect
from tests.cloud import ANTHROPIC, API_KEY, FLAVOURS, OPENAI, Flavour, chat, client_socket_states, consume, text_of
from tests.fixtures.fake_upstream import FakeUpstream, Reply, anthropic_error_event

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def make(fake_upstream: FakeUpstream):
    built = []

    def _make(flavour: Flavour, **overrides):
        backend = flavour.backend(fake_upstream, **overrides)
        built.append(backend)
        return backend

    yield _make
    for backend in built:
        await backend.aclose()


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_stream_answer_and_request_shape(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    backend = make(flavour, extra_headers={"x-team": "blue"})
    chunks, error = await consume(backend.stream(chat("model-x")))
    assert error is None
    assert text_of(chunks) == flavour.default_text
    assert all(c.backend == flavour.name for c in chunks)
    assert all(c.model == "model-x" for c in chunks)
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 7

    [seen] = fake_upstream.requests
    assert seen.path == flavour.path
    assert seen.headers["x-team"] == "blue"
    assert seen.json["stream"] is True
    assert seen.json["model"] == "model-x"
    if flavour is OPENAI:
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
        assert seen.json["stream_options"] == {"include_usage": True}
    else:
        assert seen.headers["x-api-key"] == API_KEY
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in seen.headers
    snap = backend.snapshot()
    assert (snap.state, snap.requests, snap.errors, snap.consecutive_failures) == ("closed", 1, 0, 0)
    assert len(snap.recent_latencies_s) == 1 and snap.latency_p50_s is not None


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_non_streaming_request_gives_the_same_chunk_shape(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat("model-y", stream=False)))
    assert error is None
    # Streamed upstream all the same: a first token to hold the deadline to, and a close stops it.
    assert fake_upstream.requests[0].json["stream"] is True
    assert len(chunks) >= 2
    assert text_of(chunks) == flavour.default_text
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 5 and chunks[-1].usage.completion_tokens == 7
    result = await collect(backend.stream(chat("model-y", stream=False)))
    assert (result.text, result.backend, result.model) == (flavour.default_text, flavour.name, "model-y")


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_chunks_carry_the_upstream_model(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(flavour.path, Reply(stream=flavour.text_stream("Hi there", model="upstream-2024-01")))
    chunks, error = await consume(make(flavour).stream(chat("alias-name")))
    assert error is None and text_of(chunks) == "Hi there"
    assert {c.model for c in chunks} == {"upstream-2024-01"}


def _events_through(flavour: Flavour, pieces: int) -> int:
    return flavour.lead_events + pieces


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_stream_cut_midway_is_an_error_after_the_delivered_chunks(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    stream = flavour.text_stream("one two three four five six")
    fake_upstream.script(flavour.path, Reply(stream=stream, cut_after=_events_through(flavour, 3)))
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "one two three"
    assert isinstance(error, UnavailableError)
    assert "interrupted" in error.message
    assert error.backend == flavour.name and error.attempts == 1
    assert fake_upstream.count() == 1  # nothing is retried once the answer began
    snap = backend.snapshot()
    assert snap.consecutive_failures == 1 and snap.errors == 1
    assert snap.last_error is not None and "interrupted" in snap.last_error


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_stream_stalls_then_idle_timeout(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    stream = flavour.text_stream("one two three four five six")
    fake_upstream.script(flavour.path, Reply(stream=stream, stall_after=_events_through(flavour, 3)))
    backend = make(flavour, idle_timeout=0.5)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "one two three"
    assert isinstance(error, UnavailableError)
    assert "idle timeout" in error.message
    assert backend.snapshot().consecutive_failures == 1
    # Giving up closed the connection: the server saw the client leave.
    assert await fake_upstream.await_disconnects(1, timeout=5)


async def test_total_timeout_bounds_a_slow_but_alive_stream(fake_upstream: FakeUpstream, make) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream(words), chunk_delay=0.1))
    backend = make(OPENAI, total_timeout=1.5, idle_timeout=5)
    chunks, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError)
    assert "total timeout" in error.message
    assert 0 < len(text_of(chunks).split()) < 40
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_a_long_healthy_stream_is_never_cut_by_default(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    # The answer lasts about 3 s: six times the first-token deadline and the idle timeout. With
    # no total_timeout set (the default), only a silence longer than idle_timeout may end it.
    words = " ".join(f"w{i}" for i in range(30))
    fake_upstream.script(flavour.path, Reply(stream=flavour.text_stream(words), chunk_delay=0.1))
    url = fake_upstream.openai_url if flavour is OPENAI else fake_upstream.anthropic_url
    # Built from the defaults (the fixture's configs set a total cap for the other tests).
    cfg = CloudConfig(name=flavour.name, kind=flavour.name, base_url=url, deadline=0.5, idle_timeout=0.5)
    assert cfg.total_timeout is None
    backend = make_cloud_backend(cfg, API_KEY)
    try:
        started = asyncio.get_running_loop().time()
        chunks, error = await consume(backend.stream(chat()))
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await backend.aclose()
    assert error is None, error
    assert text_of(chunks) == words
    assert elapsed > 2 * cfg.deadline  # it did outlast every bound that was set
    assert backend.snapshot().consecutive_failures == 0


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_undecodable_event_data_is_a_malformed_stream(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    good = flavour.text_stream("alpha beta gamma")[: _events_through(flavour, 2)]
    if flavour is OPENAI:
        lines = [line for obj in good for line in (f"data: {_json(obj)}", "")]
    else:
        lines = [line for ev, obj in good for line in (f"event: {ev}", f"data: {_json(obj)}", "")]
    lines += ["data: {this is not json", "", ""]
    fake_upstream.script(flavour.path, Reply(raw_lines=lines))
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "alpha beta"
    assert isinstance(error, UnavailableError) and "malformed" in error.message
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_malformed_sse_line_is_an_error(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    good = flavour.text_stream("alpha beta gamma")[: _events_through(flavour, 2)]
    if flavour is OPENAI:
        lines = [line for obj in good for line in (f"data: {_json(obj)}", "")]
    else:
        lines = [line for ev, obj in good for line in (f"event: {ev}", f"data: {_json(obj)}", "")]
    lines += ["\x00\x01 garbage without a field", "", ""]
    fake_upstream.script(flavour.path, Reply(raw_lines=lines))
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "alpha beta"
    assert isinstance(error, UnavailableError) and "malformed" in error.message
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_stream_ending_without_its_terminator_is_an_error(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    events = flavour.text_stream("one two")
    lines = (
        [line for obj in events for line in (f"data: {_json(obj)}", "")]
        if flavour is OPENAI
        else [line for ev, obj in events[:-2] for line in (f"event: {ev}", f"data: {_json(obj)}", "")]
    )
    fake_upstream.script(flavour.path, Reply(raw_lines=lines))  # no [DONE] / no message_stop
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "one two"
    assert isinstance(error, UnavailableError) and "ended before" in error.message
    assert backend.snapshot().consecutive_failures == 1


async def test_anthropic_error_event_mid_stream(fake_upstream: FakeUpstream, make) -> None:
    events = ANTHROPIC.text_stream("one two three four")[: _events_through(ANTHROPIC, 2)]
    events.append(anthropic_error_event("Overloaded", "overloaded_error"))
    fake_upstream.script(ANTHROPIC.path, Reply(stream=events))
    backend = make(ANTHROPIC)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "one two"
    assert isinstance(error, UnavailableError)
    assert error.backend == "anthropic"
    assert "Overloaded" in str(error) or "overloaded" in str(error).lower()
    snap = backend.snapshot()
    assert snap.consecutive_failures == 1 and snap.errors == 1


async def test_openai_error_object_mid_stream(fake_upstream: FakeUpstream, make) -> None:
    events = OPENAI.text_stream("one two three")[: _events_through(OPENAI, 2)]
    events.append({"error": {"message": "The server had an error", "type": "server_error"}})
    fake_upstream.script(OPENAI.path, Reply(stream=events))
    backend = make(OPENAI)
    chunks, error = await consume(backend.stream(chat()))
    assert text_of(chunks) == "one two"
    assert isinstance(error, UnavailableError) and "The server had an error" in str(error)
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_caller_closing_early_disconnects_upstream_without_a_breaker_failure(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    words = " ".join(f"w{i}" for i in range(50))
    fake_upstream.script(flavour.path, Reply(stream=flavour.text_stream(words), chunk_delay=0.05))
    backend = make(flavour)
    stream = backend.stream(chat())
    got = []
    async for chunk in stream:
        if chunk.text:
            got.append(chunk.text)
        if len(got) == 2:
            break
    await stream.aclose()
    assert got == ["w0", " w1"]
    assert await fake_upstream.await_disconnects(1, timeout=5)
    assert fake_upstream.completed == 0
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.errors) == ("closed", 0, 0)


async def test_cancelling_the_consuming_task_is_neutral(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI, retries=0)
    fake_upstream.script(OPENAI.path, 500)
    _, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError)
    assert backend.snapshot().consecutive_failures == 1

    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream("a b c d e f"), stall_after=3))
    first = asyncio.Event()

    async def reader() -> None:
        async for _ in backend.stream(chat()):
            first.set()

    task = asyncio.create_task(reader())
    await asyncio.wait_for(first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake_upstream.await_disconnects(1, timeout=5)
    # Neither counted as a failure nor taken as a success that resets the count.
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.errors) == ("closed", 1, 1)


def _json(obj: object) -> str:
    import json

    return json.dumps(obj)


async def test_backends_satisfy_the_backend_protocol(fake_upstream: FakeUpstream) -> None:
    from engine.cloud import make_cloud_backend
    from engine.cloud.anthropic import AnthropicBackend
    from engine.cloud.openai import OpenAIBackend
    from engine.types import Backend

    built = [
        make_cloud_backend(fake_upstream.openai_config("o"), "k"),
        make_cloud_backend(fake_upstream.openai_config("c", kind="openai-compatible"), "k"),
        make_cloud_backend(fake_upstream.anthropic_config("a"), "k"),
    ]
    try:
        assert [type(b) for b in built] == [OpenAIBackend, OpenAIBackend, AnthropicBackend]
        assert [b.kind for b in built] == ["openai", "openai-compatible", "anthropic"]
        assert all(isinstance(b, Backend) for b in built)
        url = fake_upstream.openai_url
        assert repr(built[0]) == f"OpenAIBackend(name='o', kind='openai', base_url='{url}', state='closed')"
    finally:
        for b in built:
            await b.aclose()
    _, error = await consume(built[0].stream(chat()))
    assert isinstance(error, UnavailableError) and "closed" in error.message
    assert fake_upstream.count() == 0


async def test_anthropic_base_url_may_end_in_v1(fake_upstream: FakeUpstream) -> None:
    from engine.cloud import make_cloud_backend

    backend = make_cloud_backend(fake_upstream.anthropic_config(base_url=fake_upstream.url + "/v1/"), "k")
    try:
        chunks, error = await consume(backend.stream(chat()))
    finally:
        await backend.aclose()
    assert error is None and text_of(chunks) == ANTHROPIC.default_text
    assert fake_upstream.requests[0].path == ANTHROPIC.path


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_many_concurrent_streams(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    backend = make(flavour)
    results = await asyncio.gather(*(consume(backend.stream(chat(f"m{i}"))) for i in range(20)))
    assert all(e is None and text_of(c) == flavour.default_text for c, e in results)
    assert sorted(c[0].model for c, _ in results) == sorted(f"m{i}" for i in range(20))
    snap = backend.snapshot()
    assert (snap.requests, snap.errors, len(snap.recent_latencies_s)) == (20, 0, 20)


async def test_connections_are_reused_and_none_stays_in_close_wait(fake_upstream_factory) -> None:
    from engine.cloud import make_cloud_backend

    upstream = fake_upstream_factory(keep_alive=0.3)
    backend = make_cloud_backend(upstream.openai_config(), API_KEY)
    try:
        for _ in range(3):
            assert (await collect(backend.stream(chat()))).text == OPENAI.default_text
        assert client_socket_states(upstream.port) == ["ESTABLISHED"]  # one connection for all three
        # The upstream closes the idle connection after 0.3 s; ours must follow, not sit in CLOSE_WAIT.
        for _ in range(100):
            states = client_socket_states(upstream.port)
            if "ESTABLISHED" not in states and "CLOSE_WAIT" not in states:
                break
            await asyncio.sleep(0.05)
        assert "CLOSE_WAIT" not in states and "ESTABLISHED" not in states, states
        assert (await collect(backend.stream(chat()))).text == OPENAI.default_text  # and a new one works
    finally:
        await backend.aclose()


@pytest.mark.parametrize("max_tokens", [32, 10**30], ids=["plain", "beyond-64-bit"])
async def test_the_request_body_reaches_the_upstream_as_json(
    fake_upstream: FakeUpstream, make, max_tokens: int
) -> None:
    # orjson encodes the body; an integer it refuses still goes out (json), for the upstream to judge.
    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream("ok")))
    backend = make(OPENAI)
    request = chat(text="héllo")
    request.max_tokens = max_tokens
    _, error = await consume(backend.stream(request))
    assert error is None, error
    sent = fake_upstream.requests[0]
    assert sent.headers["content-type"] == "application/json"
    assert sent.json["max_tokens"] == max_tokens
    assert sent.json["messages"][-1]["content"] == "héllo"
    assert sent.json["stream"] is True
