"""The strict SSE reader and the writer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.protocol.sse import SSEEvent, SSEFormatError, SSEParser, aiter_sse, format_sse


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


# ---------------------------------------------------------------- fed bytes as the network cuts them

WIRE = (
    ": keep-alive\r\n\r\n"
    'event: message_start\r\ndata: {"a":"é"}\r\n\r\n'
    "data: one\rdata: two\r\r"
    "id: 9\ndata: 🙂 \u2028 tail\n\n"
    "data: [DONE]\n\n"
).encode()
EXPECTED = [
    SSEEvent("message_start", '{"a":"é"}'),
    SSEEvent(None, "one\ntwo"),
    SSEEvent(None, "🙂 \u2028 tail", "9"),
    SSEEvent(None, "[DONE]", "9"),
]


def _feed(*parts: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events = [e for part in parts for e in parser.feed(part)]
    return events + list(parser.close())


def test_fed_whole_the_events_are_those_of_the_line_reader():
    assert _feed(WIRE) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_cut_anywhere_the_events_are_the_same(cut):
    # Every place a read can end: inside a CRLF, inside a multi-byte character, inside a field name.
    assert _feed(WIRE[:cut], WIRE[cut:]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=12))
def test_cut_into_many_reads_the_events_are_the_same(cuts):
    points = sorted(set(cuts))
    parts = [WIRE[a:b] for a, b in zip([0, *points], [*points, len(WIRE)], strict=True)]
    assert _feed(*parts) == EXPECTED


def test_a_crlf_split_across_reads_is_one_line_ending_not_two():
    # Were the LF read as a blank line of its own, "a" and "b" would become two events.
    assert _feed(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent(None, "a\nb")]


def test_the_events_of_a_read_come_before_its_malformed_line():
    parser = SSEParser()
    got: list[SSEEvent] = []
    with pytest.raises(SSEFormatError):
        for event in parser.feed(b"data: 1\n\ndata: 2\n\n<html>\n"):
            got.append(event)
    assert got == [SSEEvent(None, "1"), SSEEvent(None, "2")]


def test_at_the_end_a_last_line_without_its_ending_is_dispatched():
    parser = SSEParser()
    assert list(parser.feed(b"data: 1\n\ndata: la")) == [SSEEvent(None, "1")]
    assert list(parser.feed(b"st")) == []
    assert list(parser.close()) == [SSEEvent(None, "last")]


def test_invalid_utf8_is_replaced_not_raised():
    assert _feed(b"data: \xff\xfe ok\n\n") == [SSEEvent(None, "\ufffd\ufffd ok")]


def test_an_event_name_without_data_does_not_name_the_next_event():
    # e.g. an `event: ping` keep-alive with no data line: the next event is not a ping.
    assert _feed(b"event: ping\n\ndata: x\n\n") == [SSEEvent(None, "x")]
