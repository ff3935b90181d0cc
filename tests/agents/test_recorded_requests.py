"""The requests Claude Code 2.1.328 and Codex 0.171.0 really sent (tests/agents/fixtures), replayed
over HTTP against the listener and answered through a local model and through both cloud backends."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from engine.protocol.sse import aiter_sse
from tests.agents.conftest import recorded
from tests.fixtures.fake_upstream import ANTHROPIC_PATH, OPENAI_PATH

pytestmark = pytest.mark.timeout(180)

CLAUDE = ["claude_code_first_turn", "claude_code_tool_result"]
CODEX = ["codex_first_turn", "codex_function_call_output"]


async def replay(listener, name: str, model: str, **changes: Any) -> tuple[int, list[tuple[str | None, dict]]]:
    """POST a recorded request with its own headers, the model swapped; the status and the SSE events."""
    rec = recorded(name)
    body = {**copy.deepcopy(rec["body"]), "model": model, **changes}
    url = listener.url + rec["path"] + (f"?{rec['query']}" if rec["query"] else "")
    headers = {**rec["headers"], "x-api-key": "unused", "authorization": "Bearer unused"}
    async with httpx.AsyncClient(timeout=120) as client, client.stream("POST", url, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, [(None, resp.json())]
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [(e.event, json.loads(e.data)) async for e in aiter_sse(resp.aiter_lines()) if e.data != "[DONE]"]
    return 200, events


def anthropic_text(events: list[tuple[str | None, dict]]) -> str:
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    return "".join(obj["delta"].get("text", "") for name, obj in events if name == "content_block_delta")


@pytest.mark.parametrize("name", CLAUDE)
async def test_claude_code_requests_answered_by_a_local_model(listener, name) -> None:
    status, events = await replay(listener, name, "agent-local", max_tokens=6, temperature=0)
    assert status == 200
    anthropic_text(events)
    assert events[-2][1]["usage"]["output_tokens"] >= 1


@pytest.mark.parametrize("name", CLAUDE)
async def test_claude_code_requests_through_an_openai_upstream_keep_system_turns_in_place(
    listener, fake_upstream, name
) -> None:
    status, events = await replay(listener, name, "agent-openai")
    assert status == 200 and anthropic_text(events) == "Hello from fake openai"
    [sent] = [r.json for r in fake_upstream.requests if r.path == OPENAI_PATH]
    roles = [m["role"] for m in sent["messages"]]
    assert roles[:3] == ["system", "user", "system"]
    if name == "claude_code_tool_result":
        assert roles[3:] == ["assistant", "tool"]
        assert sent["messages"][3]["tool_calls"][0]["function"]["name"] == "Read"
        assert "The capital of France is Paris." in sent["messages"][4]["content"]
    text = json.dumps(sent)
    assert "cache_control" not in text and "defer_loading" not in text and "thinking" not in sent
    assert sent["model"] == "gpt-fake" and len(sent["tools"]) == len(recorded(name)["body"]["tools"])


@pytest.mark.parametrize("name", CLAUDE)
async def test_claude_code_requests_through_an_anthropic_upstream_go_as_they_came(
    listener, fake_upstream, name
) -> None:
    status, events = await replay(listener, name, "agent-anthropic")
    assert status == 200 and anthropic_text(events) == "Hello from fake anthropic"
    [sent] = [r for r in fake_upstream.requests if r.path == ANTHROPIC_PATH]
    assert sent.json == {**recorded(name)["body"], "model": "claude-real"}
    assert sent.headers["anthropic-beta"] == recorded(name)["headers"]["anthropic-beta"]


async def test_claude_code_gets_the_anthropic_upstreams_thinking_blocks_with_their_signatures(
    listener, fake_upstream
) -> None:
    from tests.fixtures.fake_upstream import Reply
    from tests.protocol.test_anthropic_clients import THINKING_STREAM

    fake_upstream.script(ANTHROPIC_PATH, Reply(stream=THINKING_STREAM))
    status, events = await replay(listener, "claude_code_first_turn", "agent-anthropic")
    assert status == 200
    blocks = [obj["content_block"]["type"] for name, obj in events if name == "content_block_start"]
    assert blocks == ["thinking", "redacted_thinking", "tool_use"]
    deltas = [obj["delta"] for name, obj in events if name == "content_block_delta"]
    assert {"type": "signature_delta", "signature": "sig-1"} in deltas
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("model, how", [("agent-local", "exact"), ("agent-openai", "estimate")])
async def test_count_tokens_takes_claude_codes_request(listener, model, how) -> None:
    body = {**recorded("claude_code_first_turn")["body"], "model": model}
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.post(
            listener.url + "/v1/messages/count_tokens", json=body, headers=recorded("claude_code_first_turn")["headers"]
        )
    assert resp.status_code == 200 and resp.headers["x-mlxwb-token-count"] == how
    assert resp.json()["input_tokens"] > 100


def responses_text(events: list[tuple[str | None, dict]]) -> tuple[str, dict]:
    """The streamed text and the final response object of a Responses event stream."""
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"], names
    assert names[-1] in ("response.completed", "response.incomplete"), names
    text = "".join(obj["delta"] for name, obj in events if name == "response.output_text.delta")
    return text, events[-1][1]["response"]


@pytest.mark.parametrize("name", CODEX)
async def test_codex_requests_answered_by_a_local_model(listener, name) -> None:
    status, events = await replay(listener, name, "agent-local", max_output_tokens=6, temperature=0)
    assert status == 200
    text, final = responses_text(events)
    assert final["usage"]["output_tokens"] >= 1 and final["output"][0]["content"][0]["text"] == text


@pytest.mark.parametrize(
    ("name", "route", "path"),
    [(n, r, p) for n in CODEX for r, p in (("agent-openai", OPENAI_PATH), ("agent-anthropic", ANTHROPIC_PATH))],
)
async def test_codex_requests_through_cloud_upstreams(listener, fake_upstream, name, route, path) -> None:
    status, events = await replay(listener, name, route)
    text, final = responses_text(events)
    assert status == 200 and text == final["output"][0]["content"][0]["text"]
    assert text == ("Hello from fake openai" if path == OPENAI_PATH else "Hello from fake anthropic")
    [sent] = [r.json for r in fake_upstream.requests if r.path == path]
    recorded_tools = recorded(name)["body"]["tools"]
    functions = [t for t in recorded_tools if t["type"] == "function"]
    nested = [f for t in recorded_tools if t["type"] == "namespace" for f in t["tools"]]
    assert len(sent["tools"]) == len(functions) + len(nested)  # web_search left out
    if name == "codex_function_call_output" and path == OPENAI_PATH:
        call, result = sent["messages"][-2:]
        assert call["tool_calls"][0]["function"]["name"] == "exec_command"
        assert result["role"] == "tool" and "The capital of France is Paris." in result["content"]
    if path == ANTHROPIC_PATH:
        assert "system" in sent and sent["messages"][0]["role"] == "user"
