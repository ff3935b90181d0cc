"""End to end: the real Claude Code and Codex CLIs (pinned, from npm) against the listener, with the
scripted fake upstream behind it. They must print the upstream's answer and reach nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agents.clis import Trap, isolated_env, run
from tests.fixtures.fake_upstream import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    Reply,
    anthropic_text_stream,
    openai_text_stream,
)

pytestmark = pytest.mark.timeout(300)

ANSWER = "Paris, says the scripted upstream."
NOTE = "The capital of France is Paris."

# Turns off Claude Code's telemetry, error reports and update checks: without it, it also calls
# api.anthropic.com whatever ANTHROPIC_BASE_URL says (see README, "Use with Claude Code").
CLAUDE_QUIET = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}


def openai_tool_call_stream(name: str, arguments: dict) -> list[dict]:
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": "gpt-fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    text = json.dumps(arguments)
    return [chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [{"index": 0, "id": "call_up_1", "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[:10]}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[10:]}}]}),
            chunk({}, "tool_calls"),
            {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": "gpt-fake",
             "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}]


def workdir(tmp_path: Path) -> tuple[Path, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text(NOTE + "\n")
    return home, work


def upstream_says(fake_upstream, text: str) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream(text)))
    fake_upstream.set_default(ANTHROPIC_PATH, Reply(stream=anthropic_text_stream(text)))


async def claude(agent_clis, listener, home: Path, work: Path, model: str, prompt: str):
    with Trap() as trap:
        env = isolated_env(home, trap, ANTHROPIC_BASE_URL=listener.url, ANTHROPIC_API_KEY="sk-unused-by-listener",
                           ANTHROPIC_MODEL=model, **CLAUDE_QUIET)
        result = await run([str(agent_clis["claude"]), "-p", prompt], env, work)
    return result, trap.seen


@pytest.mark.parametrize("route, path", [("agent-openai", OPENAI_PATH), ("agent-anthropic", ANTHROPIC_PATH)])
async def test_claude_code_prints_the_upstreams_answer(agent_clis, listener, fake_upstream, tmp_path, route, path):
    upstream_says(fake_upstream, ANSWER)
    home, work = workdir(tmp_path)
    result, elsewhere = await claude(agent_clis, listener, home, work, route, "What is the capital of France?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ANSWER in result.stdout
    assert elsewhere == []
    asked = [r for r in fake_upstream.requests if r.path == path]
    assert asked and all(r.json["stream"] for r in asked)
    if path == ANTHROPIC_PATH:
        assert asked[0].json["thinking"] == {"type": "adaptive", "display": "omitted"}
        assert any(m["role"] == "system" for m in asked[0].json["messages"])


async def test_claude_code_tool_round_trip_through_an_openai_upstream(agent_clis, listener, fake_upstream, tmp_path):
    home, work = workdir(tmp_path)
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_tool_call_stream("Read", {"file_path": str(work / "notes.txt")})),
                         Reply(stream=openai_text_stream(ANSWER)))
    result, elsewhere = await claude(agent_clis, listener, home, work, "agent-openai",
                                     "Read notes.txt and tell me the capital of France.")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ANSWER in result.stdout and elsewhere == []
    first, second = [r.json for r in fake_upstream.requests if r.path == OPENAI_PATH][:2]
    assert "Read" in [t["function"]["name"] for t in first["tools"]]
    call, answer = second["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["id"] == "call_up_1"
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_up_1" and NOTE in answer["content"]
