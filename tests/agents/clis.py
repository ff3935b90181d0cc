"""The real coding-agent CLIs for end-to-end tests: installed from npm, pinned, into the project's
.cache/npm-agents (ignored by git), and run with nothing to reach but the listener.

Anything else they try to reach goes through a proxy on loopback that refuses and records it
(`Trap`): both CLIs honour HTTPS_PROXY / NO_PROXY, so a test can assert they tried nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Self

PACKAGES = {"claude": ("@anthropic-ai/claude-code", "2.1.328"), "codex": ("@openai/codex", "0.171.0")}
ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".cache" / "npm-agents"
INSTALL_TIMEOUT_S = 900


class CLIUnavailable(RuntimeError):
    pass


def _installed_version(package: str) -> str | None:
    manifest = PREFIX / "node_modules" / package / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def install_clis() -> dict[str, Path]:
    """The pinned CLIs' executables, installing them first when missing or of another version."""
    wanted = [f"{pkg}@{version}" for pkg, version in PACKAGES.values() if _installed_version(pkg) != version]
    if wanted:
        npm = shutil.which("npm")
        if npm is None:
            raise CLIUnavailable("npm is not on PATH: the agent end-to-end tests need node and npm")
        PREFIX.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(PREFIX),
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel",
                "error",
                *wanted,
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise CLIUnavailable(f"npm install {' '.join(wanted)} failed: {done.stderr.strip()[-2000:]}")
    bins = {name: PREFIX / "node_modules" / ".bin" / name for name in PACKAGES}
    for path in bins.values():
        if not path.exists():
            raise CLIUnavailable(f"{path} is missing after npm install")
    return bins


class Trap:
    """An HTTP proxy on 127.0.0.1 that answers 403 to everything and records the request lines."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-trap-proxy", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("trap proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.seen.append(line.decode("latin-1").strip())
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def isolated_env(home: Path, trap: Trap, **extra: str) -> dict[str, str]:
    """A clean environment: a fresh HOME, the trap as proxy for everything but loopback."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "NO_COLOR": "1",
        "HTTPS_PROXY": trap.url,
        "HTTP_PROXY": trap.url,
        "ALL_PROXY": trap.url,
        "https_proxy": trap.url,
        "http_proxy": trap.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


async def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> Run:
    """Run a CLI without blocking the event loop the listener serves on."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return Run(-9, out.decode(errors="replace"), err.decode(errors="replace") + "\n[killed: timeout]")
    code = proc.returncode if proc.returncode is not None else -1
    return Run(code, out.decode(errors="replace"), err.decode(errors="replace"))
