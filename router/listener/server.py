"""Listener: uvicorn on a socket of our own, inside an already running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from router.listener.app import create_app
from router.listener.body import MAX_BODY_BYTES
from router.listener.errors import ListenerError
from router.workbench import Workbench

log = logging.getLogger("mlxwb.listener")
# How long uvicorn waits for connections to finish once every open request has been ended.
STOP_TIMEOUT_S = 1


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _QuietServer(uvicorn.Server):
    """Leaves process signals to the host (the TUI, or `serve`): stock uvicorn swaps in its own
    SIGINT/SIGTERM handlers while serving and re-raises the signal afterwards, which would bypass
    the host's clean shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, or ListenerError in words (uvicorn would sys.exit on a busy port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for a listening
    # socket of that protocol. Without it Nagle and delayed ACKs add ~40 ms to answers on a
    # reused connection (issue 12).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenerError(f"port {port} on {host} is in use") from None
        raise ListenerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Listener:
    """The listener inside an already running event loop (the TUI's, or `serve`'s)."""

    def __init__(
        self,
        workbench: Workbench,
        host: str = "127.0.0.1",
        port: int = 8765,
        api_key: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.workbench = workbench
        self.host, self.port = host, port
        self._api_key = api_key
        self.max_body_bytes = max_body_bytes
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._app: FastAPI | None = None

    def __repr__(self) -> str:
        return f"Listener(host={self.host!r}, port={self.port!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self.running:
            return
        key = self._api_key or self.workbench.secrets.get("listener")
        if not is_loopback(self.host) and not key:
            raise ListenerError(
                f"refusing to listen on {self.host} without a listener key: set one with "
                "`mlx-workbench keys set listener` (or MLXWB_LISTENER_KEY), or bind 127.0.0.1"
            )
        self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        app = create_app(
            self.workbench,
            api_key=key,
            max_body_bytes=self.max_body_bytes,
            listener_info={"host": self.host, "port": self.port, "auth": bool(key)},
        )
        # http="auto" takes httptools when installed (uvicorn[standard]); the loop is the host's.
        config = uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            access_log=False,
            log_level="warning",
            # Nothing here reads the client's address, so X-Forwarded-For need not be parsed per request.
            proxy_headers=False,
            timeout_graceful_shutdown=STOP_TIMEOUT_S,
        )
        self._server = _QuietServer(config)
        self._app = app
        self._task = asyncio.create_task(self._serve(self._server, self._sock))
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            await self.stop()
            raise ListenerError(f"the listener on {self.url} stopped right after starting")

    @staticmethod
    async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits the process on startup failures; keep the host alive
            log.error("listener stopped: uvicorn exit %s", exc.code)

    async def wait(self) -> None:
        """Until the server stops on its own (or is stopped)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    @property
    def open_requests(self) -> int:
        """Routed requests in flight (streams included)."""
        return len(self._app.state.sessions) if self._app is not None else 0

    async def stop(self) -> None:
        """Stop accepting, end every open request at once (a stream gets its protocol's error
        event: the listener is shutting down), and return when uvicorn is done."""
        if self._server is not None:
            self._server.should_exit = True
        if self._app is not None:
            await self._app.state.sessions.close_all()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2 * STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("listener: uvicorn did not stop in %.0f s; forcing it", 2 * STOP_TIMEOUT_S)
                if self._server is not None:
                    self._server.force_exit = True
                await self._task
        if self._sock is not None:
            self._sock.close()
        self._task = self._server = self._sock = self._app = None
