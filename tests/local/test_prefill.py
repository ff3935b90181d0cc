"""Chunked prefill on the MLX thread: prompts are read a chunk per step, between decode steps of the
other answers, and a cancelled request leaves before its next chunk, freeing its place.

The assertions are structural (chunks read, steps that did both, batch sizes seen, where a request
stopped), never wall-clock thresholds; bench/multiturn.py measures the times.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.local.engine import LocalEngine, render_prompt
from engine.local.generation import Finished, GenerationHandle, GenParams, Submission
from engine.local.pacing import PrefillPacer
from engine.types import CancelledError, ChatRequest, EngineError, Message, collect

MODEL = "tiny-llama-mlx"
SENTENCE = "The quick brown fox jumps over the lazy dog. "


def engine_for(models_dir: Path, tmp_path: Path, **kw: Any) -> LocalEngine:
    kw.setdefault("prefill_chunk_tokens", 16)
    return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False, **kw))


@pytest.fixture
async def engine(tiny_models_dir: Path, tmp_path: Path):
    eng = engine_for(tiny_models_dir, tmp_path, prompt_cache_bytes=0)
    yield eng
    await eng.aclose()


def ask(text: str, **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 16)
    return ChatRequest(model=MODEL, messages=[Message("user", text)], **kw)


async def long_text(engine: LocalEngine, tokens: int) -> str:
    """A prompt of about `tokens` tokens (under the tiny model's context of 512)."""
    text = SENTENCE
    while await engine.count_tokens(MODEL, [Message("user", text + SENTENCE)]) < tokens:
        text += SENTENCE
    return text


async def wait_until(condition: Any, limit_s: float = 60.0) -> None:
    """Poll a condition about the MLX thread's published state (it has no event to await)."""
    for _ in range(int(limit_s / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met in time")


class Direct:
    """A request submitted to the MLX thread by hand, to watch and steer it chunk by chunk."""

    def __init__(self, engine: LocalEngine, request: ChatRequest) -> None:
        self.engine, self.request = engine, request
        self.handle = GenerationHandle(asyncio.get_running_loop())
        self.prompt_tokens = 0

    async def start(self) -> Direct:
        eng, info = self.engine, self.engine.resolve(self.request.model)

        def begin() -> None:
            loaded = eng._manager.get(info)
            prompt = render_prompt(loaded.tokenizer, self.request)
            self.prompt_tokens = len(prompt)
            params = GenParams(
                max_tokens=self.request.max_tokens or 16,
                temperature=self.request.temperature or 0,
                seed=self.request.seed,
            )
            eng._worker.enqueue(Submission(self.handle, info.id, loaded.model, loaded.tokenizer, prompt, params))

        await eng._worker.run(begin)
        return self

    async def result(self) -> tuple[str, Finished | EngineError]:
        text = []
        while True:
            item = await asyncio.wait_for(self.handle.queue.get(), timeout=120)
            if isinstance(item, str):
                text.append(item)
            else:
                return "".join(text), item


async def test_a_long_prompt_is_read_in_chunks(engine: LocalEngine) -> None:
    text = await long_text(engine, 300)
    before = engine._worker.snapshot().prefill_chunks
    result = await collect(engine.stream(ask(text)))
    read = engine._worker.snapshot().prefill_chunks - before
    # All but the last prompt token are read in chunks of 16.
    assert read == math.ceil((result.usage.prompt_tokens - 1) / 16)


async def test_a_cancelled_prompt_leaves_before_its_next_chunk(engine: LocalEngine) -> None:
    text = await long_text(engine, 400)
    alone = await collect(engine.stream(ask("Hello world", max_tokens=40)))
    other = await Direct(engine, ask("Hello world", max_tokens=40)).start()
    victim = Direct(engine, ask(text))

    def cancel_after_third(chunks: int) -> None:
        if chunks == 3:
            victim.handle.cancelled.set()

    victim.handle.on_prefill_chunk = cancel_after_third
    await victim.start()
    text_v, end_v = await victim.result()
    assert isinstance(end_v, CancelledError) and text_v == ""
    # Not one more chunk after the flag: the request left at the next turn of the thread.
    assert victim.handle.prefill_chunks == 3 < math.ceil(victim.prompt_tokens / 16)
    # The request beside it in the batch is unharmed.
    text_o, end_o = await other.result()
    assert isinstance(end_o, Finished) and text_o == alone.text
    # Its place is free: nothing is left running or queued.
    await asyncio.sleep(0)
    snap = engine._worker.snapshot()
    assert (snap.running, snap.queued) == (0, 0)


async def test_prompt_chunks_interleave_with_the_decode_steps_of_running_answers(engine: LocalEngine) -> None:
    text = await long_text(engine, 400)
    runner = await Direct(engine, ask("Hello world", max_tokens=300, temperature=1.0, seed=3)).start()
    await wait_until(lambda: not runner.handle.queue.empty())  # the runner is decoding
    snap0 = engine._worker.snapshot()
    reader = await Direct(engine, ask(text, max_tokens=4)).start()
    _, end_r = await reader.result()
    snap1 = engine._worker.snapshot()
    _, end_run = await runner.result()
    assert isinstance(end_r, Finished) and isinstance(end_run, Finished)
    assert end_run.completion_tokens == 300  # still decoding through the whole prompt read
    chunks = reader.handle.prefill_chunks
    assert chunks == math.ceil((reader.prompt_tokens - 1) / 16)
    # Every step that read a chunk of the long prompt also gave the running answer a token.
    assert snap1.interleaved_steps - snap0.interleaved_steps == chunks
    assert snap1.models[0].max_running_seen == 2


async def test_closing_the_stream_cancels_a_request_still_in_its_prompt(engine: LocalEngine) -> None:
    text = await long_text(engine, 400)
    stream = engine.stream(ask(text))
    task = asyncio.ensure_future(stream.__anext__())
    await wait_until(lambda: engine._worker.snapshot().running > 0 or task.done())
    task.cancel()
    with pytest.raises((asyncio.CancelledError, StopAsyncIteration)):
        await task
    await stream.aclose()
    # The thread drops it and takes the next request.
    result = await asyncio.wait_for(collect(engine.stream(ask("Hello world", max_tokens=4))), timeout=60)
    assert result.usage.completion_tokens >= 1
    assert engine._worker.snapshot().running == 0


def test_chunks_follow_the_measured_speed() -> None:
    pacer = PrefillPacer(step_s=0.2)
    assert pacer.chunk(MODEL, [1000]) == 32  # nothing measured yet: a small first chunk
    pacer.record(MODEL, elapsed=0.2, read=200, decoded=False)  # 1 ms per token
    assert pacer.chunk(MODEL, [1000]) == 192  # 0.2 s worth, in a multiple of 16
    assert pacer.chunk(MODEL, [1000, 1000, 1000, 1000]) == 48  # shared by four prompts being read
    assert pacer.chunk(MODEL, [1000] * 8) == 32  # but never below the smallest chunk
    assert pacer.chunk(MODEL, [288]) == 288  # a rest that fits in 1.5 chunks is read in one step
    assert pacer.chunk(MODEL, [289]) == 192
    pacer.record(MODEL, elapsed=0.05, read=0, decoded=True)  # a decode step takes 50 ms
    pacer.record(MODEL, elapsed=0.25, read=200, decoded=True)  # 0.2 s of reading after the decode
    assert pacer.s_per_token[MODEL] == pytest.approx(0.001)
    slow = PrefillPacer(step_s=0.2)
    slow.record(MODEL, elapsed=1.0, read=10, decoded=False)
    assert slow.chunk(MODEL, [1000]) == 32  # never below the smallest chunk
    assert slow.chunk(MODEL, [48]) == 48
    fast = PrefillPacer(step_s=0.2)
    fast.record(MODEL, elapsed=0.001, read=2000, decoded=False)
    assert fast.chunk(MODEL, [10**6]) == 2048
    assert PrefillPacer(fixed_chunk=32).chunk(MODEL, [1000]) == 32


async def test_the_engine_measures_its_prefill_speed(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path, prefill_chunk_tokens=0)
    try:
        await collect(eng.stream(ask(await long_text(eng, 300))))
        assert eng._worker.pacer.s_per_token[MODEL] > 0
    finally:
        await eng.aclose()


@pytest.mark.demo
async def test_demo_model_a_cancelled_long_prompt_frees_the_thread(demo_model_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_path.name).symlink_to(demo_model_path)
    # Chunk sizes adapt to the measured speed here, as in use.
    eng = engine_for(models, tmp_path, prefill_chunk_tokens=0, prompt_cache_bytes=0)
    try:
        long = ChatRequest(model="demo", messages=[Message("user", SENTENCE * 150)], temperature=0, max_tokens=8)
        victim = Direct(eng, long)
        victim.handle.on_prefill_chunk = lambda n: victim.handle.cancelled.set() if n == 2 else None
        await victim.start()
        _, end = await victim.result()
        assert isinstance(end, CancelledError)
        assert victim.prompt_tokens > 1000 and victim.handle.prefill_chunks == 2
        short = ChatRequest(
            model="demo", messages=[Message("user", "What is the capital of France?")], temperature=0, max_tokens=12
        )
        assert "Paris" in (await collect(eng.stream(short))).text
        assert eng._worker.snapshot().running == 0
    finally:
        await eng.aclose()
