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
        return {
            "id": "chatcmpl-tool",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    text = json.dumps(arguments)
    return [
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_up_1", "type": "function", "function": {"name": name, "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[:10]}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": text[10:]}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "chatcmpl-tool",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-fake",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        },
    ]


def workdir(tmp_path: Path) -> tuple[Path, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(parents=True)
    work.mkdir(parents=True)
    (work / "notes.txt").write_text(NOTE + "\n")
    return home, work


def upstream_says(fake_upstream, text: str) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream(text)))
    fake_upstream.set_default(ANTHROPIC_PATH, Reply(stream=anthropic_text_stream(text)))


async def claude(
    agent_clis, listener, home: Path, work: Path, model: str, prompt: str, key: str = "sk-unused-by-listener"
):
    with Trap() as trap:
        env = isolated_env(
            home, trap, ANTHROPIC_BASE_URL=listener.url, ANTHROPIC_API_KEY=key, ANTHROPIC_MODEL=model, **CLAUDE_QUIET
        )
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
        assert "claude-code-20250219" in asked[0].headers["anthropic-beta"]


async def test_claude_code_tool_round_trip_through_an_openai_upstream(agent_clis, listener, fake_upstream, tmp_path):
    home, work = workdir(tmp_path)
    call = openai_tool_call_stream("Read", {"file_path": str(work / "notes.txt")})
    fake_upstream.script(OPENAI_PATH, Reply(stream=call), Reply(stream=openai_text_stream(ANSWER)))
    result, elsewhere = await claude(
        agent_clis, listener, home, work, "agent-openai", "Read notes.txt and tell me the capital of France."
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ANSWER in result.stdout and elsewhere == []
    first, second = [r.json for r in fake_upstream.requests if r.path == OPENAI_PATH][:2]
    assert "Read" in [t["function"]["name"] for t in first["tools"]]
    call, answer = second["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["id"] == "call_up_1"
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_up_1" and NOTE in answer["content"]


def codex_home(tmp_path: Path, listener, model: str, keyed: bool = False) -> Path:
    """The config.toml of README "Use with Codex", pointed at this listener."""
    home = tmp_path / "codex-home"
    home.mkdir(parents=True)
    key_line = 'env_key = "MLXWB_LISTENER_KEY"\n' if keyed else ""
    (home / "config.toml").write_text(f'''model = "{model}"
model_provider = "workbench"
check_for_update_on_startup = false

[model_providers.workbench]
name = "mlx-workbench"
base_url = "{listener.url}/v1"
wire_api = "responses"
{key_line}
[analytics]
enabled = false

[features]
plugins = false
''')
    return home


async def codex(agent_clis, listener, tmp_path: Path, model: str, prompt: str, key: str | None = None):
    home, work = workdir(tmp_path)
    with Trap() as trap:
        env = isolated_env(
            home,
            trap,
            CODEX_HOME=str(codex_home(tmp_path, listener, model, keyed=bool(key))),
            **({"MLXWB_LISTENER_KEY": key} if key else {}),
        )
        result = await run([str(agent_clis["codex"]), "exec", "--skip-git-repo-check", prompt], env, work)
    return result, trap.seen


@pytest.mark.parametrize("route, path", [("agent-openai", OPENAI_PATH), ("agent-anthropic", ANTHROPIC_PATH)])
async def test_codex_prints_the_upstreams_answer(agent_clis, listener, fake_upstream, tmp_path, route, path):
    upstream_says(fake_upstream, ANSWER)
    result, elsewhere = await codex(agent_clis, listener, tmp_path, route, "What is the capital of France?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ANSWER in result.stdout
    assert elsewhere == []
    asked = [r.json for r in fake_upstream.requests if r.path == path]
    assert asked and asked[0]["stream"] is True


async def test_codex_tool_round_trip_through_an_openai_upstream(agent_clis, listener, fake_upstream, tmp_path):
    fake_upstream.script(
        OPENAI_PATH,
        Reply(stream=openai_tool_call_stream("exec_command", {"cmd": "cat notes.txt"})),
        Reply(stream=openai_text_stream(ANSWER)),
    )
    result, elsewhere = await codex(
        agent_clis, listener, tmp_path, "agent-openai", "Read notes.txt and tell me the capital of France."
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ANSWER in result.stdout and elsewhere == []
    first, second = [r.json for r in fake_upstream.requests if r.path == OPENAI_PATH][:2]
    assert "exec_command" in [t["function"]["name"] for t in first["tools"]]
    call, answer = second["messages"][-2:]
    assert call["tool_calls"][0] == {
        "id": "call_up_1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": '{"cmd": "cat notes.txt"}'},
    }
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_up_1" and NOTE in answer["content"]


@pytest.fixture
async def keyed_listener(workbench):
    from router.listener import Listener

    lst = Listener(workbench, "127.0.0.1", 0, api_key="listener-key-0123456789")
    await lst.start()
    yield lst
    await lst.stop()


async def test_both_clis_with_a_listener_key(agent_clis, keyed_listener, fake_upstream, tmp_path):
    upstream_says(fake_upstream, ANSWER)
    home, work = workdir(tmp_path / "claude")
    ok, elsewhere = await claude(
        agent_clis, keyed_listener, home, work, "agent-openai", "Hi", key="listener-key-0123456789"
    )
    assert ok.returncode == 0 and ANSWER in ok.stdout and elsewhere == [], ok.stdout + ok.stderr
    ok, elsewhere = await codex(
        agent_clis, keyed_listener, tmp_path / "codex", "agent-openai", "Hi", key="listener-key-0123456789"
    )
    assert ok.returncode == 0 and ANSWER in ok.stdout and elsewhere == [], ok.stdout + ok.stderr
