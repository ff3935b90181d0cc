"""An agent's prompt on a small local model: the context-limit 400 in the caller's own format,
raised from the token count before any prefill; and the rule that sends that model name to the cloud."""

from __future__ import annotations

import dataclasses

import anthropic
import openai
import pytest

from tests.agents.test_recorded_requests import replay

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "name, error_shape",
    [
        (
            "claude_code_first_turn",
            lambda body: (body["type"], body["error"]["type"]) == ("error", "invalid_request_error"),
        ),
        (
            "codex_first_turn",
            lambda body: body["error"]["type"] == "invalid_request_error" and "param" in body["error"],
        ),
    ],
)
async def test_a_prompt_over_the_context_is_a_400_in_the_callers_format(listener, name, error_shape) -> None:
    status, [(_, body)] = await replay(listener, name, "agent-small")
    assert status == 400 and error_shape(body)
    assert "context of 512 tokens" in body["error"]["message"]


async def test_the_sdks_get_a_typed_400(listener) -> None:
    long_text = "What is the capital of France? " * 400
    with pytest.raises(anthropic.BadRequestError, match="context of 512 tokens"):
        await anthropic.AsyncAnthropic(base_url=listener.url, api_key="x", max_retries=0).messages.create(
            model="agent-small", max_tokens=5, messages=[{"role": "user", "content": long_text}]
        )
    with pytest.raises(openai.BadRequestError, match="context of 512 tokens"):
        await openai.AsyncOpenAI(base_url=listener.url + "/v1", api_key="x", max_retries=0).responses.create(
            model="agent-small", input=long_text
        )


async def test_a_rule_sends_the_model_name_to_the_cloud(listener, workbench, fake_upstream) -> None:
    [small] = [r for r in workbench.store.list_rules() if r.pattern == "agent-small"]
    status, _ = await replay(listener, "claude_code_first_turn", "agent-small")
    assert status == 400
    workbench.store.update_rule(dataclasses.replace(small, backend="openai", model="gpt-fake"))
    status, events = await replay(listener, "claude_code_first_turn", "agent-small")
    assert status == 200
    assert (
        "".join(o["delta"].get("text", "") for n, o in events if n == "content_block_delta") == "Hello from fake openai"
    )
    assert fake_upstream.requests[-1].json["model"] == "gpt-fake"
