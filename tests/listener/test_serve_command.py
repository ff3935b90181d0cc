"""`mlx-workbench serve` as a real process: prints its URL, answers, stops cleanly on a signal."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_its_url_answers_and_exits_cleanly(sig: int) -> None:
    proc = _serve("--port", "0")
    try:
        line = proc.stdout.readline()
        assert line.startswith("mlx-workbench listening on http://127.0.0.1:"), line
        url = line.split()[3]
        health = httpx.get(url + "/health", timeout=30).json()
        assert health["status"] == "ok" and health["listener"]["auth"] is False
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "listener stopped" in out
    assert "Traceback" not in err


def test_serve_on_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = _serve("--port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in out + err
    assert "Traceback" not in err


def test_serve_refuses_a_public_address_without_a_key() -> None:
    proc = _serve("--host", "0.0.0.0", "--port", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "without a listener key" in out + err


def test_sigterm_ends_open_streams_with_an_error_event_and_logs_to_a_private_file(
    isolated_env: Path, fake_upstream
) -> None:
    from router.config import load_config
    from router.rules import Rule
    from router.store import BackendRecord
    from router.workbench import Workbench
    from tests.fixtures.fake_upstream import OPENAI_PATH, Reply, openai_text_stream
    from tests.listener.conftest import FAST

    wb = Workbench.open(load_config())
    wb.store.set_cloud_routing(True)
    wb.store.save_backend(
        BackendRecord("up", "openai-compatible", fake_upstream.openai_url, {**FAST, "idle_timeout": 120.0})
    )
    wb.store.add_rule(Rule("slow", "up"))
    wb.store.close()
    # The upstream sends two chunks and then nothing: only the listener's shutdown can end the stream.
    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream("one two three"), stall_after=2))
    proc = _serve("--port", "0")
    try:
        url = proc.stdout.readline().split()[3]
        lines: list[str] = []
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            timeout=30,
            json={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        ) as r:
            for line in r.iter_lines():
                lines.append(line)
                if '"one"' in line:
                    proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    data = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert data[-1]["error"]["message"] == "the listener is shutting down", data[-1]
    assert "Traceback" not in err
    log_file = isolated_env / "workbench.log"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    log = log_file.read_text()
    assert "POST /v1/chat/completions 200" in log and "listener stopped (1 open requests ended)" in log
    assert "did not stop" not in log  # uvicorn was done within its 2 s bound, not forced
    assert "HTTP Request:" not in log  # httpx's line per upstream request: the access log says it
    assert fake_upstream.wait_for_disconnects(1, timeout=10)  # and the upstream request was closed
