"""OpenAI chat-completions <-> canonical: requests, responses, streams, errors."""

from __future__ import annotations

import json

import pytest

from engine.protocol.openai import (
    OpenAIStreamDecoder,
    OpenAIStreamEncoder,
    error_body_openai,
    parse_openai_error,
    request_from_openai,
    request_to_openai,
    response_from_openai,
    response_to_openai,
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

TOOL_CONVERSATION = ChatRequest(
    model="gpt-x",
    messages=[
        Message("system", "be brief"),
        Message("user", "weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "weather", '{"city":"Paris"}'),)),
        Message("tool", "sunny", tool_call_id="call_1"),
    ],
    max_tokens=50,
    temperature=1.5,
    top_p=0.9,
    stop=["\n\n"],
    seed=3,
    tools=[ToolSpec("weather", "get weather", {"type": "object", "properties": {"city": {"type": "string"}}})],
    tool_choice={"name": "weather"},
)


def test_request_to_openai_maps_every_field():
    body = request_to_openai(TOOL_CONVERSATION)
    assert body["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "get weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        50,
        1.5,
        0.9,
        ["\n\n"],
        3,
    )
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_request_to_openai_max_completion_tokens_and_no_stream_options_when_not_streaming():
    req = ChatRequest(model="m", messages=[Message("user", "hi")], max_tokens=9, stream=False)
    body = request_to_openai(req, max_tokens_field="max_completion_tokens")
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body
    assert "stream_options" not in body and body["stream"] is False


def test_request_from_openai_parses_the_tool_conversation_back():
    req = request_from_openai(request_to_openai(TOOL_CONVERSATION))
    assert req.messages == TOOL_CONVERSATION.messages
    assert req.tools == TOOL_CONVERSATION.tools
    assert req.tool_choice == {"name": "weather"}
    assert req.metadata["include_usage"] is True


def test_request_from_openai_text_parts_stop_string_and_max_completion_tokens():
    req = request_from_openai(
        {
            "model": "m",
            "max_completion_tokens": 5,
            "stop": "END",
            "messages": [
                {"role": "developer", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
        }
    )
    assert req.messages == [Message("system", "sys"), Message("user", "ab")]
    assert req.max_tokens == 5 and req.stop == ["END"] and req.stream is False
    assert req.metadata["include_usage"] is False


@pytest.mark.parametrize(
    "body, field",
    [
        ([], "body"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model:"),
        ({"model": "m"}, "messages:"),
        ({"model": "m", "messages": []}, "messages:"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "x"}]},
            "messages[1].role:",
        ),
        ({"model": "m", "messages": ["hi"]}, "messages[0]:"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id:"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": True}, "temperature:"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream:"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools[0].function.name:",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}, "tool_choice:"),
        (
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]},
            "messages[0].tool_calls[0].function.name:",
        ),
    ],
)
def test_request_from_openai_rejects_with_field_level_400(body, field):
    with pytest.raises(RejectedError) as info:
        request_from_openai(body)
    assert info.value.status == 400
    assert field in str(info.value)


def test_image_content_is_a_clear_400():
    with pytest.raises(RejectedError) as info:
        request_from_openai(
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": "data:..."}},
                        ],
                    }
                ],
            }
        )
    assert info.value.status == 400
    assert "messages[0].content[1].type" in str(info.value) and "image content" in str(info.value)
    assert "not supported" in str(info.value)


def test_response_round_trip_with_tool_calls_and_usage():
    result = ChatResult(
        text="", finish_reason="tool_calls", usage=Usage(11, 4), tool_calls=[ToolCall("call_9", "f", '{"x":1}')]
    )
    body = response_to_openai(result, model="m", id="chatcmpl-1", created=123)
    assert body["object"] == "chat.completion" and body["created"] == 123 and body["id"] == "chatcmpl-1"
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"]["content"] is None
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    back = response_from_openai(body)
    assert (back.text, back.finish_reason, back.tool_calls, back.usage.prompt_tokens, back.usage.completion_tokens) == (
        "",
        "tool_calls",
        result.tool_calls,
        11,
        4,
    )


def test_response_from_openai_text_and_length():
    r = response_from_openai(
        {"model": "m", "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}]}
    )
    assert (r.text, r.finish_reason, r.model, r.usage.total_tokens) == ("hi", "length", "m", 0)


def test_response_from_openai_without_choices_is_an_error():
    with pytest.raises(ValueError):
        response_from_openai({"choices": []})


def _chunk(delta=None, finish=None, **extra):
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }


def test_decoder_text_tool_call_deltas_by_index_finish_and_usage_only_final_chunk():
    dec = OpenAIStreamDecoder()
    out: list[Chunk] = []
    out += dec.feed(_chunk({"role": "assistant", "content": ""}))
    out += dec.feed(_chunk({"content": "Hel"}))
    out += dec.feed(_chunk({"content": "lo"}))
    out += dec.feed(
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "a", "arguments": ""}}]}
        )
    )
    out += dec.feed(
        _chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "c1", "type": "function", "function": {"name": "b", "arguments": '{"y"'}}
                ]
            }
        )
    )
    out += dec.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    out += dec.feed(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}))
    out += dec.feed(_chunk({}, "tool_calls"))
    final = dec.feed(
        {
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )
    assert "".join(c.text for c in out) == "Hello"
    assert len(final) == 1 and final[0].usage == Usage(7, 3) and final[0].finish_reason == "tool_calls"
    calls: dict[int, list[ToolCallDelta]] = {}
    for c in out:
        for d in c.tool_calls:
            calls.setdefault(d.index, []).append(d)
    assert calls[0][0].id == "c0" and calls[0][0].name == "a"
    assert "".join(d.arguments for d in calls[0]) == "{}"
    assert "".join(d.arguments for d in calls[1]) == '{"y":2}'
    assert out[-1].finish_reason == "tool_calls"


def test_decoder_role_only_chunk_emits_nothing():
    assert OpenAIStreamDecoder().feed(_chunk({"role": "assistant"})) == []


def test_decoder_error_object_mid_stream_raises_unavailable():
    dec = OpenAIStreamDecoder()
    dec.feed(_chunk({"content": "partial"}))
    with pytest.raises(UnavailableError) as info:
        dec.feed({"error": {"message": "The server had an error", "type": "server_error"}})
    assert "The server had an error" in str(info.value)
    assert info.value.upstream_message == "The server had an error"


def test_encoder_emits_role_first_then_deltas_finish_and_usage_chunk():
    enc = OpenAIStreamEncoder("m", "chatcmpl-2", created=5, include_usage=True)
    objs = enc.encode(Chunk(text="Hi"))
    objs += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, "c0", "f", '{"a"')]))
    objs += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, arguments=":1}")]))
    objs += enc.encode(Chunk(finish_reason="tool_calls", usage=Usage(3, 2)))
    objs += enc.finish()
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(o["object"] == "chat.completion.chunk" and o["id"] == "chatcmpl-2" and o["created"] == 5 for o in objs)
    assert objs[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert objs[2]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    ]
    assert objs[3]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": ":1}"}}]
    assert objs[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert objs[-1]["choices"] == [] and objs[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
    }
    assert all(o["usage"] is None for o in objs[:-1])


def test_encoder_without_include_usage_has_no_usage_chunk_and_one_finish():
    enc = OpenAIStreamEncoder("m", "id", created=1)
    objs = enc.encode(Chunk(text="a", finish_reason="stop")) + enc.encode(Chunk(finish_reason="stop"))
    assert enc.finish() == []
    assert [o["choices"][0]["finish_reason"] for o in objs] == [None, None, "stop"]
    assert all("usage" not in o for o in objs)


def test_encoder_output_is_json_serialisable_and_decodes_back():
    enc = OpenAIStreamEncoder("m", "id", created=1, include_usage=True)
    dec = OpenAIStreamDecoder()
    chunks: list[Chunk] = []
    for o in enc.encode(Chunk(text="x")) + enc.encode(Chunk(finish_reason="length", usage=Usage(1, 1))) + enc.finish():
        chunks += dec.feed(json.loads(json.dumps(o)))
    assert "".join(c.text for c in chunks) == "x"
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage == Usage(1, 1)


@pytest.mark.parametrize(
    "err, kind",
    [
        (RejectedError("bad"), "invalid_request_error"),
        (RejectedError("no key", status=401), "authentication_error"),
        (ModelNotFoundError("no such model"), "not_found_error"),
        (UnavailableError("slow down", status=429), "rate_limit_error"),
        (UnavailableError("all backends unavailable"), "service_unavailable"),
        (UnavailableError("boom", status=500), "server_error"),
    ],
)
def test_error_body_openai_types(err, kind):
    body = error_body_openai(err)
    assert body["error"]["type"] == kind
    assert body["error"]["message"] == str(err)
    assert "code" in body["error"]


def test_parse_openai_error_json_bytes_text_and_fallback():
    assert parse_openai_error(400, b'{"error": {"message": "Invalid model", "type": "x"}}') == "Invalid model"
    assert parse_openai_error(400, {"error": "plain"}) == "plain"
    assert parse_openai_error(502, "<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert len(parse_openai_error(502, "x" * 5000)) <= 500
    assert parse_openai_error(500, b"") == "HTTP 500"
    assert parse_openai_error(500, {"unrelated": 1}) == "HTTP 500"


U = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"messages": [{"role": "assistant", "tool_calls": 5}]}, "messages[0].tool_calls: must be a list"),
        ({"tools": 5}, "tools: must be a list"),
        ({"stream_options": {"include_usage": [1]}}, "stream_options.include_usage:"),
        ({"stream_options": 3}, "stream_options:"),
        ({"tool_choice": {"type": "function", "function": {"name": 5}}}, "tool_choice:"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]},
            "tools[0].function.parameters:",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "description": 5}}]},
            "tools[0].function.description:",
        ),
        ({"seed": 1.5}, "seed:"),
        ({"top_p": 0}, "top_p:"),
    ],
)
def test_request_from_openai_wrong_container_types_are_400(extra, field):
    with pytest.raises(RejectedError) as info:
        request_from_openai({"model": "m", "messages": U, **extra})
    assert info.value.status == 400 and field in str(info.value)


def test_decoder_ignores_other_choices_and_keeps_usage_sent_with_the_finish():
    dec = OpenAIStreamDecoder()
    assert dec.feed({"choices": [{"index": 1, "delta": {"content": "other"}, "finish_reason": None}]}) == []
    out = dec.feed(
        {
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1},
        }
    )
    assert len(out) == 1 and out[0].text == "x" and out[0].finish_reason == "length" and out[0].usage == Usage(2, 1)
