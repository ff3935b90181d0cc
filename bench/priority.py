"""A high-priority request on a busy engine, against the same request on an idle one (demo model).

    .venv/bin/python bench/priority.py [--reps 5] [--busy 6] [--max-batch 2]

With max_batch 2 and six long normal requests (two decoding, four queued), a high request (the
TUI or CLI user) is admitted into the overflow place at once. Prints its time to first token next
to its TTFT on an idle engine (target: within 1.5x). A normal request in its place would wait for one of
the four queued ones' turn to end (minutes here); the test suite checks that order structurally.
The prompt cache is off, so every run reads its prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import EngineConfig
from engine.local.demo import demo_path
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, Message, collect

QUESTION = "What is the capital of France?"


def request(text: str, tokens: int, priority: str = "normal") -> ChatRequest:
    return ChatRequest(
        model="demo", messages=[Message("user", text)], temperature=0, max_tokens=tokens, priority=priority
    )


async def ttft(engine: LocalEngine, priority: str) -> float:
    result = await collect(engine.stream(request(QUESTION, 8, priority)))
    return result.usage.ttft_s or 0.0


async def wait_until(condition: object, limit_s: float = 600.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("the engine never got busy")


async def busy_ttft(engine: LocalEngine, busy: int, max_batch: int, priority: str) -> tuple[float, int, int]:
    """TTFT of one request while `busy` long normal requests run or wait; also running and queued
    counts seen when it was sent."""
    long = [
        asyncio.create_task(collect(engine.stream(request(f"Write a long story about lighthouse {i}.", 400))))
        for i in range(busy)
    ]
    try:
        await wait_until(lambda: (engine.snapshot().running, engine.snapshot().queued) == (max_batch, busy - max_batch))
        await asyncio.sleep(0.5)  # well into decoding
        seen = engine.snapshot()
        return await ttft(engine, priority), seen.running, seen.queued
    finally:
        for task in long:
            task.cancel()
        for task in long:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await wait_until(lambda: engine.snapshot().running == 0 and engine.snapshot().queued == 0)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--busy", type=int, default=6)
    ap.add_argument("--max-batch", type=int, default=2)
    args = ap.parse_args()
    if demo_path(EngineConfig()) is None:
        print("demo model missing: run `mlx-workbench models fetch-demo`", file=sys.stderr)
        return 1
    engine = LocalEngine(EngineConfig(scan_hf_cache=False, prompt_cache_bytes=0, max_batch=args.max_batch))
    try:
        await engine.load("demo")
        await ttft(engine, "high")  # warm-up
        idle, high = [], []
        for _ in range(args.reps):
            idle.append(await ttft(engine, "high"))
            t, running, queued = await busy_ttft(engine, args.busy, args.max_batch, "high")
            high.append(t)
        print(
            f"blas: {engine.memory().blas}; max_batch {args.max_batch}; {args.busy} long normal requests "
            f"({running} decoding, {queued} queued when the high request was sent)"
        )
        print(f"high request TTFT, idle engine: median {statistics.median(idle):.3f} s  {[round(x, 3) for x in idle]}")
        print(f"high request TTFT, busy engine: median {statistics.median(high):.3f} s  {[round(x, 3) for x in high]}")
        print(f"ratio busy/idle: {statistics.median(high) / statistics.median(idle):.2f}x (target <= 1.5x)")
    finally:
        await engine.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
