"""The cloud backends' network layer (engine/cloud/network.py): real sockets and real TLS on
127.0.0.1, on asyncio's loop (the TUI) and on uvloop (`serve`)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import httpcore
import pytest
import trustme
import uvloop

from engine.cloud.network import AsyncioBackend
from engine.types import ChatRequest, Message
from tests.fixtures.fake_upstream import FakeUpstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _server(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def _echo_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.readexactly(5)
    writer.write(data.upper() + b"!" * 1_000_000)  # more than the read buffer holds: reading pauses
    await writer.drain()
    writer.close()


async def _round_trip(tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> tuple[bytes, bool]:
    server, port = await _server(_echo_then_close, tls[0] if tls else None)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)
        if tls:
            stream = await stream.start_tls(tls[1], server_hostname="localhost", timeout=3)
        await stream.write(b"hello")
        got = bytearray()
        while chunk := await stream.read(65536):
            got += chunk
        secure = stream.get_extra_info("ssl_object") is not None
        await stream.aclose()
    return bytes(got), secure


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext, trustme.CA]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx, ca


async def test_bytes_arrive_whole_and_the_end_reads_as_empty():
    got, secure = await _round_trip()
    assert got == b"HELLO" + b"!" * 1_000_000 and not secure


async def test_tls_round_trip(tls):
    got, secure = await _round_trip((tls[0], tls[1]))
    assert got == b"HELLO" + b"!" * 1_000_000 and secure


def test_round_trips_on_uvloop_too(tls):
    # uvloop's transports are not asyncio.Transport subclasses; `serve` runs on uvloop.
    assert uvloop.run(_round_trip()) == (b"HELLO" + b"!" * 1_000_000, False)
    assert uvloop.run(_round_trip((tls[0], tls[1]))) == (b"HELLO" + b"!" * 1_000_000, True)


async def test_a_certificate_nobody_vouches_for_is_a_connect_error(tls):
    server, port = await _server(_echo_then_close, tls[0])
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)
        with pytest.raises(httpcore.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await stream.start_tls(ssl.create_default_context(), server_hostname="localhost", timeout=3)


async def test_nobody_listening_is_a_connect_error():
    server, port = await _server(_echo_then_close)
    server.close()
    await server.wait_closed()
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)


async def test_a_read_timeout_when_asked_for_one():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    server, port = await _server(silent)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)
        await stream.write(b"x")
        with pytest.raises(httpcore.ReadTimeout):
            await stream.read(100, timeout=0.1)
        await stream.aclose()


async def test_a_cancelled_read_leaves_the_stream_usable():
    # The deadline timer cancels the task waiting on a read (engine/cloud/deadlines.py).
    later = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await later.wait()
        writer.write(b"late")
        await writer.drain()

    server, port = await _server(late)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)
        read = asyncio.ensure_future(stream.read(100))
        await asyncio.sleep(0.05)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        later.set()
        assert await asyncio.wait_for(stream.read(100), 3) == b"late"
        await stream.aclose()


async def test_an_idle_connection_the_server_closed_is_readable_so_not_reused():
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server, port = await _server(close_at_once)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=3)
        for _ in range(100):
            if stream.get_extra_info("is_readable"):
                break
            await asyncio.sleep(0.01)
        assert stream.get_extra_info("is_readable") is True
        with pytest.raises(httpcore.WriteError):
            await stream.write(b"too late")


async def test_a_cloud_backend_talks_tls_to_an_upstream_trusted_via_ssl_cert_file(tls, tmp_path, monkeypatch):
    from engine.cloud.openai import OpenAIBackend

    ca_file = tmp_path / "ca.pem"
    tls[2].cert_pem.write_to_path(str(ca_file))
    cert = tls[2].issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # as behind a company's TLS-inspecting proxy
    upstream = FakeUpstream(ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)).start()
    try:
        assert upstream.url.startswith("https://")
        backend = OpenAIBackend(upstream.openai_config(), "sk-test")
        try:
            req = ChatRequest(model="gpt-4o", messages=[Message("user", "hi")], stream=True)
            text = "".join([c.text async for c in backend.stream(req)])
        finally:
            await backend.aclose()
    finally:
        upstream.stop()
    assert text == "Hello from fake openai"


@pytest.mark.parametrize("on_uvloop", [False, True])
def test_a_host_whose_first_address_does_not_answer_is_reached_on_the_next(on_uvloop, monkeypatch):
    # As a dual-stack host whose IPv6 route drops packets: the first address never connects.
    # asyncio races the addresses (happy eyeballs); on uvloop each gets its share of the time.
    async def main() -> bytes:
        server, port = await _server(_echo_then_close)
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def two_addresses(host: str, port: int, **kw: object) -> list[tuple]:
            live = (await real("127.0.0.1", port, type=socket.SOCK_STREAM))[0]
            dead = (live[0], live[1], live[2], "", ("10.255.255.1", port))  # unroutable: no answer
            return [dead, live]

        monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
        async with server:
            started = loop.time()
            stream = await AsyncioBackend().connect_tcp("dual-stack.example", port, timeout=3)
            took = loop.time() - started
            await stream.write(b"hello")
            got = await stream.read(5)
            await stream.aclose()
        assert took < 2.5, took
        return got

    assert (uvloop.run(main()) if on_uvloop else asyncio.run(main())) == b"HELLO"
