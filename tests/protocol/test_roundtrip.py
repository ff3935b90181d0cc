"""Property tests: wire -> canonical -> wire keeps the conversation; encoder -> decoder keeps the stream."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.protocol.anthropic import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    request_from_anthropic,
    request_to_anthropic,
)
from engine.protocol.openai import OpenAIStreamDecoder, OpenAIStreamEncoder, request_from_openai, request_to_openai
from engine.types import Chunk, ToolCallDelta, Usage

SETTINGS = settings(max_examples=100, deadline=None)

text = st.text(min_size=1, max_size=30)
ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
json_args = st.dictionaries(ident, st.one_of(st.integers(), st.text(max_size=10), st.booleans()), max_size=3)
stops = st.lists(st.text(min_size=1, max_size=8), max_size=4)


# ---------------------------------------------------------------- OpenAI requests


@st.composite
def openai_bodies(draw) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    pending: list[str] = []  # tool call ids still to be answered
    n = draw(st.integers(1, 8))
    for k in range(n):
        if pending and draw(st.booleans()):
            messages.append({"role": "tool", "tool_call_id": pending.pop(0), "content": draw(text)})
            continue
        role = draw(st.sampled_from(["system", "user", "assistant"]))
        msg: dict[str, Any] = {"role": role, "content": draw(text)}
        if role == "user" and draw(st.booleans()):
            msg["content"] = [{"type": "text", "text": t} for t in draw(st.lists(text, min_size=1, max_size=3))]
        if role == "assistant" and draw(st.booleans()):
            calls = []
            for j in range(draw(st.integers(1, 3))):
                call_id = f"call_{k}_{j}"
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": draw(ident), "arguments": json.dumps(draw(json_args))},
                    }
                )
                pending.append(call_id)
            msg["tool_calls"] = calls
            if draw(st.booleans()):
                msg["content"] = None
        messages.append(msg)
    body: dict[str, Any] = {"model": draw(ident), "messages": messages, "stream": draw(st.booleans())}
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2, allow_nan=False))
    if draw(st.booleans()):
        body[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(st.integers(1, 100_000))
    s = draw(stops)
    if s:
        body["stop"] = s[0] if len(s) == 1 and draw(st.booleans()) else s
    return body


def _openai_conversation(body: dict[str, Any]) -> list[tuple]:
    out = []
    for m in body["messages"]:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p["text"] for p in content)
        calls = tuple(
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in m.get("tool_calls") or []
        )
        out.append((m["role"], content or "", calls, m.get("tool_call_id")))
    return out


@SETTINGS
@given(openai_bodies())
def test_openai_request_round_trip_keeps_the_conversation(body):
    again = request_to_openai(request_from_openai(body))
    assert _openai_conversation(again) == _openai_conversation(body)
    stop = body.get("stop", [])
    assert again.get("stop", []) == ([stop] if isinstance(stop, str) else stop)
    assert again.get("temperature") == body.get("temperature")
    assert again.get("max_tokens") == body.get("max_tokens", body.get("max_completion_tokens"))
    assert again["model"] == body["model"] and again["stream"] == body["stream"]


# ---------------------------------------------------------------- Anthropic requests


@st.composite
def anthropic_bodies(draw) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    pending: list[str] = []
    n = draw(st.integers(1, 7))
    for k in range(n):
        role = "user" if k % 2 == 0 else "assistant"
        blocks: list[dict[str, Any]] = []
        if role == "user":
            while pending:
                result: Any = draw(text)
                if draw(st.booleans()):
                    result = [{"type": "text", "text": result}]
                blocks.append({"type": "tool_result", "tool_use_id": pending.pop(0), "content": result})
            if not blocks or draw(st.booleans()):
                blocks.append({"type": "text", "text": draw(text)})
        else:
            if draw(st.booleans()):
                blocks.append({"type": "text", "text": draw(text)})
            for j in range(draw(st.integers(0 if blocks else 1, 2))):
                tool_id = f"toolu_{k}_{j}"
                blocks.append({"type": "tool_use", "id": tool_id, "name": draw(ident), "input": draw(json_args)})
                pending.append(tool_id)
        content: Any = blocks
        if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
            content = blocks[0]["text"]
        turns.append({"role": role, "content": content})
    body: dict[str, Any] = {"model": draw(ident), "max_tokens": draw(st.integers(1, 100_000)), "messages": turns}
    if draw(st.booleans()):
        body["system"] = draw(text) if draw(st.booleans()) else [{"type": "text", "text": draw(text)}]
    s = draw(stops)
    if s:
        body["stop_sequences"] = s
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1, allow_nan=False))
    return body


def _anthropic_conversation(body: dict[str, Any]) -> tuple:
    system = body.get("system")
    if isinstance(system, list):
        system = "".join(b["text"] for b in system)
    turns = []
    for t in body["messages"]:
        content = t["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks = []
        for b in content:
            if b["type"] == "tool_result":
                c = b["content"]
                blocks.append(
                    ("tool_result", b["tool_use_id"], c if isinstance(c, str) else "".join(x["text"] for x in c))
                )
            elif b["type"] == "tool_use":
                blocks.append(("tool_use", b["id"], b["name"], b["input"]))
            else:
                blocks.append(("text", b["text"]))
        turns.append((t["role"], blocks))
    return system, turns, body.get("stop_sequences", []), body.get("temperature"), body["max_tokens"]


@SETTINGS
@given(anthropic_bodies())
def test_anthropic_request_round_trip_keeps_the_conversation(body):
    again = request_to_anthropic(request_from_anthropic(body))
    assert _anthropic_conversation(again) == _anthropic_conversation(body)


# ---------------------------------------------------------------- streams


def _fold(chunks: list[Chunk]) -> tuple[str, list[tuple[str, str, str]], str | None, Usage | None]:
    calls: dict[int, list[str]] = {}
    finish = usage = None
    for c in chunks:
        for d in c.tool_calls:
            slot = calls.setdefault(d.index, ["", "", ""])
            slot[0] = d.id or slot[0]
            slot[1] = d.name or slot[1]
            slot[2] += d.arguments
        finish = c.finish_reason or finish
        usage = c.usage or usage
    return "".join(c.text for c in chunks), [tuple(calls[i]) for i in sorted(calls)], finish, usage


@st.composite
def chunk_streams(draw, interleave_tools: bool) -> list[Chunk]:
    """Text pieces and tool calls (id + name first, then argument fragments), then a finish chunk.

    OpenAI may interleave the deltas of several tool calls; Anthropic streams one block at a time.
    """
    n_tools = draw(st.integers(0, 3))
    pieces: list[list[Chunk]] = []
    for i in range(n_tools):
        args = json.dumps(draw(json_args))
        cuts = sorted(draw(st.lists(st.integers(0, len(args)), max_size=3)))
        frags = [args[a:b] for a, b in zip([0, *cuts], [*cuts, len(args)], strict=True)]
        first = ToolCallDelta(i, id=f"call_{i}", name=draw(ident), arguments=frags[0])
        pieces.append(
            [Chunk(tool_calls=[first])] + [Chunk(tool_calls=[ToolCallDelta(i, arguments=f)]) for f in frags[1:]]
        )
    chunks: list[Chunk] = [Chunk(text=t) for t in draw(st.lists(text, max_size=3))]
    if interleave_tools:
        while any(pieces):
            live = [p for p in pieces if p]
            chunks.append(draw(st.sampled_from(live)).pop(0))
            if draw(st.booleans()):
                chunks.append(Chunk(text=draw(text)))
    else:
        for p in pieces:
            chunks += p
            if draw(st.booleans()):
                chunks.append(Chunk(text=draw(text)))
    finish = draw(st.sampled_from(["stop", "length", "tool_calls"]))
    chunks.append(Chunk(finish_reason=finish, usage=Usage(draw(st.integers(0, 999)), draw(st.integers(0, 999)))))
    return chunks


@SETTINGS
@given(chunk_streams(interleave_tools=True))
def test_openai_stream_encode_then_decode_round_trips(chunks):
    enc = OpenAIStreamEncoder("m", "chatcmpl-x", created=1, include_usage=True)
    dec = OpenAIStreamDecoder()
    objs = [o for c in chunks for o in enc.encode(c)] + enc.finish()
    decoded = [d for o in objs for d in dec.feed(json.loads(json.dumps(o)))]
    assert _fold(decoded) == _fold(chunks)


@SETTINGS
@given(chunk_streams(interleave_tools=False))
def test_anthropic_stream_encode_then_decode_round_trips(chunks):
    enc = AnthropicStreamEncoder("m", "msg_x")
    dec = AnthropicStreamDecoder()
    events = [e for c in chunks for e in enc.encode(c)] + enc.finish()
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop")
    decoded = [d for n, o in events for d in dec.feed(n, json.loads(json.dumps(o)))]
    text, calls, finish, usage = _fold(decoded)
    want_text, want_calls, want_finish, want_usage = _fold(chunks)
    assert (text, calls, finish) == (want_text, want_calls, want_finish)
    # Anthropic reports input tokens in message_start, sent before the usage is known.
    assert usage.completion_tokens == want_usage.completion_tokens


# ---------------------------------------------------------------- hostile input


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
keys = st.sampled_from(
    [
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stop_sequences",
        "tools",
        "tool_choice",
        "system",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "seed",
        "n",
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "function",
        "name",
        "type",
        "text",
        "tool_use_id",
        "input",
        "arguments",
    ]
)
near_valid = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 5)
    | st.text(max_size=5)
    | st.sampled_from(["user", "assistant", "tool", "system", "text", "tool_use", "tool_result", "function"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(st.one_of(json_values, near_valid, openai_bodies(), anthropic_bodies()))
def test_parsers_only_ever_raise_rejected_error(body):
    from engine.types import RejectedError

    for parse in (request_from_openai, request_from_anthropic):
        try:
            req = parse(body)
        except RejectedError as exc:
            assert exc.status == 400 and str(exc)
        else:
            req.validate()


@st.composite
def mutated_bodies(draw) -> Any:
    """A valid body of either protocol with one value somewhere replaced by arbitrary JSON."""
    body = draw(st.one_of(openai_bodies(), anthropic_bodies()))
    node: Any = body
    while True:
        slots = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        key, child = draw(st.sampled_from(slots))
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.booleans()):
            key = draw(keys)  # a field the body may not have had
        node[key] = draw(st.one_of(st.integers(), st.text(max_size=3), json_values, near_valid))
        return body


@SETTINGS
@given(mutated_bodies())
def test_parsers_reject_mutated_bodies_cleanly(body):
    test_parsers_only_ever_raise_rejected_error.hypothesis.inner_test(body)
