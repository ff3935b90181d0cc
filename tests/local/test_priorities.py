"""Request priorities: max_batch per model, a queue by priority then arrival, aging, and high
requests that never wait behind normal or low ones (they take the overflow places)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.engine import LocalEngine
from engine.local.scheduler import AdmissionQueue, high_overflow
from engine.types import ChatRequest, Message, RejectedError, collect
from tests.local.test_prefill import wait_until


def test_the_queue_orders_by_priority_then_arrival() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(max_batch=8)
    for name, prio in [("n1", "normal"), ("l1", "low"), ("h1", "high"), ("n2", "normal"), ("h2", "high")]:
        q.push(name, prio, now=0.0)
    order = [q.pop_next(running=0, now=0.0) for _ in range(5)]
    assert order == ["h1", "h2", "n1", "n2", "l1"]
    assert q.pop_next(running=0, now=0.0) is None


def test_a_full_batch_admits_only_high_requests_into_the_overflow() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(max_batch=2)
    assert high_overflow(2) == 1 and high_overflow(8) == 2
    q.push("normal", "normal", now=0.0)
    q.push("high", "high", now=1.0)
    assert q.pop_next(running=2, now=1.0) == "high"  # first in line, and allowed past max_batch
    assert q.pop_next(running=3, now=1.0) is None  # the overflow is used up; normal waits
    q.push("high2", "high", now=2.0)
    assert q.pop_next(running=3, now=2.0) is None  # high waits too, but only for high ones
    assert q.pop_next(running=2, now=2.0) == "high2"  # a place freed: high before the older normal
    assert q.pop_next(running=1, now=2.0) == "normal"


def test_waiting_requests_age_so_low_ones_are_never_starved() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(max_batch=1, aging_s=10.0)
    q.push("low", "low", now=0.0)
    q.push("fresh-normal", "normal", now=5.0)
    assert q.pop_next(running=0, now=5.0) == "fresh-normal"  # low waited 5 s: not yet
    q.push("late-normal", "normal", now=20.0)
    # After 20 s in the queue the low request ranks as high as a brand-new one.
    assert q.pop_next(running=0, now=21.0) == "low"
    assert q.pop_next(running=0, now=21.0) == "late-normal"


def test_an_unknown_priority_is_refused() -> None:
    with pytest.raises(ValueError, match="priority"):
        AdmissionQueue().push("x", "urgent", now=0.0)


# ---------------------------------------------------------------- through the engine

MODEL = "tiny-llama-mlx"


def long_request(priority: str = "normal", seed: int = 1) -> ChatRequest:
    return ChatRequest(
        model=MODEL,
        messages=[Message("user", f"Hello {seed}")],
        max_tokens=300,
        temperature=1.0,
        seed=seed,
        priority=priority,
    )


@pytest.fixture
async def engine(tiny_models_dir: Path, tmp_path: Path):
    eng = LocalEngine(
        EngineConfig(data_dir=tmp_path / "data", model_dirs=[tiny_models_dir], scan_hf_cache=False, max_batch=2)
    )
    await eng.load(MODEL)
    yield eng
    await eng.aclose()


async def test_at_most_max_batch_run_and_the_rest_wait(engine: LocalEngine) -> None:
    tasks = [asyncio.create_task(collect(engine.stream(long_request(seed=i)))) for i in range(5)]
    await wait_until(lambda: engine.snapshot().running == 2 and engine.snapshot().queued == 3)
    results = await asyncio.gather(*tasks)
    assert all(r.usage.completion_tokens > 0 for r in results)
    assert engine._worker.snapshot().models[0].max_running_seen == 2
    # The ones that waited say so.
    assert sum(1 for r in results if (r.usage.queued_s or 0) > (results[0].usage.ttft_s or 0)) >= 3


async def test_a_high_request_does_not_wait_behind_a_full_batch(engine: LocalEngine) -> None:
    normals = [asyncio.create_task(collect(engine.stream(long_request(seed=i)))) for i in range(4)]
    await wait_until(lambda: engine.snapshot().running == 2 and engine.snapshot().queued == 2)
    high = asyncio.create_task(collect(engine.stream(long_request("high", seed=9))))
    # It is admitted into the overflow place while both normals still wait.
    await wait_until(lambda: engine.snapshot().running == 3 or high.done())
    assert engine.snapshot().queued == 2
    result = await high
    assert result.usage.completion_tokens > 0
    await asyncio.gather(*normals)
    assert engine._worker.snapshot().models[0].max_running_seen == 3


async def test_a_waiting_request_is_told_its_place_in_the_queue(engine: LocalEngine) -> None:
    running = [asyncio.create_task(collect(engine.stream(long_request(seed=i)))) for i in range(2)]
    await wait_until(lambda: engine.snapshot().running == 2)
    said: list[list[str]] = [[], []]
    waiting = [
        asyncio.create_task(
            collect(engine.stream(replace(long_request(seed=5 + i), metadata={"on_status": said[i].append})))
        )
        for i in range(2)
    ]
    await wait_until(lambda: engine.snapshot().queued == 2)
    await wait_until(lambda: said[1][:1] == ["queued, 1 ahead"])
    await asyncio.gather(*running, *waiting)
    assert said[0] == ["queued, 0 ahead"]
    # It moves up (or is admitted together with the one ahead of it when two places free at once).
    assert said[1] in (["queued, 1 ahead"], ["queued, 1 ahead", "queued, 0 ahead"])


async def test_a_bad_priority_is_a_400(engine: LocalEngine) -> None:
    with pytest.raises(RejectedError, match="priority") as exc:
        await collect(engine.stream(long_request("urgent")))
    assert exc.value.status == 400
