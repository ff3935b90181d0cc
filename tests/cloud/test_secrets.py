"""The API key never leaves the request headers: not in errors, chains, reprs, events or logs."""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import pytest

from engine.cloud import make_cloud_backend
from engine.types import EngineError
from tests.cloud import ANTHROPIC, API_KEY, FLAVOURS, OPENAI, EventLog, Flavour, chat, closed_port, consume
from tests.fixtures.fake_upstream import FakeUpstream, Reply, anthropic_error, openai_error

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def _texts_of(error: BaseException) -> list[str]:
    out = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, EngineError):
        out += [str(v) for v in error.to_dict().values()]
    return out


@pytest.mark.parametrize("flavour", FLAVOURS, ids=lambda f: f.name)
async def test_key_never_leaks(flavour: Flavour, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = EventLog()
    cfg = flavour.config(fake_upstream, retries=1, fail_max=3, reset_timeout=30)
    backend = make_cloud_backend(cfg, API_KEY, listeners=[log])
    echo = f"Incorrect API key provided: {API_KEY}"
    body = (
        openai_error(echo, code="invalid_api_key")
        if flavour is OPENAI
        else anthropic_error(echo, "authentication_error")
    )
    stream_events = flavour.text_stream("one two three four")
    fake_upstream.script(
        flavour.path,
        Reply(status=401, json=body),
        Reply(status=500, json=body),
        Reply(status=500, json=body),
        Reply(stream=stream_events, cut_after=flavour.lead_events + 1),
        Reply(raw_lines=[f"data: {{broken {API_KEY}", "", ""]),
    )
    errors: list[BaseException] = []
    try:
        for _ in range(4):  # 401, 500 twice, a cut stream, a malformed one
            _, error = await consume(backend.stream(chat()))
            assert error is not None
            errors.append(error)
        assert backend.snapshot().state == "open"
        _, refused = await consume(backend.stream(chat()))
        assert refused is not None and refused.attempts == 0
        errors.append(refused)
        backend.reset_breaker()
        offline = make_cloud_backend(replace(cfg, base_url=f"http://127.0.0.1:{closed_port()}"), API_KEY)
        _, error = await consume(offline.stream(chat()))
        assert error is not None
        errors.append(error)
        await offline.aclose()
        snapshot_text = repr(backend.snapshot())
        backend_repr = repr(backend)
    finally:
        await backend.aclose()

    assert errors[0].status == 401 and "Incorrect API key provided" in str(errors[0])
    assert fake_upstream.requests[0].headers.get("authorization", "").endswith(API_KEY) or (
        fake_upstream.requests[0].headers.get("x-api-key") == API_KEY
    )
    texts = [t for e in errors for t in _texts_of(e)]
    texts += [snapshot_text, backend_repr, repr(cfg), str(cfg), caplog.text]
    texts += [repr(e) for e in log.events]
    assert log.events, "the breaker opened and published an event"
    for text in texts:
        assert API_KEY not in text
        assert API_KEY[8:] not in text


async def test_key_scrubbed_from_mid_stream_errors(fake_upstream: FakeUpstream) -> None:
    events = ANTHROPIC.text_stream("one two")[:4]
    events.append(("error", anthropic_error(f"bad key {API_KEY}", "authentication_error")))
    fake_upstream.script(ANTHROPIC.path, Reply(stream=events))
    backend = make_cloud_backend(fake_upstream.anthropic_config(), API_KEY)
    try:
        _, error = await consume(backend.stream(chat()))
    finally:
        await backend.aclose()
    assert error is not None
    for text in [*_texts_of(error), repr(backend.snapshot())]:
        assert API_KEY not in text


def test_extra_header_values_stay_out_of_the_config_repr() -> None:
    from engine.cloud.base import CloudConfig

    cfg = CloudConfig(
        name="azure",
        kind="openai-compatible",
        base_url="https://x.example/v1",
        extra_headers={"api-key": "azure-secret-1"},
    )
    assert "azure-secret-1" not in repr(cfg)


def test_importing_engine_cloud_is_cheap() -> None:
    code = (
        "import sys, engine.cloud, engine.cloud.base; "
        "print(','.join(m for m in ('httpx', 'httpx_retries', 'mlx', 'textual') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
