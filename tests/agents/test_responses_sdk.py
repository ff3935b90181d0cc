"""The official openai SDK's Responses client (responses.create / responses.stream) against the
listener's POST /v1/responses: text, a function-call round trip, errors, a failure mid-stream."""

from __future__ import annotations

import openai
import pytest

from tests.agents.test_cli_clients import openai_tool_call_stream
from tests.fixtures.fake_upstream import OPENAI_PATH, Reply, openai_text_stream

pytestmark = pytest.mark.timeout(120)

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather of a city",
    "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def client(listener) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=listener.url + "/v1", api_key="unused", max_retries=0, timeout=60)


async def test_create_and_stream_text_through_a_cloud_route(listener, fake_upstream) -> None:
    c = client(listener)
    resp = await c.responses.create(
        model="agent-openai", input="What is the capital of France?", instructions="Be brief.", store=False
    )
    assert resp.status == "completed" and resp.output_text == "Hello from fake openai"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (5, 7)
    sent = fake_upstream.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == ["system", "user"] and sent["model"] == "gpt-fake"
    deltas: list[str] = []
    async with c.responses.stream(model="agent-openai", input="Hi") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from fake openai"
    assert final.usage.total_tokens == 12


async def test_create_and_stream_from_a_local_model(listener) -> None:
    c = client(listener)
    resp = await c.responses.create(model="agent-local", input="Hello", max_output_tokens=5, temperature=0)
    assert resp.status in ("completed", "incomplete") and resp.usage.output_tokens >= 1
    async with c.responses.stream(model="agent-local", input="Hello", max_output_tokens=5, temperature=0) as s:
        streamed = "".join([e.delta async for e in s if e.type == "response.output_text.delta"])
        final = await s.get_final_response() if resp.status == "completed" else None
    assert streamed == resp.output_text
    if final is not None:
        assert final.output_text == resp.output_text


@pytest.mark.parametrize("streamed", [False, True])
async def test_function_call_round_trip(listener, fake_upstream, streamed: bool) -> None:
    c = client(listener)
    fake_upstream.script(
        OPENAI_PATH,
        Reply(stream=openai_tool_call_stream("weather", {"city": "Rome"})),
        Reply(stream=openai_text_stream("Sunny in Rome.")),
    )
    question = [{"role": "user", "content": "Weather in Rome?"}]
    if streamed:
        async with c.responses.stream(model="agent-openai", input=question, tools=[WEATHER]) as s:
            args = [e.delta async for e in s if e.type == "response.function_call_arguments.delta"]
            first = await s.get_final_response()
        assert "".join(args) == '{"city": "Rome"}'
    else:
        first = await c.responses.create(model="agent-openai", input=question, tools=[WEATHER])
    [call] = first.output
    assert (call.type, call.name, call.call_id, call.arguments) == (
        "function_call",
        "weather",
        "call_up_1",
        '{"city": "Rome"}',
    )
    follow = [
        *question,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"},
    ]
    second = await c.responses.create(model="agent-openai", input=follow, tools=[WEATHER])
    assert second.output_text == "Sunny in Rome."
    sent = fake_upstream.requests[-1].json["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_up_1" and sent[-2]["tool_calls"][0]["function"]["name"] == "weather"
    assert sent[-1] == {"role": "tool", "content": "sunny, 24 C", "tool_call_id": "call_up_1"}


async def test_stateful_requests_and_unknown_models_get_typed_errors(listener) -> None:
    c = client(listener)
    with pytest.raises(openai.BadRequestError, match="stateless"):
        await c.responses.create(model="agent-openai", input="Hi", previous_response_id="resp_123")
    with pytest.raises(openai.BadRequestError, match="stateless"):
        await c.responses.create(model="agent-openai", input="Hi", store=True)
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(model="no-such-model", input="Hi")


async def test_a_failure_after_the_stream_began_is_response_failed(listener, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
    stream = await client(listener).responses.create(model="agent-openai", input="Hi", stream=True)
    kinds, failed = [], None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.failed":
            failed = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.failed"
    assert "response.output_text.delta" in kinds
    assert failed.status == "failed" and failed.error.message
