"""The strict SSE reader and the writer."""

from __future__ import annotations

import json

import pytest

from engine.protocol.sse import SSEEvent, SSEFormatError, aiter_sse, format_sse


async def _lines(*lines: str):
    for line in lines:
        yield line


async def _read(*lines: str) -> list[SSEEvent]:
    return [e async for e in aiter_sse(_lines(*lines))]


async def test_data_with_and_without_space_and_event_and_id():
    events = await _read("event: ping", "id: 7", 'data: {"a":1}', "", "data:x", "")
    assert events == [SSEEvent("ping", '{"a":1}', "7"), SSEEvent(None, "x", "7")]


async def test_multi_line_data_is_joined_with_newlines():
    assert await _read("data: one", "data: two", "data:", "") == [SSEEvent(None, "one\ntwo\n")]


async def test_comments_and_retry_are_skipped_and_blank_lines_without_data_dispatch_nothing():
    events = await _read(": keep-alive", "", "retry: 3000", "", "data: [DONE]", "")
    assert events == [SSEEvent(None, "[DONE]")]


async def test_event_name_does_not_leak_into_the_next_event():
    events = await _read("event: a", "data: 1", "", "data: 2", "")
    assert [e.event for e in events] == ["a", None]


async def test_final_event_without_blank_line_is_dispatched_at_eof():
    assert await _read("data: last") == [SSEEvent(None, "last")]


async def test_crlf_endings_are_tolerated():
    assert await _read("data: a\r", "\r") == [SSEEvent(None, "a")]


@pytest.mark.parametrize("line", ["garbage", '{"a": 1}', "dat: x", "retry: soon", "<html>"])
async def test_malformed_line_raises(line):
    with pytest.raises(SSEFormatError):
        await _read("data: ok", "", line, "")


async def test_malformed_line_after_good_events_yields_those_first():
    got: list[SSEEvent] = []
    with pytest.raises(SSEFormatError):
        async for e in aiter_sse(_lines("data: 1", "", "oops")):
            got.append(e)
    assert got == [SSEEvent(None, "1")]


def test_format_sse_dict_compact_with_event():
    assert format_sse({"a": 1, "b": "é"}, event="x") == 'event: x\ndata: {"a":1,"b":"é"}\n\n'


def test_format_sse_string_and_done():
    assert format_sse("[DONE]") == "data: [DONE]\n\n"


async def test_format_then_parse_round_trips_multiline_text():
    text = "line1\nline2\n\nline4"
    wire = format_sse(text, event="e") + format_sse({"k": [1, 2]})
    events = await _read(*wire.split("\n"))
    assert events == [SSEEvent("e", text), SSEEvent(None, json.dumps({"k": [1, 2]}, separators=(",", ":")))]
