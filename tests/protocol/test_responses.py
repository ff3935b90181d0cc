"""OpenAI Responses API (stateless) <-> canonical: requests, the response object, the event stream,
each output checked against the official SDK's own types."""

from __future__ import annotations

import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from engine.protocol.responses import (
    ResponsesStreamEncoder,
    error_body_responses,
    request_from_responses,
    response_to_responses,
)
from engine.types import (
    Attachment,
    ChatRequest,
    ChatResult,
    Chunk,
    Message,
    RejectedError,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    UnavailableError,
    Usage,
)

EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def test_input_as_a_string_with_instructions_and_settings():
    req = request_from_responses(
        {
            "model": "m",
            "input": "Hi",
            "instructions": "Be brief.",
            "max_output_tokens": 20,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": True,
            "store": False,
            "reasoning": {"effort": "low"},
            "include": [],
            "prompt_cache_key": "k",
            "parallel_tool_calls": False,
            "text": {"verbosity": "low"},
        }
    )
    assert req.messages == [Message("system", "Be brief."), Message("user", "Hi")]
    assert (req.max_tokens, req.temperature, req.top_p, req.stream) == (20, 0.5, 0.9, True)


def test_input_items_messages_calls_outputs_and_reasoning_ignored():
    req = request_from_responses(
        {
            "model": "m",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "weather"},
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Rome?"}],
                },
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Rome"}'},
                {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
                {"type": "message", "role": "system", "content": "answer in one line"},
            ],
        }
    )
    assert req.messages == [
        Message("system", "rules"),
        Message("user", "Weather in Rome?"),
        Message(
            "assistant",
            "Checking.",
            tool_calls=(
                ToolCall("call_1", "weather", '{"city":"Rome"}'),
                ToolCall("call_2", "weather", '{"city":"Oslo"}'),
            ),
        ),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("tool", "rain", tool_call_id="call_2"),
        Message("system", "answer in one line"),
    ]
    assert req.tools == [ToolSpec("weather", "Weather of a city", WEATHER["parameters"])]
    assert req.tool_choice == {"name": "weather"}


def test_codex_tools_namespaces_flattened_hosted_tools_left_out_and_calls_name_their_namespace():
    agent = {
        "type": "function",
        "name": "close_agent",
        "description": "Close an agent",
        "strict": False,
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    req = request_from_responses(
        {
            "model": "m",
            "input": [
                {"type": "message", "role": "user", "content": "go"},
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {
                    "type": "function_call",
                    "namespace": "multi_agent_v1",
                    "call_id": "c0",
                    "name": "close_agent",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c0", "output": "closed"},
                {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "*** Begin Patch"},
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
            ],
            "tools": [
                WEATHER,
                {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents", "tools": [agent]},
                {"type": "web_search", "external_web_access": False},
            ],
        }
    )
    assert [t.name for t in req.tools] == ["weather", "close_agent"]
    assert req.messages[1].tool_calls == (ToolCall("c0", "close_agent", "{}"),)
    assert req.messages[3].tool_calls == (ToolCall("c1", "apply_patch", '{"input": "*** Begin Patch"}'),)
    assert req.messages[4] == Message("tool", "done", tool_call_id="c1")
    whole = Response.model_validate(
        response_to_responses(
            ChatResult("", "tool_calls", Usage(1, 1), tool_calls=[ToolCall("c2", "close_agent", "{}")]), req, id="z"
        )
    )
    assert whole.output[0].namespace == "multi_agent_v1"
    enc = ResponsesStreamEncoder(req, "s")
    events = (
        enc.encode(
            Chunk(tool_calls=[ToolCallDelta(0, "c3", "close_agent", "{}"), ToolCallDelta(1, "c4", "weather", "{}")])
        )
        + enc.finish()
    )
    final = Response.model_validate(events[-1][1]["response"])
    assert [(o.name, o.namespace) for o in final.output] == [("close_agent", "multi_agent_v1"), ("weather", None)]


def test_input_image_is_an_attachment():
    req = request_from_responses(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is it?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                }
            ],
        }
    )
    assert req.messages[0].attachments == (Attachment("image", "image/png", "AAAA"),)


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {"model": "m", "input": "x", "previous_response_id": "resp_1"},
            "previous_response_id: this listener is stateless",
        ),
        ({"model": "m", "input": "x", "store": True}, "store: this listener is stateless"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type: item_reference"),
        ({"input": "x"}, "model:"),
        ({"model": "m"}, "input: is required"),
        ({"model": "m", "input": []}, "input: is required"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input: has no message"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role:"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type:",
        ),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id:"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id:"),
        ({"model": "m", "input": [{"type": "local_shell_call"}]}, "input[0].type: unsupported input item"),
        ({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n"}]}, "tools[0]: a namespace needs"),
        ({"model": "m", "input": "x", "tools": ["f"]}, "tools[0]: must be an object"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name:"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "mcp"}}, "tool_choice:"),
        ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens:"),
        ({"model": "m", "input": "x", "max_output_tokens": 9.5}, "max_output_tokens:"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_tokens: must be at least 1"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature:"),
        ({"model": "m", "input": "x", "instructions": ["x"]}, "instructions:"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream:"),
    ],
)
def test_bad_requests_get_a_field_level_400(body, field):
    with pytest.raises(RejectedError) as info:
        request_from_responses(body)
    assert info.value.status == 400 and field in str(info.value)
    err = error_body_responses(info.value)["error"]
    assert err["type"] == "invalid_request_error" and field in err["message"]


def _req(**kw) -> ChatRequest:
    return ChatRequest(model="m", messages=[Message("user", "x")], **kw)


def test_whole_response_with_text_and_usage_is_a_valid_response_object():
    obj = response_to_responses(
        ChatResult("Paris.", "stop", Usage(12, 3)), _req(max_tokens=50), id="abc", created=1_700_000_000
    )
    resp = Response.model_validate(obj)
    assert resp.id == "resp_abc" and resp.status == "completed" and resp.output_text == "Paris."
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (12, 3, 15)
    assert resp.max_output_tokens == 50 and resp.store is False


def test_whole_response_with_function_calls_and_a_cut_answer():
    tools = [ToolSpec("weather", None, WEATHER["parameters"])]
    obj = response_to_responses(
        ChatResult("", "tool_calls", Usage(5, 9), tool_calls=[ToolCall("call_9", "weather", '{"city":"Rome"}')]),
        _req(tools=tools, tool_choice="required"),
        id="x",
    )
    resp = Response.model_validate(obj)
    [call] = resp.output
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call",
        "call_9",
        "weather",
        '{"city":"Rome"}',
    )
    assert resp.tools[0].name == "weather" and resp.tool_choice == "required"
    cut = Response.model_validate(response_to_responses(ChatResult("Par", "length", Usage(5, 1)), _req(), id="y"))
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def _types(events) -> list[str]:
    return [name for name, _ in events]


def _validated(events):
    for name, obj in events:
        assert name == obj["type"]
        EVENTS.validate_python(obj)
    assert [obj["sequence_number"] for _, obj in events] == list(range(len(events)))
    return events


def test_text_stream_event_sequence():
    enc = ResponsesStreamEncoder(_req(), "r1", created=1)
    events = (
        enc.encode(Chunk(text="Par"))
        + enc.encode(Chunk(text="is."))
        + enc.encode(Chunk(finish_reason="stop", usage=Usage(4, 2)))
        + enc.finish()
    )
    _validated(events)
    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    done = dict(events)
    assert done["response.output_text.done"]["text"] == "Paris."
    final = Response.model_validate(done["response.completed"]["response"])
    assert final.output_text == "Paris." and final.usage.output_tokens == 2
    assert {obj["response"]["id"] for name, obj in events if "response" in obj} == {"resp_r1"}
    assert enc.finish() == []


def test_function_call_stream_with_interleaved_parallel_calls():
    enc = ResponsesStreamEncoder(_req(), "r2")
    events = enc.encode(Chunk(text="Let me check."))
    events += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, "call_a", "weather", '{"ci')]))
    events += enc.encode(Chunk(tool_calls=[ToolCallDelta(1, "call_b", "weather", '{"city":"Oslo"}')]))
    events += enc.encode(Chunk(tool_calls=[ToolCallDelta(0, arguments='ty":"Rome"}')]))
    events += enc.encode(Chunk(finish_reason="tool_calls", usage=Usage(3, 8))) + enc.finish()
    _validated(events)
    names = _types(events)
    assert names.count("response.output_item.added") == 3 and names.count("response.output_item.done") == 3
    args_done = [obj for name, obj in events if name == "response.function_call_arguments.done"]
    assert [(o["output_index"], o["name"], o["arguments"]) for o in args_done] == [
        (1, "weather", '{"city":"Rome"}'),
        (2, "weather", '{"city":"Oslo"}'),
    ]
    final = Response.model_validate(events[-1][1]["response"])
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert [o.call_id for o in final.output[1:]] == ["call_a", "call_b"]


def test_length_cut_ends_with_response_incomplete_and_an_empty_answer_still_has_a_message():
    enc = ResponsesStreamEncoder(_req(), "r3")
    events = _validated(enc.encode(Chunk(text="Pa")) + enc.encode(Chunk(finish_reason="length")) + enc.finish())
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    empty = ResponsesStreamEncoder(_req(), "r4")
    events = _validated(empty.encode(Chunk(finish_reason="stop")) + empty.finish())
    assert Response.model_validate(events[-1][1]["response"]).output_text == ""


def test_failure_after_the_start_is_response_failed_with_the_partial_output():
    enc = ResponsesStreamEncoder(_req(), "r5")
    events = enc.encode(Chunk(text="Hal"))
    events += enc.error_events(UnavailableError("stream cut", backend="openai"))
    _validated(events)
    failed = Response.model_validate(events[-1][1]["response"])
    assert failed.status == "failed" and "stream cut" in failed.error.message
    assert failed.output[0].status == "incomplete"
    assert enc.finish() == [] and enc.error_events(UnavailableError("again")) == []


@pytest.mark.parametrize("junk", [[], {}, 3, None, True])
def test_junk_in_any_field_is_a_400_never_a_crash(junk):
    fields = [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "store",
        "previous_response_id",
    ]
    base = {"model": "m", "input": [{"role": "user", "content": "x"}]}
    for field in fields:
        try:
            request_from_responses({**base, field: junk})
        except RejectedError as exc:
            assert exc.status == 400
    for item_field in ["role", "content", "type", "call_id", "name", "arguments", "output"]:
        for kind in ["message", "function_call", "function_call_output"]:
            item = {
                "type": kind,
                "role": "user",
                "content": "x",
                "call_id": "c",
                "name": "f",
                "output": "o",
                item_field: junk,
            }
            try:
                request_from_responses({"model": "m", "input": [item]})
            except RejectedError as exc:
                assert exc.status == 400
