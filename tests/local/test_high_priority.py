"""A high request's prompt pauses the lower answers' decoding until its first token, for at most
HIGH_HOLD_S, and the paused answers go on with exactly the tokens they would have had.

Structural assertions only (steps held, steps interleaved, texts); bench/priority.py measures
the time to first token.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.local import generation
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, Chunk, Message, collect
from tests.local.test_prefill import MODEL, ask, engine_for, long_text, wait_until


@pytest.fixture
async def engine(tiny_models_dir: Path, tmp_path: Path):
    eng = engine_for(tiny_models_dir, tmp_path, prompt_cache_bytes=0, max_batch=2)
    yield eng
    await eng.aclose()


def runner(seed: int) -> ChatRequest:
    return ask(f"Hello {seed}", max_tokens=400)


async def first_text_sets(chunks: AsyncIterator[Chunk], decoding: asyncio.Event) -> AsyncIterator[Chunk]:
    """The chunks as they come; `decoding` is set at the first text (the prompt has been read)."""
    async for chunk in chunks:
        if chunk.text:
            decoding.set()
        yield chunk


async def high_among_runners(engine: LocalEngine, high: ChatRequest) -> tuple[list[str], str, int, int]:
    """Two normal answers decoding, then `high`: their texts, its text, and the held and
    interleaved steps counted while `high` ran."""
    decoding = [asyncio.Event() for _ in range(2)]
    runners = [asyncio.create_task(collect(first_text_sets(engine.stream(runner(i)), decoding[i]))) for i in range(2)]
    await wait_until(lambda: engine.snapshot().running == 2)
    # Both are decoding: each has its first token, so neither reads its prompt any more (a chunk
    # of it read beside the other's decoding would count as an interleaved step below).
    await asyncio.wait_for(asyncio.gather(*(d.wait() for d in decoding)), timeout=60)
    before = engine._worker.snapshot()
    top = await collect(engine.stream(high))
    after = engine._worker.snapshot()
    done = await asyncio.gather(*runners)
    return (
        [r.text for r in done],
        top.text,
        after.held_steps - before.held_steps,
        after.interleaved_steps - before.interleaved_steps,
    )


async def solo_texts(engine: LocalEngine, high: ChatRequest) -> tuple[list[str], str]:
    alone = [(await collect(engine.stream(runner(i)))).text for i in range(2)]
    return alone, (await collect(engine.stream(high))).text


async def test_lower_answers_pause_for_a_high_prompt_and_lose_nothing(engine: LocalEngine, monkeypatch: Any) -> None:
    monkeypatch.setattr(generation, "HIGH_HOLD_S", 600.0)
    text = await long_text(engine, 200)
    high = ChatRequest(model=MODEL, messages=[Message("user", text)], temperature=0, max_tokens=8, priority="high")
    alone, high_alone = await solo_texts(engine, high)
    prompt_tokens = await engine.count_tokens(MODEL, high.messages)

    texts, high_text, held, interleaved = await high_among_runners(engine, high)

    # Every step of its prompt (16-token chunks, then the step where the prompt ends) held the
    # runners; none of them decoded while reading it.
    chunks = math.ceil((prompt_tokens - 1) / 16)
    assert held == chunks + 1
    assert interleaved == 0
    # Parked and joined again, the answers are token for token what they were alone.
    assert texts == alone
    assert high_text == high_alone


async def test_the_pause_is_bounded_then_prompts_interleave_again(engine: LocalEngine, monkeypatch: Any) -> None:
    monkeypatch.setattr(generation, "HIGH_HOLD_S", 0.0)
    text = await long_text(engine, 200)
    high = ChatRequest(model=MODEL, messages=[Message("user", text)], temperature=0, max_tokens=8, priority="high")
    prompt_tokens = await engine.count_tokens(MODEL, high.messages)

    texts, _, held, interleaved = await high_among_runners(engine, high)

    assert held == 0
    assert interleaved == math.ceil((prompt_tokens - 1) / 16)
    assert all(texts)


async def test_a_normal_prompt_never_pauses_anyone(tiny_models_dir: Path, tmp_path: Path) -> None:
    engine = engine_for(tiny_models_dir, tmp_path, prompt_cache_bytes=0, max_batch=3)  # room for a third
    try:
        text = await long_text(engine, 200)
        normal = ChatRequest(model=MODEL, messages=[Message("user", text)], temperature=0, max_tokens=8)
        prompt_tokens = await engine.count_tokens(MODEL, normal.messages)

        _, _, held, interleaved = await high_among_runners(engine, normal)

        assert held == 0
        assert interleaved == math.ceil((prompt_tokens - 1) / 16)
    finally:
        await engine.aclose()
