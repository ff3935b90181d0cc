"""`mlx-workbench serve` as a real process: prints its URL, answers, stops cleanly on a signal."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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
