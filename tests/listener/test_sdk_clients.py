"""The official openai and anthropic SDKs against the listener on 127.0.0.1."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.fixtures.fake_upstream import OPENAI_PATH


def oai(listener, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=listener.url + "/v1", api_key=key, max_retries=0, timeout=60)


def anth(listener, key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=listener.url, api_key=key, max_retries=0, timeout=60)


async def test_openai_sdk_non_streamed_and_streamed_from_the_local_model(listener) -> None:
    client = oai(listener)
    reply = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    text = reply.choices[0].message.content
    assert text and reply.usage.completion_tokens > 0 and reply.choices[0].finish_reason in ("stop", "length")
    stream = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == text
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens


async def test_anthropic_sdk_non_streamed_and_streamed_from_the_local_model(listener) -> None:
    client = anth(listener)
    msg = await client.messages.create(
        model="tiny",
        max_tokens=8,
        extra_body={"temperature": 0},
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    text = msg.content[0].text
    assert text and msg.stop_reason in ("end_turn", "max_tokens") and msg.usage.output_tokens > 0
    async with client.messages.stream(
        model="tiny",
        max_tokens=8,
        extra_body={"temperature": 0},
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    ) as stream:
        streamed = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert streamed == text and final.usage.output_tokens == msg.usage.output_tokens


async def test_anthropic_client_served_by_openai_upstream_through_failover(listener, fake_upstream) -> None:
    fake_upstream.script(OPENAI_PATH, 503)
    msg = await anth(listener).messages.create(
        model="gpt-fake", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
    )
    assert msg.content[0].text == "Hello from fake anthropic"
    reply = await oai(listener).chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello from fake anthropic"
    reply = await oai(listener).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello from fake openai"


async def test_typed_errors_for_400_404_503(listener, fake_upstream) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        await oai(listener).chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.NotFoundError, match="not found"):
        await oai(listener).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        await anth(listener).messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        await anth(listener).messages.create(model="tiny", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    fake_upstream.set_default(OPENAI_PATH, 500)
    fake_upstream.set_default("/v1/messages", 500)
    with pytest.raises(openai.InternalServerError) as exc:
        await oai(listener).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 503 and "all backends unavailable" in str(exc.value)
    with pytest.raises(anthropic.InternalServerError) as aexc:
        await anth(listener).messages.create(
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert aexc.value.status_code == 503


async def test_typed_401_with_a_listener_key(workbench) -> None:
    from router.listener import Listener

    lst = Listener(workbench, "127.0.0.1", 0, api_key="listener-key-123")
    await lst.start()
    try:
        with pytest.raises(openai.AuthenticationError):
            await oai(lst, "wrong").chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(anthropic.AuthenticationError):
            await anth(lst, "wrong").messages.create(
                model="tiny", max_tokens=4, messages=[{"role": "user", "content": "x"}]
            )
        ok = await oai(lst, "listener-key-123").chat.completions.create(
            model="tiny", max_tokens=3, messages=[{"role": "user", "content": "x"}]
        )
        assert ok.choices[0].message.content is not None
        msg = await anth(lst, "listener-key-123").messages.create(
            model="tiny", max_tokens=3, messages=[{"role": "user", "content": "x"}]
        )
        assert msg.content
    finally:
        await lst.stop()


async def test_sdks_raise_on_a_failure_after_streaming_began(listener, fake_upstream) -> None:
    from tests.fixtures.fake_upstream import Reply, openai_text_stream

    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
    stream = await oai(listener).chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "Hi"}]
    )
    got: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "".join(got)  # the text before the cut did arrive
    fake_upstream.script(OPENAI_PATH, Reply(stream=openai_text_stream("a b c d e f g"), cut_after=3))
    with pytest.raises(anthropic.APIStatusError):
        async with anth(listener).messages.stream(
            model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
        ) as s:
            async for _ in s.text_stream:
                pass
