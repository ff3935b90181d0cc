"""Honest timings (TTFT from the request reaching the engine, with the load and the queue said
apart), the context limit checked before any prefill, and progress posted to the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, ContextLengthError, Message, collect

MODEL = "tiny-llama-mlx"


def engine_for(models_dir: Path, tmp_path: Path, **kw: Any) -> LocalEngine:
    return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False, **kw))


def ask(text: str = "Hello world", **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 8)
    return ChatRequest(model=MODEL, messages=[Message("user", text)], **kw)


async def test_the_first_answer_counts_the_model_load(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        first = (await collect(eng.stream(ask()))).usage
        assert first.load_s is not None and first.load_s > 0
        assert first.ttft_s is not None and first.ttft_s > first.load_s
        assert first.queued_s is not None and first.queued_s >= 0
        second = (await collect(eng.stream(ask()))).usage
        assert second.load_s == 0.0
    finally:
        await eng.aclose()


async def test_time_waiting_for_a_place_is_counted(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path, max_batch=1)
    try:
        await eng.load(MODEL)
        # High would take the overflow place: two normal requests, one place.
        runner = asyncio.create_task(collect(eng.stream(ask(max_tokens=200, temperature=1.0, seed=3))))
        waiter = asyncio.create_task(collect(eng.stream(ask())))
        for _ in range(10_000):
            if eng.snapshot().queued == 1:
                break
            await asyncio.sleep(0.001)
        assert (eng.snapshot().running, eng.snapshot().queued) == (1, 1)
        ran, waited = await runner, await waiter
        assert waited.usage.queued_s is not None and waited.usage.ttft_s is not None
        # It waited at least until the runner's first token, and TTFT includes that wait.
        assert waited.usage.queued_s > (ran.usage.ttft_s or 0)
        assert waited.usage.ttft_s > waited.usage.queued_s
    finally:
        await eng.aclose()


async def test_a_prompt_longer_than_the_context_is_a_400_naming_both_numbers(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        text = "The quick brown fox jumps over the lazy dog. " * 80
        prompt_tokens = await eng.count_tokens(MODEL, [Message("user", text)])
        assert prompt_tokens > 512
        before = eng._worker.snapshot().prefill_chunks
        with pytest.raises(ContextLengthError) as exc:
            await collect(eng.stream(ask(text)))
        assert exc.value.status == 400 and exc.value.kind == "rejected"
        assert str(prompt_tokens) in exc.value.message and "512" in exc.value.message
        assert (exc.value.prompt_tokens, exc.value.context_length) == (prompt_tokens, 512)
        assert eng._worker.snapshot().prefill_chunks == before  # no prefill was started
    finally:
        await eng.aclose()


async def test_an_answer_stops_at_the_end_of_the_context(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        text = "The quick brown fox jumps over the lazy dog. " * 29
        result = await collect(eng.stream(ask(text, max_tokens=400, temperature=1.0, seed=5)))
        assert result.usage.prompt_tokens + result.usage.completion_tokens <= 512
    finally:
        await eng.aclose()


async def test_load_progress_is_posted_to_the_event_loop(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    stages: list[str] = []

    def progress(p: Any) -> None:
        threads.add(threading.get_ident())
        stages.append(p.stage)

    try:
        await eng.load("tiny-llama", progress=progress)
        await asyncio.sleep(0)  # the last posted report runs
        assert threads == {loop_thread}
        assert stages and stages[-1] == "done"
    finally:
        await eng.aclose()


async def test_memory_and_is_loaded_are_safe_while_the_mlx_thread_loads(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                snap = eng.memory()
                assert snap.used_bytes == sum(m.bytes for m in snap.loaded) + snap.prompt_cache_bytes
                eng.is_loaded("tiny-llama")
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    eng.models()
    thread.start()
    try:
        for _ in range(5):
            await eng.load("tiny-llama")
            await eng.load("tiny-llama-mlx")
            await eng.unload("tiny-llama")
            await eng.unload("tiny-llama-mlx")
    finally:
        stop.set()
        thread.join()
        await eng.aclose()
    assert errors == []


async def test_a_client_gone_during_the_load_stops_the_load(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        gate = threading.Event()
        await eng._worker.run(lambda: None)  # the MLX thread is up
        eng._worker.submit(gate.wait)  # hold the thread so the request waits before its load
        stream = eng.stream(ask())
        task = asyncio.ensure_future(stream.__anext__())
        for _ in range(10_000):  # until its load job is queued behind the gate
            if eng._worker._jobs.qsize() == 1:
                break
            await asyncio.sleep(0.001)
        assert eng._worker._jobs.qsize() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await eng._worker.run(lambda: None)  # the load job has run (and stopped)
        assert eng.memory().loaded == []
    finally:
        await eng.aclose()
