"""Server-sent events: a strict reader over text lines and a writer.

httpx-sse's decoder silently ignores lines it does not understand; a cloud stream that turns
into garbage must be an error of the stream, so the few lines of the reader live here.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Iterator
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


class SSEParser:
    """The strict reader, fed what the network delivers: bytes in, whole events out.

    Parsing every complete event of a read at once (instead of a line at a time through async
    iterators) is what keeps a relayed stream cheap per chunk. Lines end with LF, CRLF or CR (a CR
    at the end of a read may still be the first half of a CRLF); text is UTF-8, as SSE requires,
    even when a multi-byte character is split across reads."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._cr_pending = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, data: bytes) -> Iterator[SSEEvent]:
        """The events completed by `data`, in order; SSEFormatError at a malformed line (after the
        events before it)."""
        return self._lines(self._text.decode(data))

    def close(self) -> Iterator[SSEEvent]:
        """At the end of the stream: a last line without its ending, and an event without its blank line."""
        yield from self._lines(self._text.decode(b"", final=True))
        if self._partial:
            line, self._partial = self._partial, ""
            event = self.line(line)
            if event is not None:
                yield event
        if self._data:
            yield self._dispatch()

    def _lines(self, text: str) -> Iterator[SSEEvent]:
        if self._cr_pending:
            self._cr_pending = False
            if text.startswith("\n"):
                text = text[1:]  # the LF of a CRLF split across reads
        if "\r" in text:
            self._cr_pending = text.endswith("\r")
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial += text
            return
        lines = text.split("\n")
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        for line in lines:
            event = self.line(line)
            if event is not None:
                yield event

    def line(self, line: str) -> SSEEvent | None:
        """One line without its ending; the event it completes, if any."""
        if line == "":
            if self._data:
                return self._dispatch()
            self._event = None  # a blank line ends the event even when it had no data
            return None
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if not sep or name not in _FIELDS:
            raise SSEFormatError(f"malformed event-stream line: {line[:200]!r}")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        elif name == "retry" and not value.isdigit():
            raise SSEFormatError(f"malformed retry field: {line[:200]!r}")
        return None

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(event=self._event, data="\n".join(self._data), id=self._id)
        self._data, self._event = [], None
        return event


async def aiter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Parse SSE from lines without their line endings (as httpx's `aiter_lines()` gives them)."""
    parser = SSEParser()
    async for raw in lines:
        event = parser.line(raw.rstrip("\r\n"))
        if event is not None:
            yield event
    for event in parser.close():
        yield event


def format_sse(data: str | dict[str, Any], event: str | None = None) -> str:
    """One event as text, ending with the blank line that dispatches it."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {part}\n" for part in text.split("\n"))
    return f"{head}{body}\n"
