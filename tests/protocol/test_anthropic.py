"""Anthropic Messages <-> canonical: requests, responses, the event stream, errors."""

from __future__ import annotations

import json

import pytest

from engine.protocol.anthropic import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    error_body_anthropic,
    map_stop_reason,
    request_from_anthropic,
    request_to_anthropic,
    response_from_anthropic,
    response_to_anthropic,
    stop_reason_out,
)
from engine.types import (
    ChatRequest,
    ChatResult,
    Chunk,
    Message,
    ModelNotFoundError,
    RejectedError,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    UnavailableError,
    Usage,
)


def _req(*messages: Message, **kw) -> ChatRequest:
    return ChatRequest(model="claude-x", messages=list(messages), **kw)


def test_leading_system_hoisted_later_one_kept_in_place_consecutive_roles_merged_and_max_tokens_default():
    body = request_to_anthropic(
        _req(
            Message("system", "rule 1"),
            Message("user", "a"),
            Message("system", "rule 2"),
            Message("user", "b"),
            Message("assistant", "c"),
            Message("assistant", "d"),
        )
    )
    assert body["system"] == "rule 1"
    assert body["messages"] == [
        {"role": "user", "content": "a\n\nrule 2\n\nb"},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
    ]
    assert body["max_tokens"] == 4096
    assert request_to_anthropic(_req(Message("user", "x")), default_max_tokens=7)["max_tokens"] == 7
    assert request_to_anthropic(_req(Message("user", "x"), max_tokens=3))["max_tokens"] == 3


def test_conversation_starting_with_assistant_gets_a_user_turn_first():
    body = request_to_anthropic(_req(Message("system", "s"), Message("assistant", "hello"), Message("user", "q")))
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == "hello"


def test_temperature_clamped_stop_top_p_tools_and_tool_choice():
    tools = [ToolSpec("f", "does f", {"type": "object", "properties": {"x": {"type": "integer"}}}), ToolSpec("g")]
    body = request_to_anthropic(
        _req(Message("user", "x"), temperature=1.7, top_p=0.5, stop=["END"], tools=tools, tool_choice="required")
    )
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5 and body["stop_sequences"] == ["END"]
    assert body["tools"] == [
        {
            "name": "f",
            "description": "does f",
            "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert request_to_anthropic(_req(Message("user", "x"), temperature=0.3))["temperature"] == 0.3
    assert "temperature" not in request_to_anthropic(_req(Message("user", "x")))


@pytest.mark.parametrize(
    "choice, wire",
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"name": "f"}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_both_ways(choice, wire):
    assert request_to_anthropic(_req(Message("user", "x"), tool_choice=choice))["tool_choice"] == wire
    back = request_from_anthropic(
        {"model": "m", "max_tokens": 5, "tool_choice": wire, "messages": [{"role": "user", "content": "x"}]}
    )
    assert back.tool_choice == choice


def test_tool_calls_become_tool_use_and_consecutive_tool_results_merge_into_one_user_turn():
    body = request_to_anthropic(
        _req(
            Message("user", "weather in Paris and Rome?"),
            Message(
                "assistant",
                "checking",
                tool_calls=(
                    ToolCall("t1", "weather", '{"city":"Paris"}'),
                    ToolCall("t2", "weather", '{"city":"Rome"}'),
                ),
            ),
            Message("tool", "sunny", tool_call_id="t1"),
            Message("tool", "rain", tool_call_id="t2"),
            Message("user", "thanks"),
        )
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "t2", "name": "weather", "input": {"city": "Rome"}},
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "rain"},
            {"type": "text", "text": "thanks"},
        ],
    }
    assert len(body["messages"]) == 3


def test_invalid_tool_arguments_json_is_rejected():
    with pytest.raises(RejectedError) as info:
        request_to_anthropic(
            _req(Message("user", "x"), Message("assistant", "", tool_calls=(ToolCall("t", "f", "{not json"),)))
        )
    assert "messages[1].tool_calls" in str(info.value) and info.value.status == 400


def test_request_from_anthropic_blocks_system_blocks_tool_use_and_results():
    req = request_from_anthropic(
        {
            "model": "m",
            "max_tokens": 100,
            "stop_sequences": ["X"],
            "stream": True,
            "temperature": 0.2,
            "system": [{"type": "text", "text": "be "}, {"type": "text", "text": "nice"}],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "tu", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "tu", "content": [{"type": "text", "text": "42"}]}
                    ],
                },
            ],
        }
    )
    assert req.messages == [
        Message("system", "be nice"),
        Message("user", "hi"),
        Message("assistant", "calling", tool_calls=(ToolCall("tu", "f", '{"a": 1}'),)),
        Message("tool", "42", tool_call_id="tu"),
    ]
    assert (req.max_tokens, req.stop, req.stream, req.temperature) == (100, ["X"], True, 0.2)
    assert req.tools == [ToolSpec("f", "d", {"type": "object"})]


@pytest.mark.parametrize(
    "body, field",
    [
        ("x", "body"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5}, "model:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: is required"),
        ({"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens:"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages:"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role:"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": [{"type": "image"}]}]},
            "messages[0].content[0].type:",
        ),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages[0].content:"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0]:",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            "messages[0].content[0].source.type:",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}
                ],
            },
            "messages[0].content[0].is_error:",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "X"},
            "stop_sequences:",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "tools[0].name:",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "x"},
            },
            "tool_choice.type:",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature:",
        ),
    ],
)
def test_request_from_anthropic_rejects_with_field_level_400(body, field):
    with pytest.raises(RejectedError) as info:
        request_from_anthropic(body)
    assert info.value.status == 400 and field in str(info.value)


def test_response_both_ways():
    result = ChatResult(
        text="here", finish_reason="tool_calls", usage=Usage(9, 2), tool_calls=[ToolCall("tu_1", "f", '{"q": "x"}')]
    )
    body = response_to_anthropic(result, model="claude-x", id="msg_1")
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"] == "msg_1"
    assert body["content"] == [
        {"type": "text", "text": "here"},
        {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"q": "x"}},
    ]
    assert body["stop_reason"] == "tool_use" and body["usage"] == {"input_tokens": 9, "output_tokens": 2}
    back = response_from_anthropic(body)
    assert (back.text, back.finish_reason, back.tool_calls, back.usage) == (
        "here",
        "tool_calls",
        result.tool_calls,
        Usage(9, 2),
    )


@pytest.mark.parametrize(
    "wire, canon",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        (None, None),
    ],
)
def test_map_stop_reason(wire, canon):
    assert map_stop_reason(wire) == canon


@pytest.mark.parametrize(
    "canon, wire", [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), (None, None)]
)
def test_stop_reason_out(canon, wire):
    assert stop_reason_out(canon) == wire


def _feed_all(events: list[tuple[str, dict]]) -> list[Chunk]:
    dec = AnthropicStreamDecoder()
    out: list[Chunk] = []
    for name, obj in events:
        out += dec.feed(name, obj)
    return out


def test_decoder_full_stream_with_text_and_two_tool_uses():
    events = [
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        ("content_block_stop", {"index": 0}),
        (
            "content_block_start",
            {"index": 1, "content_block": {"type": "tool_use", "id": "tu_a", "name": "f", "input": {}}},
        ),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}),
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        ("content_block_stop", {"index": 1}),
        (
            "content_block_start",
            {"index": 2, "content_block": {"type": "tool_use", "id": "tu_b", "name": "g", "input": {}}},
        ),
        ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ("content_block_stop", {"index": 2}),
        ("some_future_event", {"type": "some_future_event"}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    chunks = _feed_all(events)
    assert "".join(c.text for c in chunks) == "Let me check."
    deltas = [d for c in chunks for d in c.tool_calls]
    assert [(d.index, d.id, d.name) for d in deltas if d.id] == [(0, "tu_a", "f"), (1, "tu_b", "g")]
    assert "".join(d.arguments for d in deltas if d.index == 0) == '{"a":1}'
    assert "".join(d.arguments for d in deltas if d.index == 1) == "{}"
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage == Usage(12, 30)


def test_decoder_error_event_mid_stream_raises_unavailable_with_type_and_message():
    dec = AnthropicStreamDecoder()
    dec.feed("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x"}})
    with pytest.raises(UnavailableError) as info:
        dec.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "overloaded_error" in str(info.value) and "Overloaded" in str(info.value)
    assert info.value.upstream_message == "Overloaded"


def test_encoder_exact_event_sequence():
    enc = AnthropicStreamEncoder("claude-x", "msg_9")
    events = enc.encode(Chunk(text="Hi"))
    events += enc.encode(Chunk(text=" there"))
    events += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, "tu_1", "f", "")]))
    events += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, arguments='{"a":1}')]))
    events += enc.encode(Chunk(finish_reason="tool_calls", usage=Usage(4, 6)))
    events += enc.finish()
    assert enc.finish() == []
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(obj["type"] == name for name, obj in events)
    assert events[0][1]["message"]["id"] == "msg_9" and events[0][1]["message"]["model"] == "claude-x"
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[5][1]["index"] == 1 and events[5][1]["content_block"]["type"] == "tool_use"
    assert events[5][1]["content_block"]["id"] == "tu_1" and events[5][1]["content_block"]["name"] == "f"
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}
    assert events[8][1]["delta"]["stop_reason"] == "tool_use" and events[8][1]["usage"] == {
        "input_tokens": 4,
        "output_tokens": 6,
    }


def test_encoder_empty_stream_still_has_one_block_and_end_turn():
    enc = AnthropicStreamEncoder("m", "id")
    names = [n for n, _ in enc.finish()]
    assert names == ["message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop"]


def test_encoder_error_event_and_nothing_after_it():
    enc = AnthropicStreamEncoder("m", "id")
    enc.encode(Chunk(text="partial"))
    name, body = enc.error_event(UnavailableError("upstream went away"))
    assert name == "error" and body == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream went away"},
    }
    assert enc.finish() == []


@pytest.mark.parametrize(
    "err, kind",
    [
        (RejectedError("bad"), "invalid_request_error"),
        (RejectedError("no key", status=401), "authentication_error"),
        (ModelNotFoundError("nope"), "not_found_error"),
        (UnavailableError("slow", status=429), "rate_limit_error"),
        (UnavailableError("busy", status=529), "overloaded_error"),
        (UnavailableError("boom", status=500), "api_error"),
    ],
)
def test_error_body_anthropic_types(err, kind):
    assert error_body_anthropic(err) == {"type": "error", "error": {"type": kind, "message": str(err)}}


def test_encoded_events_are_json_and_decode_back():
    enc = AnthropicStreamEncoder("m", "id")
    events = enc.encode(Chunk(text="ok")) + enc.encode(Chunk(finish_reason="length", usage=Usage(1, 2))) + enc.finish()
    chunks = _feed_all([(n, json.loads(json.dumps(o))) for n, o in events])
    assert "".join(c.text for c in chunks) == "ok" and chunks[-1].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 2


U = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"tools": 5}, "tools: must be a list"),
        ({"tools": [{"name": "f", "input_schema": 5}]}, "tools[0].input_schema:"),
        ({"tools": [{"name": "f", "description": 5}]}, "tools[0].description:"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": 5}]}]},
            "messages[0].content[0].input:",
        ),
        ({"system": 5}, "system:"),
        ({"tool_choice": {"type": "tool", "name": 5}}, "tool_choice.name:"),
        ({"max_tokens": 0}, "max_tokens:"),
    ],
)
def test_request_from_anthropic_wrong_container_types_are_400(extra, field):
    with pytest.raises(RejectedError) as info:
        request_from_anthropic({"model": "m", "max_tokens": 3, "messages": U, **extra})
    assert info.value.status == 400 and field in str(info.value)


def test_decoder_ignores_thinking_blocks_and_unknown_delta_types():
    chunks = _feed_all(
        [
            ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            ("content_block_stop", {"index": 0}),
            ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "answer"}}),
            ("message_delta", {"delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 2}}),
        ]
    )
    assert "".join(c.text for c in chunks) == "answer"
    assert not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == "length"
