"""Accepted connections have TCP_NODELAY, on the TUI's plain asyncio loop and on `serve`'s uvloop:
without it an answer on a reused connection waits ~40 ms for Nagle and the delayed ACK."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvloop

from engine.config import EngineConfig
from router.config import AppConfig
from router.listener import Listener
from router.workbench import Workbench


async def nodelay_of_accepted_sockets(listener: Listener) -> list[int]:
    """Open a connection, make a request on it, and read TCP_NODELAY on the server's side of it."""
    host, port = listener.url.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.removeprefix("http://"), int(port))
    try:
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        connections = listener._server.server_state.connections  # type: ignore[union-attr]
        sockets = [c.transport.get_extra_info("socket") for c in connections]
        return [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets]
    finally:
        writer.close()


async def test_tcp_nodelay_on_the_asyncio_loop(listener) -> None:
    assert isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)
    flags = await nodelay_of_accepted_sockets(listener)
    assert flags and all(flags), flags


def test_tcp_nodelay_on_uvloop(tmp_path: Path) -> None:
    async def main() -> list[int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        wb = Workbench.open(AppConfig(engine=EngineConfig(data_dir=tmp_path / "d", scan_hf_cache=False)))
        listener = Listener(wb, "127.0.0.1", 0)
        await listener.start()
        try:
            return await nodelay_of_accepted_sockets(listener)
        finally:
            await listener.stop()
            await wb.aclose()

    flags = uvloop.run(main())
    assert flags and all(flags), flags
