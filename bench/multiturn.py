"""Prompt cache and cancellation on the demo model, through LocalEngine.

    .venv/bin/python bench/multiturn.py [--turns 8] [--answer-tokens 80] [--long-tokens 3000]

1. An 8-turn conversation, each turn sent whole (as every front end does), to an engine with the
   prompt cache and to one without (prompt_cache_bytes=0), alternating which goes first. Prints
   TTFT per turn (from the request reaching the engine; median of --reps conversations, each
   starting with an empty cache), the prompt tokens and how many came from the cache. Target:
   turn-8 TTFT within 1.5x of turn 1 with the cache.
2. A long prompt is cancelled while its prefill runs: the time until the MLX thread is free
   (cancel-to-free, target < 0.5 s), and, in a second run, the time from the cancel until a short
   request sent at the same moment gets its first token, next to that request's TTFT on an idle
   engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import EngineConfig
from engine.local.demo import demo_path
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, Chunk, Message, collect

QUESTIONS = [
    "What is the capital of France?",
    "Tell me about its history in a few sentences.",
    "What are the most famous museums there?",
    "Which one should I visit first, and why?",
    "How do I get there from the airport?",
    "What food should I try nearby?",
    "Suggest a plan for one day in the city.",
    "Summarise everything we talked about.",
]
SHORT = "What is the capital of Italy?"


def request(messages: list[Message], tokens: int) -> ChatRequest:
    return ChatRequest(model="demo", messages=messages, temperature=0, max_tokens=tokens)


async def conversation(cached: LocalEngine, plain: LocalEngine, turns: int, tokens: int) -> list[tuple]:
    """One conversation: the cached engine answers (its answers build the conversation); the plain
    engine only gives its first token (its answers equal the cached ones: tests/local/test_prompt_cache.py)."""
    await cached._worker.run(cached._worker.prompt_cache.clear)  # each conversation starts cold
    messages: list[Message] = []
    rows = []
    for turn in range(turns):
        messages.append(Message("user", QUESTIONS[turn % len(QUESTIONS)]))
        if turn % 2:  # alternate which goes first, so drift in the machine's speed favours neither
            without = await collect(plain.stream(request(list(messages), 1)))
            with_cache = await collect(cached.stream(request(list(messages), tokens)))
        else:
            with_cache = await collect(cached.stream(request(list(messages), tokens)))
            without = await collect(plain.stream(request(list(messages), 1)))
        rows.append(
            (
                with_cache.usage.prompt_tokens,
                with_cache.usage.cached_tokens or 0,
                with_cache.usage.ttft_s or 0.0,
                without.usage.ttft_s or 0.0,
            )
        )
        messages.append(Message("assistant", with_cache.text))
    return rows


async def wait_until(condition: Any, limit_s: float = 600.0) -> None:
    for _ in range(int(limit_s / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise RuntimeError("condition not met in time")


async def first_chunk(stream: AsyncIterator[Chunk]) -> float:
    async for chunk in stream:
        if chunk.text or chunk.finish_reason:
            return time.perf_counter()
    return time.perf_counter()


async def cancel_runs(engine: LocalEngine, long_tokens: int, reps: int) -> tuple[list[float], list[float], float]:
    words = " ".join(f"word{i % 97}" for i in range(long_tokens // 3))
    long_request = request([Message("user", f"Repeat this back: {words}")], 16)
    print(f"long prompt: {await engine.count_tokens('demo', long_request.messages)} tokens")
    idle = [(await collect(engine.stream(request([Message("user", SHORT)], 8)))).usage.ttft_s or 0.0 for _ in range(2)]
    to_free, to_token = [], []
    for _ in range(reps):
        for with_short in (False, True):
            victim = asyncio.create_task(collect(engine.stream(long_request)))
            await wait_until(lambda: engine.snapshot().running == 1)
            await asyncio.sleep(1.0)  # well into its prefill
            cancelled_at = time.perf_counter()
            victim.cancel()
            if with_short:
                first = await first_chunk(engine.stream(request([Message("user", SHORT)], 8)))
                to_token.append(first - cancelled_at)
            else:
                await wait_until(lambda: engine.snapshot().running == 0)
                to_free.append(time.perf_counter() - cancelled_at)
            with contextlib.suppress(asyncio.CancelledError):
                await victim
    return to_free, to_token, statistics.median(idle)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--answer-tokens", type=int, default=80)
    ap.add_argument("--long-tokens", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3, help="conversations, and cancel runs")
    args = ap.parse_args()
    if demo_path(EngineConfig()) is None:
        print("demo model missing: run `mlx-workbench models fetch-demo`", file=sys.stderr)
        return 1
    cached = LocalEngine(EngineConfig(scan_hf_cache=False))
    plain = LocalEngine(EngineConfig(scan_hf_cache=False, prompt_cache_bytes=0))
    try:
        await cached.load("demo")
        await plain.load("demo")
        print(f"blas: {cached.memory().blas}")
        for engine in (cached, plain):  # warm-up: the prefill pace is measured on the first prompts
            await collect(engine.stream(request([Message("user", "Say hello in French, Spanish and German.")], 4)))
        runs = [await conversation(cached, plain, args.turns, args.answer_tokens) for _ in range(args.reps)]
        print(f"median of {args.reps} conversations, each from an empty cache")
        print(f"{'turn':>4}{'prompt':>8}{'cached':>8}{'TTFT cache s':>14}{'TTFT no cache s':>17}")
        medians = []
        for turn in range(args.turns):
            prompt, hit = runs[0][turn][0], runs[0][turn][1]
            t_cache = statistics.median(r[turn][2] for r in runs)
            t_plain = statistics.median(r[turn][3] for r in runs)
            medians.append((t_cache, t_plain))
            print(f"{turn + 1:>4}{prompt:>8}{hit:>8}{t_cache:>14.3f}{t_plain:>17.3f}")
        (c1, p1), (c8, p8) = medians[0], medians[-1]
        print(
            f"turn {args.turns} / turn 1 TTFT: with cache {c8 / c1:.2f}x (target <= 1.5x), without {p8 / p1:.2f}x; "
            f"cache {cached.memory().prompt_cache_bytes / 2**20:.1f} MiB"
        )
        # On the engine without the cache: the short request must read its prompt every time.
        to_free, to_token, idle = await cancel_runs(plain, args.long_tokens, args.reps)
        print(f"cancel a ~{args.long_tokens}-token prefill after 1 s, {args.reps} runs:")
        print(f"  cancel-to-free: median {statistics.median(to_free):.3f} s, max {max(to_free):.3f} s (target < 0.5 s)")
        print(
            f"  cancel-to-first-token of a short request: median {statistics.median(to_token):.3f} s, "
            f"max {max(to_token):.3f} s; its TTFT on an idle engine: {idle:.3f} s"
        )
    finally:
        await cached.aclose()
        await plain.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
