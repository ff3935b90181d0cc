"""What each kind of backend makes of a coding agent's request: the Anthropic cloud backend sends
the client's body and anthropic-beta as they came, the OpenAI one sends plain chat turns, the
local engine folds system turns its template refuses and answers images with a 400."""

from __future__ import annotations

import copy
import json

import pytest

from engine.cloud.anthropic import AnthropicBackend
from engine.cloud.openai import OpenAIBackend
from engine.config import EngineConfig
from engine.local.engine import LocalEngine, render_prompt
from engine.protocol.anthropic import request_from_anthropic
from engine.types import ChatRequest, Message, RejectedError, collect
from tests.fixtures.fake_upstream import ANTHROPIC_PATH, OPENAI_PATH
from tests.protocol.test_anthropic_clients import BETA, PNG, claude_code_body

pytestmark = pytest.mark.timeout(120)


async def test_anthropic_backend_forwards_the_clients_body_and_beta_header(fake_upstream) -> None:
    body = claude_code_body()
    req = request_from_anthropic(copy.deepcopy(body), {"anthropic-beta": BETA})
    backend = AnthropicBackend(fake_upstream.anthropic_config(extra_headers={"anthropic-beta": "own-beta"}), "sk-a")
    try:
        result = await collect(backend.stream(ChatRequest(**{**req.__dict__, "model": "claude-real"})))
    finally:
        await backend.aclose()
    assert result.text == "Hello from fake anthropic"
    [seen] = [r for r in fake_upstream.requests if r.path == ANTHROPIC_PATH]
    assert seen.json == {**body, "model": "claude-real"}
    assert seen.headers["anthropic-beta"] == f"own-beta,{BETA}"
    assert seen.headers["x-api-key"] == "sk-a"


async def test_openai_backend_gets_plain_turns_without_anthropic_fields(fake_upstream) -> None:
    req = request_from_anthropic(claude_code_body(), {"anthropic-beta": BETA})
    backend = OpenAIBackend(fake_upstream.openai_config(), "sk-o")
    try:
        result = await collect(backend.stream(ChatRequest(**{**req.__dict__, "model": "gpt-x"})))
    finally:
        await backend.aclose()
    assert result.text == "Hello from fake openai"
    [seen] = [r for r in fake_upstream.requests if r.path == OPENAI_PATH]
    assert [m["role"] for m in seen.json["messages"]] == ["system", "user", "system"]
    assert "anthropic-beta" not in seen.headers
    assert "cache_control" not in seen.body.decode() and "thinking" not in seen.json


class StrictTemplate:
    """A tokenizer whose chat template, like many, accepts a system turn only at the start (or none)."""

    chat_template = "strict"

    def __init__(self, allow_system: bool = True) -> None:
        self.allow_system = allow_system
        self.rendered: list[list[dict]] = []

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=True, tokenize=False):
        for i, m in enumerate(messages):
            if m["role"] == "system" and (i > 0 or not self.allow_system):
                raise ValueError("System message must be at the beginning.")
        self.rendered.append(messages)
        return "".join(f"<{m['role']}>{m['content']}" for m in messages)

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


@pytest.mark.parametrize("allow_system", [True, False])
def test_local_template_that_refuses_system_turns_gets_them_folded_in_place(allow_system: bool) -> None:
    tok = StrictTemplate(allow_system)
    req = ChatRequest(
        model="m", messages=[Message("system", "rules"), Message("user", "q"), Message("system", "env: /tmp")]
    )
    text = "".join(chr(t) for t in render_prompt(tok, req))
    if allow_system:
        assert text == "<system>rules<user>q\n\nenv: /tmp"
    else:
        assert text == "<user>rules\n\nq\n\nenv: /tmp"


async def test_local_engine_answers_an_image_with_a_400_and_a_system_turn_in_place(tiny_models_dir, tmp_path):
    engine = LocalEngine(EngineConfig(data_dir=tmp_path / "d", model_dirs=[tiny_models_dir], scan_hf_cache=False))
    try:
        seeing = request_from_anthropic(
            {
                "model": "tiny-llama-mlx",
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                        ],
                    }
                ],
            }
        )
        with pytest.raises(RejectedError) as info:
            await collect(engine.stream(seeing))
        assert info.value.status == 400 and "image" in str(info.value) and "'local'" in str(info.value)
        body = claude_code_body()
        body.update(model="tiny-llama-mlx", max_tokens=3, temperature=0)
        body.pop("tools")
        result = await collect(engine.stream(request_from_anthropic(body)))
        assert result.usage.completion_tokens >= 1
    finally:
        await engine.aclose()


def test_recorded_bodies_never_hold_the_clients_key() -> None:
    req = request_from_anthropic(claude_code_body(), {"anthropic-beta": BETA, "x-api-key": "sk-secret"})
    assert "sk-secret" not in json.dumps(req.passthrough.fields) + json.dumps(req.passthrough.headers)
