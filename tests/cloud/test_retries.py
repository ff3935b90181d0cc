"""Retries, status mapping and timeouts before the first chunk, against the loopback fake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest

from engine.cloud.base import CloudConfig
from engine.cloud.openai import OpenAIBackend
from engine.types import ModelNotFoundError, RejectedError, UnavailableError
from tests.cloud import ANTHROPIC, FLAVOURS, OPENAI, Flavour, chat, closed_port, consume, text_of
from tests.fixtures.fake_upstream import FakeUpstream, Reply, anthropic_error, openai_error

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
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_503_503_200_succeeds_on_the_third_attempt(
    flavour: Flavour, stream: bool, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.script(flavour.path, 503, 503)
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat(stream=stream)))
    assert error is None
    assert text_of(chunks) == flavour.default_text
    assert fake_upstream.count(flavour.path) == 3
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.errors) == ("closed", 0, 0)


@pytest.mark.parametrize(
    "flavour,status",
    [(OPENAI, 429), (ANTHROPIC, 429), (ANTHROPIC, 529)],
    ids=["openai-429", "anthropic-429", "anthropic-529"],
)
async def test_retry_after_is_honoured(flavour: Flavour, status: int, fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(flavour.path, Reply(status=status, headers={"Retry-After": "1"}))
    backend = make(flavour)
    started = time.perf_counter()
    chunks, error = await consume(backend.stream(chat()))
    elapsed = time.perf_counter() - started
    assert error is None and text_of(chunks) == flavour.default_text
    assert elapsed >= 0.9
    first, second = fake_upstream.requests
    assert second.at - first.at >= 0.9
    assert backend.snapshot().state == "closed"


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_500_on_every_attempt_is_unavailable_with_attempts(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.set_default(flavour.path, 500)
    backend = make(flavour, retries=2)
    chunks, error = await consume(backend.stream(chat()))
    assert chunks == []
    assert isinstance(error, UnavailableError)
    assert (error.status, error.attempts, error.backend) == (500, 3, flavour.name)
    assert "500" in error.message and "3 attempts" in error.message
    assert fake_upstream.count(flavour.path) == 3
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures, snap.errors) == ("closed", 1, 1)
    assert snap.last_error is not None and "500" in snap.last_error and snap.last_error_at is not None


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_client_errors_are_rejected_not_retried_not_counted(
    flavour: Flavour, status: int, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.script(flavour.path, status)
    backend = make(flavour)
    chunks, error = await consume(backend.stream(chat()))
    assert chunks == []
    assert isinstance(error, RejectedError) and not isinstance(error, ModelNotFoundError)
    assert (error.status, error.attempts) == (status, 1)
    assert fake_upstream.count(flavour.path) == 1
    snap = backend.snapshot()
    assert (snap.state, snap.consecutive_failures) == ("closed", 0)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_404_is_model_not_found(flavour: Flavour, fake_upstream: FakeUpstream, make) -> None:
    body = (
        openai_error("The model `nope` does not exist", code="model_not_found")
        if flavour is OPENAI
        else anthropic_error("model: nope", "not_found_error")
    )
    fake_upstream.script(flavour.path, Reply(status=404, json=body))
    _, error = await consume(make(flavour).stream(chat("nope")))
    assert isinstance(error, ModelNotFoundError) and error.status == 404
    assert error.upstream_message is not None and "nope" in error.upstream_message


async def test_openai_400_keeps_the_upstream_message(fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(OPENAI.path, Reply(status=400, json=openai_error("temperature: must be <= 2")))
    _, error = await consume(make(OPENAI).stream(chat()))
    assert isinstance(error, RejectedError) and error.status == 400
    assert error.upstream_message == "temperature: must be <= 2"
    assert "temperature: must be <= 2" in str(error)
    assert error.to_dict()["upstream_message"] == "temperature: must be <= 2"


async def test_anthropic_400_keeps_the_upstream_message(fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(ANTHROPIC.path, Reply(status=400, json=anthropic_error("max_tokens: too large")))
    _, error = await consume(make(ANTHROPIC).stream(chat()))
    assert isinstance(error, RejectedError) and error.status == 400
    assert error.upstream_message is not None and "max_tokens: too large" in error.upstream_message


async def test_non_json_error_body_is_kept_as_text(fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(OPENAI.path, Reply(status=400, raw_lines=["<html>bad gateway config</html>"]))
    _, error = await consume(make(OPENAI).stream(chat()))
    assert isinstance(error, RejectedError)
    assert error.upstream_message is not None and "bad gateway config" in error.upstream_message


@pytest.fixture
def unanswered_port():
    """A loopback port whose accept queue is full: a new connect hangs (SYNs dropped), as with a
    host that is down or firewalled."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    waiting = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the handshake finishes (or queues) in the kernel
            client.connect(("127.0.0.1", port))
        waiting.append(client)
    yield port
    for sock in [*waiting, server]:
        sock.close()


async def test_a_connect_that_hangs_is_bounded_by_the_connect_timeout_and_retried(unanswered_port: int) -> None:
    cfg = CloudConfig(
        name="down",
        kind="openai",
        base_url=f"http://127.0.0.1:{unanswered_port}/v1",
        connect_timeout=0.3,
        retries=2,
        backoff_factor=0.01,
        deadline=5.0,
    )
    backend = OpenAIBackend(cfg, "k")
    try:
        started = time.perf_counter()
        _, error = await consume(backend.stream(chat()))
        elapsed = time.perf_counter() - started
    finally:
        await backend.aclose()
    assert isinstance(error, UnavailableError) and error.attempts == 3  # nothing was sent: retried
    assert error.message == (f"cannot connect to {cfg.base_url}: no connection within 0.3 s (after 3 attempts)")
    assert elapsed < cfg.deadline  # each connect gave up on its own, long before the deadline
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_connection_refused_is_unavailable_and_counted(flavour: Flavour, fake_upstream: FakeUpstream) -> None:
    port = closed_port()
    base = f"http://127.0.0.1:{port}" + ("/v1" if flavour is OPENAI else "")
    cfg = flavour.config(fake_upstream, retries=2)
    from dataclasses import replace

    from engine.cloud import make_cloud_backend

    backend = make_cloud_backend(replace(cfg, base_url=base), "k")
    try:
        chunks, error = await consume(backend.stream(chat()))
    finally:
        await backend.aclose()
    assert chunks == []
    assert isinstance(error, UnavailableError)
    assert error.attempts == 3
    assert "cannot connect" in error.message
    snap = backend.snapshot()
    assert (snap.consecutive_failures, snap.errors) == (1, 1)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_a_server_that_never_answers_fails_at_the_deadline_and_is_never_resent(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.set_default(flavour.path, Reply(delay=3600))
    backend = make(flavour, retries=2, deadline=1.0)
    started = time.perf_counter()
    chunks, error = await consume(backend.stream(chat()))
    elapsed = time.perf_counter() - started
    assert chunks == []
    assert isinstance(error, UnavailableError)
    assert "no first token within the deadline (1 s)" in error.message
    # The upstream got the POST and may be working on it: it is not sent again.
    assert error.attempts == 1 and fake_upstream.count(flavour.path) == 1
    assert 1.0 <= elapsed <= 1.5
    assert backend.snapshot().consecutive_failures == 1
    # Giving up closed the connection: the upstream saw the client leave.
    assert await fake_upstream.await_disconnects(1, timeout=5)


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_retry_after_beyond_the_deadline_fails_at_once_and_counts(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.set_default(flavour.path, Reply(status=429, headers={"Retry-After": "100"}))
    backend = make(flavour, retries=3, deadline=2.0)
    started = time.perf_counter()
    _, error = await consume(backend.stream(chat()))
    elapsed = time.perf_counter() - started
    assert isinstance(error, UnavailableError) and error.status == 429
    assert "asked to wait 100 s, past the first-token deadline" in error.message
    assert fake_upstream.count() == 1
    assert elapsed <= 2.5  # well inside: no waiting for a retry that cannot come in time
    assert backend.snapshot().consecutive_failures == 1


async def test_retries_of_one_step_stay_inside_its_deadline(fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.set_default(OPENAI.path, 503)
    backend = make(OPENAI, retries=20, backoff_factor=0.2, max_backoff_wait=5.0, deadline=1.5)
    started = time.perf_counter()
    _, error = await consume(backend.stream(chat()))
    elapsed = time.perf_counter() - started
    assert isinstance(error, UnavailableError)
    assert 1 < fake_upstream.count() < 21  # retried, but not all 20 retries: the deadline came first
    assert elapsed <= 2.0


async def test_headers_without_a_first_token_fail_at_the_deadline(fake_upstream: FakeUpstream, make) -> None:
    # The role chunk carries no token: the stream is open but nothing is said.
    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream("never said"), stall_after=1))
    backend = make(OPENAI, deadline=0.8, idle_timeout=30)
    _, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError) and "no first token within the deadline" in error.message
    assert fake_upstream.count() == 1


async def _thinking_upstream(silence: float) -> tuple[asyncio.Server, str]:
    """An OpenAI upstream that sends its headers and role chunk at once, says nothing for
    `silence` seconds (a model thinking), then streams its answer quickly."""
    events = [*OPENAI.text_stream("thought it through")]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        writer.write(f"data: {json.dumps(events[0])}\n\n".encode())
        await writer.drain()
        await asyncio.sleep(silence)
        for event in events[1:]:
            writer.write(f"data: {json.dumps(event)}\n\n".encode())
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


async def test_the_idle_timeout_starts_with_the_answer_not_before_it() -> None:
    # A deadline longer than the idle timeout (a slow-thinking model): the silence before the
    # first token is the deadline's business, not a stall.
    server, url = await _thinking_upstream(silence=1.2)
    backend = OpenAIBackend(CloudConfig(name="o", kind="openai", base_url=url, deadline=5.0, idle_timeout=0.3), "k")
    try:
        chunks, error = await consume(backend.stream(chat()))
    finally:
        await backend.aclose()
        server.close()
    assert error is None, error
    assert text_of(chunks) == "thought it through"


async def test_the_deadline_ends_at_the_first_token(fake_upstream: FakeUpstream, make) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    fake_upstream.script(OPENAI.path, Reply(stream=OPENAI.text_stream(words), chunk_delay=0.1))
    backend = make(OPENAI, deadline=0.5)
    chunks, error = await consume(backend.stream(chat()))
    assert error is None and text_of(chunks) == words  # a 1.3 s answer, past the 0.5 s deadline


async def test_a_slow_first_byte_within_the_deadline_is_fine(fake_upstream: FakeUpstream, make) -> None:
    fake_upstream.script(OPENAI.path, Reply(delay=0.3))
    chunks, error = await consume(make(OPENAI, deadline=3).stream(chat()))
    assert error is None and text_of(chunks) == OPENAI.default_text
    assert fake_upstream.count() == 1


async def test_openai_compatible_without_a_key_sends_no_authorization(fake_upstream: FakeUpstream) -> None:
    cfg = fake_upstream.openai_config("local-vllm", kind="openai-compatible")
    backend = OpenAIBackend(cfg, None)
    try:
        chunks, error = await consume(backend.stream(chat()))
    finally:
        await backend.aclose()
    assert error is None and text_of(chunks) == OPENAI.default_text
    assert "authorization" not in fake_upstream.requests[0].headers
    assert backend.kind == "openai-compatible" and chunks[0].backend == "local-vllm"


async def test_invalid_request_is_rejected_before_any_network(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI)
    bad = chat()
    bad.temperature = 5.0
    _, error = await consume(backend.stream(bad))
    assert isinstance(error, RejectedError) and "temperature" in error.message
    assert fake_upstream.count() == 0


def test_cloud_config_validates_and_defaults() -> None:
    cfg = CloudConfig(name="o", kind="openai", base_url="https://api.openai.com/v1")
    assert (cfg.retries, cfg.backoff_factor, cfg.max_backoff_wait) == (2, 0.5, 30.0)
    # No cap on the whole answer unless one is set: a long healthy stream is never cut.
    assert (cfg.connect_timeout, cfg.deadline, cfg.idle_timeout, cfg.total_timeout) == (3.0, 15.0, 60.0, None)
    assert (cfg.fail_max, cfg.reset_timeout, cfg.extra_headers, cfg.default_model) == (5, 30.0, {}, None)
    with pytest.raises(ValueError, match="kind"):
        CloudConfig(name="o", kind="gemini", base_url="https://x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_url"):
        CloudConfig(name="o", kind="openai", base_url="api.openai.com")
    with pytest.raises(ValueError, match="fail_max"):
        CloudConfig(name="o", kind="openai", base_url="https://x", fail_max=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        CloudConfig(name="o", kind="openai", base_url="https://x", idle_timeout=0)
    with pytest.raises(ValueError, match="deadline"):
        CloudConfig(name="o", kind="openai", base_url="https://x", deadline=-1)
    with pytest.raises(ValueError, match="total_timeout"):
        CloudConfig(name="o", kind="openai", base_url="https://x", total_timeout=0)


async def test_default_model_replaces_the_default_alias(fake_upstream: FakeUpstream, make) -> None:
    backend = make(OPENAI, default_model="gpt-4o-mini")
    chunks, error = await consume(backend.stream(chat("default")))
    assert error is None
    assert fake_upstream.requests[0].json["model"] == "gpt-4o-mini"
    assert chunks[0].model == "gpt-4o-mini"


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_429_after_retries_is_unavailable_and_counted(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.set_default(flavour.path, 429)
    backend = make(flavour, retries=1)
    _, error = await consume(backend.stream(chat()))
    assert isinstance(error, UnavailableError)
    assert (error.status, error.attempts) == (429, 2)
    assert fake_upstream.count() == 2
    assert backend.snapshot().consecutive_failures == 1


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_a_200_that_is_not_json_is_a_malformed_response(
    flavour: Flavour, fake_upstream: FakeUpstream, make
) -> None:
    fake_upstream.script(flavour.path, Reply(json="just a string, no answer"))
    backend = make(flavour)
    _, error = await consume(backend.stream(chat(stream=False)))
    assert isinstance(error, UnavailableError) and "malformed response" in error.message
    assert backend.snapshot().consecutive_failures == 1
