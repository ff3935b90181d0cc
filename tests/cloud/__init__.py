"""Helpers shared by the cloud backend tests: one `Flavour` per upstream API."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.types import ChatRequest, Chunk, EngineError, Message
from tests.fixtures.fake_upstream import (
    ANTHROPIC_DEFAULT_TEXT,
    ANTHROPIC_PATH,
    OPENAI_DEFAULT_TEXT,
    OPENAI_PATH,
    FakeUpstream,
    anthropic_text_stream,
    openai_text_stream,
)

API_KEY = "sk-test-SECRET-0123456789abcdef"


@dataclass
class Flavour:
    name: str
    path: str
    default_text: str
    # events before the first text piece in a stream built by `text_stream`
    lead_events: int

    def config(self, fake: FakeUpstream, **overrides: Any) -> Any:
        if self.name == "openai":
            return fake.openai_config(**overrides)
        return fake.anthropic_config(**overrides)

    def backend(self, fake: FakeUpstream, api_key: str = API_KEY, **overrides: Any) -> Any:
        from engine.cloud import make_cloud_backend

        return make_cloud_backend(self.config(fake, **overrides), api_key)

    def text_stream(self, text: str, model: str | None = None) -> list[Any]:
        if self.name == "openai":
            return openai_text_stream(text, model or "gpt-fake")
        return anthropic_text_stream(text, model or "claude-fake")


OPENAI = Flavour("openai", OPENAI_PATH, OPENAI_DEFAULT_TEXT, lead_events=1)
ANTHROPIC = Flavour("anthropic", ANTHROPIC_PATH, ANTHROPIC_DEFAULT_TEXT, lead_events=3)
FLAVOURS = [OPENAI, ANTHROPIC]


def chat(model: str = "model-x", *, stream: bool = True, text: str = "Say hello") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", text)], stream=stream, max_tokens=32)


async def consume(stream: AsyncIterator[Chunk]) -> tuple[list[Chunk], EngineError | None]:
    """All chunks until the end or an engine error (returned, not raised)."""
    chunks: list[Chunk] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except EngineError as exc:
        return chunks, exc
    return chunks, None


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def client_socket_states(port: int) -> list[str]:
    """TCP states of this machine's client-side sockets connected to 127.0.0.1:`port`."""
    proc = Path("/proc/net/tcp")
    if proc.exists():  # Linux
        states = []
        for line in proc.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port:
                states.append(_TCP_STATES.get(fields[3], fields[3]))
        return states
    out = subprocess.run(["netstat", "-an", "-p", "tcp"], capture_output=True, text=True, check=True).stdout
    return [
        line.split()[-1].replace("-", "_")
        for line in out.splitlines()
        if len(line.split()) >= 6 and line.split()[4].endswith(f".{port}")
    ]


class EventLog:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def transitions(self) -> list[tuple[str, str]]:
        return [(e.old, e.new) for e in self.events]


Make = Callable[..., Any]
