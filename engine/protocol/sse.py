"""Server-sent events: a strict reader over text lines and a writer.

httpx-sse's decoder silently ignores lines it does not understand; a cloud stream that turns
into garbage must be an error of the stream, so the few lines of the reader live here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


class SSEFormatError(ValueError):
    """A line of the event stream is not valid SSE."""


@dataclass(frozen=True)
class SSEEvent:
    event: str | None
    data: str
    id: str | None = None


_FIELDS = ("data", "event", "id", "retry")


async def aiter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Parse SSE from lines without their line endings (as httpx's `aiter_lines()` gives them)."""
    data: list[str] = []
    event: str | None = None
    last_id: str | None = None
    has_data = False
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if line == "":
            if has_data:
                yield SSEEvent(event=event, data="\n".join(data), id=last_id)
            data, event, has_data = [], None, False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if not sep or name not in _FIELDS:
            raise SSEFormatError(f"malformed event-stream line: {line[:200]!r}")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            has_data = True
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
        elif name == "retry" and not value.isdigit():
            raise SSEFormatError(f"malformed retry field: {line[:200]!r}")
    if has_data:
        yield SSEEvent(event=event, data="\n".join(data), id=last_id)


def format_sse(data: str | dict[str, Any], event: str | None = None) -> str:
    """One event as text, ending with the blank line that dispatches it."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {part}\n" for part in text.split("\n"))
    return f"{head}{body}\n"
