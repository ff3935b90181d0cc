"""httpcore's network interface on plain asyncio transports, for the cloud backends' connections.

httpcore's default (anyio) stream opens an anyio cancel scope and an exception map around every
socket read and write, even without a timeout: this one took 18% off the listener's CPU per
answer relaying a paced stream (bench/listener.py). This one is an asyncio `Protocol` that buffers what
arrives and wakes the reader, with a timer only when httpcore asks for a timeout. It plugs into
httpcore's documented `AsyncNetworkBackend` hook; TLS goes through `loop.start_tls`.
"""

# ruff: noqa: ASYNC109 (the `timeout` parameters are httpcore's interface)
from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import httpcore

# Past this many unread bytes the transport stops reading from the socket (TCP pushes back).
_READ_HIGH_WATER = 256 * 1024


class _Connection(asyncio.Protocol):
    """The bytes that arrived, the end of the stream, and the task waiting for either."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.lost = False
        self._paused_reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ the transport's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_HIGH_WATER and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too: an HTTP/1.1 peer that half-closed is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._can_write = self._can_write, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ what the stream uses

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def take(self, max_bytes: int) -> bytes:
        if len(self.buffer) <= max_bytes:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
        if self._paused_reading and len(self.buffer) <= _READ_HIGH_WATER // 2 and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def wait_writable(self) -> None:
        if self._can_write is not None:
            await asyncio.shield(self._can_write)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        conn = self._conn
        if timeout is None:
            while not conn.buffer and not conn.eof:
                await conn.wait_data()
        elif not conn.buffer and not conn.eof:
            try:
                async with asyncio.timeout(timeout):
                    while not conn.buffer and not conn.eof:
                        await conn.wait_data()
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(_no("data", timeout)) from exc
        if conn.buffer:
            return conn.take(max_bytes)
        if conn.error is not None:
            raise httpcore.ReadError(str(conn.error) or type(conn.error).__name__) from conn.error
        return b""  # the peer closed the connection: httpcore decides what that means

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        conn = self._conn
        transport = conn.transport
        if conn.lost or transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        if timeout is None:
            await conn.wait_writable()
            return
        try:
            async with asyncio.timeout(timeout):
                await conn.wait_writable()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(_no("room to send", timeout)) from exc

    async def aclose(self) -> None:
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        conn = self._conn
        assert conn.transport is not None
        if conn.buffer or conn.eof:
            # Bytes before the handshake would later read as if they had come over TLS.
            await self.aclose()
            raise httpcore.ConnectError("the server spoke (or hung up) before the TLS handshake")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(conn.transport, conn, ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(_no("TLS handshake", timeout)) from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if tls is None:
            await self.aclose()
            raise httpcore.ConnectError("the TLS handshake did not complete")
        conn.transport = tls
        return AsyncioStream(conn)

    def get_extra_info(self, info: str) -> Any:
        transport = self._conn.transport
        if info == "is_readable":
            # An idle pooled connection is readable only if the server spoke or hung up: either way
            # httpcore must not reuse it. Arriving bytes land in our buffer, not in the socket.
            return bool(self._conn.buffer) or self._conn.eof
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        conn = _Connection()
        return await _opened(conn, _connect(conn, host, port, local_address, timeout), timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        conn = _Connection()
        opening = asyncio.get_running_loop().create_unix_connection(lambda: conn, path)
        return await _opened(conn, _transport_of(opening), timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _opened(
    conn: _Connection,
    opening: Awaitable[asyncio.BaseTransport],
    timeout: float | None,
    socket_options: Iterable[Any] | None,
) -> AsyncioStream:
    """The connection being opened, within the connect timeout and in httpcore's errors, with the
    socket options httpcore asks for (and TCP_NODELAY, which asyncio sets too)."""
    try:
        async with asyncio.timeout(timeout):
            transport = await opening
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(_no("connection", timeout)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        transport.close()
        raise httpcore.ConnectError(f"cannot set a socket option: {exc}") from exc
    return AsyncioStream(conn)


async def _transport_of(opening: Awaitable[tuple[asyncio.BaseTransport, Any]]) -> asyncio.BaseTransport:
    transport, _ = await opening
    return transport


# RFC 8305's connection attempt delay: how long one address of a host gets before the next is tried.
NEXT_ADDRESS_S = 0.25


async def _connect(
    conn: _Connection, host: str, port: int, local_address: str | None, timeout: float | None
) -> asyncio.BaseTransport:
    """A connection to one of the host's addresses: on a dual-stack host whose IPv6 route drops
    packets, IPv4 is tried too instead of the whole connect timeout going to IPv6 (as anyio did)."""
    loop = asyncio.get_running_loop()
    local = (local_address, 0) if local_address else None
    try:
        # asyncio's own happy eyeballs: the next address starts after the delay, the first to connect wins.
        transport, _ = await loop.create_connection(
            lambda: conn, host, port, local_addr=local, happy_eyeballs_delay=NEXT_ADDRESS_S, interleave=1
        )
        return transport
    except TypeError:
        pass  # uvloop: no happy_eyeballs_delay; each address in turn, with its share of the time left
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address found for {host}")
    deadline = loop.time() + (timeout if timeout is not None else 30.0)
    last: OSError | None = None
    for i, (family, _, proto, _, address) in enumerate(_interleaved(infos)):
        share = (deadline - loop.time()) / (len(infos) - i)
        try:
            async with asyncio.timeout(max(share, NEXT_ADDRESS_S) if i < len(infos) - 1 else None):
                transport, _ = await loop.create_connection(
                    lambda: conn, address[0], address[1], family=family, proto=proto, local_addr=local
                )
            return transport
        except (OSError, TimeoutError) as exc:
            last = exc if isinstance(exc, OSError) else OSError(f"no connection to {address[0]} within {share:.2f} s")
    assert last is not None
    raise last


def _interleaved(infos: list[Any]) -> list[Any]:
    """Addresses alternating between families (IPv6, IPv4, IPv6...), keeping the resolver's order."""
    by_family: dict[int, list[Any]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _no(what: str, timeout: float | None) -> str:
    return f"no {what} within {timeout:g} s" if timeout is not None else f"no {what}"
