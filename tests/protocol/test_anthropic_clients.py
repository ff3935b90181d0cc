"""Anthropic Messages as current clients (Claude Code) send them: system turns in `messages`,
block lists with cache_control, thinking settings and blocks, unknown fields, images, tool errors."""

from __future__ import annotations

import copy
import json

import pytest

from engine.protocol.anthropic import passthrough_headers, request_from_anthropic, request_to_anthropic
from engine.protocol.common import fold_system_turns
from engine.protocol.openai import request_to_openai
from engine.types import Attachment, ChatRequest, Message, RejectedError, ToolCall

PNG = "iVBORw0KGgoAAAANSUhEUg=="
BETA = "claude-code-20250219,per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01"


def claude_code_body() -> dict:
    """The shape of Claude Code's first request (texts shortened)."""
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328;"},
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "\nBe helpful.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>note</system-reminder>\n"},
                    {"type": "text", "text": "What is the capital of France?"},
                ],
            },
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "# Environment\ncwd: /tmp", "cache_control": {"type": "ephemeral"}}
                ],
            },
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a command",
                "input_schema": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
            {
                "name": "Later",
                "description": "deferred",
                "input_schema": {"type": "object"},
                "defer_loading": True,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "metadata": {"user_id": '{"device_id":"abc"}'},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
        "some_field_of_next_year": {"x": 1},
    }


def test_claude_code_first_request_parses_with_the_system_turn_in_place():
    req = request_from_anthropic(claude_code_body(), {"anthropic-beta": BETA, "x-api-key": "secret"})
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "x-anthropic-billing-header: cc_version=2.1.328;You are a Claude agent.\nBe helpful."),
        ("user", "<system-reminder>note</system-reminder>\nWhat is the capital of France?"),
        ("system", "# Environment\ncwd: /tmp"),
    ]
    # Server tools run only at Anthropic: not offered as functions to other backends.
    assert [t.name for t in req.tools] == ["Bash", "Later"]
    assert req.passthrough is not None and req.passthrough.protocol == "anthropic"
    assert {"thinking", "context_management", "output_config", "metadata", "some_field_of_next_year"} <= set(
        req.passthrough.fields
    )
    assert "model" not in req.passthrough.fields and "stream" not in req.passthrough.fields
    # Only the protocol header is kept, never the client's key.
    assert passthrough_headers(req) == {"anthropic-beta": BETA}


def test_anthropic_upstream_gets_the_clients_body_as_sent_with_the_routed_model():
    body = claude_code_body()
    req = request_from_anthropic(copy.deepcopy(body), {"anthropic-beta": BETA})
    routed = ChatRequest(**{**req.__dict__, "model": "claude-sonnet-real"})
    out = request_to_anthropic(routed)
    assert out == {**body, "model": "claude-sonnet-real"}


def test_openai_upstream_gets_system_turns_in_place_and_nothing_anthropic_only():
    req = request_from_anthropic(claude_code_body(), {"anthropic-beta": BETA})
    out = request_to_openai(req)
    assert [m["role"] for m in out["messages"]] == ["system", "user", "system"]
    assert out["messages"][2]["content"] == "# Environment\ncwd: /tmp"
    text = json.dumps(out)
    for anthropic_only in (
        "cache_control",
        "thinking",
        "context_management",
        "output_config",
        "defer_loading",
        "web_search",
        "metadata",
        BETA,
    ):
        assert anthropic_only not in text
    assert [t["function"]["name"] for t in out["tools"]] == ["Bash", "Later"]


def test_thinking_blocks_in_assistant_history_are_accepted_and_kept_for_anthropic_only():
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "list files"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "", "signature": "sig-abc"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Running ls."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]},
        ],
    }
    req = request_from_anthropic(copy.deepcopy(body))
    assert req.messages[1] == Message(
        "assistant", "Running ls.", tool_calls=(ToolCall("toolu_1", "Bash", '{"command": "ls"}'),)
    )
    assert request_to_anthropic(req)["messages"] == body["messages"]
    assert "sig-abc" not in json.dumps(request_to_openai(req))


def test_tool_result_with_is_error_round_trips_and_reads_as_an_error_elsewhere():
    body = {
        "model": "m",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "run it"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "x"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [{"type": "text", "text": "command not found"}],
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "try again"},
                ],
            },
        ],
    }
    req = request_from_anthropic(body)
    assert req.messages[2] == Message("tool", "command not found", tool_call_id="t1", is_error=True)
    assert req.messages[3] == Message("user", "try again")
    plain = ChatRequest(model="m", messages=req.messages)  # e.g. the same turns from another front end
    assert request_to_anthropic(plain)["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": "command not found",
        "is_error": True,
    }
    tool_msg = request_to_openai(req)["messages"][2]
    assert tool_msg == {"role": "tool", "content": "Error: command not found", "tool_call_id": "t1"}


def test_images_are_kept_for_backends_that_see_and_a_clear_400_for_others():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    req = request_from_anthropic(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}],
        }
    )
    assert req.messages[0].attachments == (Attachment("image", "image/png", PNG),)
    assert request_to_openai(req)["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    plain = ChatRequest(model="m", messages=req.messages)
    assert request_to_anthropic(plain)["messages"][0]["content"][1] == image
    with pytest.raises(RejectedError) as info:
        req.require_text_only("local")
    assert (
        info.value.status == 400
        and "messages[0] has image content" in str(info.value)
        and "'local' cannot read" in str(info.value)
    )
    # A screenshot read by a tool: OpenAI tool messages cannot carry it.
    shot = request_from_anthropic(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [
                {"role": "user", "content": "look"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [image]}]},
            ],
        }
    )
    with pytest.raises(RejectedError, match=r"messages\[2\].content: image content in a tool result"):
        request_to_openai(shot)


def test_fold_system_turns_keeps_the_order_of_the_words():
    m = [
        Message("system", "s0"),
        Message("user", "u1"),
        Message("system", "s1"),
        Message("assistant", "a1"),
        Message("system", "s2"),
        Message("user", "u2", attachments=(Attachment("image", "image/png", PNG),)),
    ]
    assert fold_system_turns(m) == [
        Message("system", "s0"),
        Message("user", "u1\n\ns1"),
        Message("assistant", "a1"),
        Message("user", "s2\n\nu2", attachments=(Attachment("image", "image/png", PNG),)),
    ]
    assert fold_system_turns(m, keep_leading=False)[0] == Message("user", "s0\n\nu1\n\ns1")
    after_tool = [
        Message("user", "q"),
        Message("assistant", "", tool_calls=(ToolCall("t", "f"),)),
        Message("tool", "r", tool_call_id="t"),
        Message("system", "note"),
    ]
    assert fold_system_turns(after_tool)[-2:] == [Message("tool", "r", tool_call_id="t"), Message("user", "note")]


THINKING_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Need the file."}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-1"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "opaque"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"file_path": "a"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
]


def test_thinking_blocks_with_signatures_survive_the_stream_both_ways():
    from engine.protocol.anthropic import AnthropicStreamDecoder, AnthropicStreamEncoder

    dec = AnthropicStreamDecoder()
    chunks = [c for name, obj in THINKING_STREAM for c in dec.feed(name, obj)]
    enc = AnthropicStreamEncoder("claude-x", "msg_1", 12)
    events = [e for c in chunks for e in enc.encode(c)] + enc.finish()
    starts = [obj["content_block"] for name, obj in events if name == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "redacted_thinking", "tool_use"]
    assert starts[1]["data"] == "opaque"
    deltas = [obj["delta"] for name, obj in events if name == "content_block_delta"]
    assert {"type": "thinking_delta", "thinking": "Need the file."} in deltas
    assert {"type": "signature_delta", "signature": "sig-1"} in deltas
    assert [obj["index"] for name, obj in events if name == "content_block_stop"] == [0, 1, 2]


async def test_thinking_collected_and_rendered_in_a_whole_message():
    from engine.protocol.anthropic import AnthropicStreamDecoder, response_from_anthropic, response_to_anthropic
    from engine.types import collect

    dec = AnthropicStreamDecoder()

    async def chunks():
        for name, obj in THINKING_STREAM:
            for c in dec.feed(name, obj):
                yield c

    result = await collect(chunks())
    body = response_to_anthropic(result, model="claude-x", id="msg_1")
    assert body["content"][:2] == [
        {"type": "thinking", "thinking": "Need the file.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    assert body["content"][2]["type"] == "tool_use" and body["stop_reason"] == "tool_use"
    assert response_from_anthropic(body).thinking == result.thinking


@pytest.mark.parametrize("junk", [[], {}, 3, None, True, "x"])
def test_junk_anywhere_in_an_anthropic_request_is_a_400_or_passed_through_never_a_crash(junk):
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    for field in ["system", "messages", "tools", "tool_choice", "thinking", "metadata", "stop_sequences", "top_k"]:
        try:
            request_from_anthropic({**base, field: junk})
        except RejectedError as exc:
            assert exc.status == 400
    blocks = [
        {"type": "text", "text": junk},
        {"type": "image", "source": junk},
        {"type": "tool_result", "tool_use_id": "t", "content": junk},
        {"type": junk},
        {"type": "document", "source": {"type": junk}},
    ]
    for role in ["user", "assistant", "system", junk]:
        for block in blocks:
            try:
                request_from_anthropic({**base, "messages": [{"role": role, "content": [block]}]})
            except RejectedError as exc:
                assert exc.status == 400


@pytest.mark.parametrize("role, kind", [("user", "tool_use"), ("assistant", "tool_result")])
def test_blocks_in_the_wrong_sides_turn_are_a_400(role, kind):
    with pytest.raises(RejectedError, match=rf"messages\[0\].content\[0\].type: '{kind}' blocks belong to"):
        request_from_anthropic(
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": role, "content": [{"type": kind, "name": "f", "tool_use_id": "t", "thinking": ""}]}
                ],
            }
        )
