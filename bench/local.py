"""Local engine vs bare mlx_lm on the demo model, in the same run, on the same loaded model.

    .venv/bin/python bench/local.py [--reps 6] [--tokens 128]

Prints time to first token and decode tokens/s of LocalEngine.stream against
mlx_lm.stream_generate, their ratio (target: engine >= 0.97 of bare), and the aggregate
tokens/s of 1, 4 and 8 concurrent requests through the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import EngineConfig
from engine.local.demo import demo_path
from engine.local.engine import LocalEngine, render_prompt
from engine.types import ChatRequest, Message, collect

QUESTION = "Write a short story about a lighthouse keeper."


def request(text: str, tokens: int) -> ChatRequest:
    return ChatRequest(model="demo", messages=[Message("user", text)], temperature=0, max_tokens=tokens)


def bare(engine: LocalEngine, tokens: int) -> tuple[float, float, int]:
    """mlx_lm.stream_generate on the engine's own loaded model (run on the MLX thread)."""
    from mlx_lm import stream_generate

    def job() -> tuple[float, float, int]:
        loaded = engine._manager.get(engine.resolve("demo"))
        prompt = render_prompt(loaded.tokenizer, request(QUESTION, tokens))
        start = time.perf_counter()
        first = last = None
        n = 0
        for _ in stream_generate(loaded.model, loaded.tokenizer, prompt, max_tokens=tokens):
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
        return first - start, (n - 1) / (last - first), n

    return engine._worker.submit(job).result()


async def through_engine(engine: LocalEngine, tokens: int) -> tuple[float, float, int]:
    result = await collect(engine.stream(request(QUESTION, tokens)))
    return result.usage.ttft_s, result.usage.tokens_per_s, result.usage.completion_tokens


async def aggregate(engine: LocalEngine, n: int, tokens: int) -> float:
    reqs = [request(f"{QUESTION} Number {i}.", tokens) for i in range(n)]
    start = time.perf_counter()
    results = await asyncio.gather(*(collect(engine.stream(r)) for r in reqs))
    return sum(r.usage.completion_tokens for r in results) / (time.perf_counter() - start)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    # The same prompt again and again: with the prompt cache the engine would skip its prefill.
    config = EngineConfig(scan_hf_cache=False, prompt_cache_bytes=0)
    if demo_path(config) is None:
        print("demo model missing: run `mlx-workbench models fetch-demo`", file=sys.stderr)
        return 1
    engine = LocalEngine(config)
    try:
        await engine.load("demo")
        await through_engine(engine, 8)  # warm-up
        bare_runs, eng_runs = [], []
        for rep in range(args.reps):
            # Alternate which goes first, so drift in the machine's speed does not favour one side.
            if rep % 2:
                eng_runs.append(await through_engine(engine, args.tokens))
                bare_runs.append(await asyncio.to_thread(bare, engine, args.tokens))
            else:
                bare_runs.append(await asyncio.to_thread(bare, engine, args.tokens))
                eng_runs.append(await through_engine(engine, args.tokens))
        paired = sorted(e[1] / b[1] for b, e in zip(bare_runs, eng_runs, strict=True))
        b_ttft = statistics.median(r[0] for r in bare_runs)
        b_tps = statistics.median(r[1] for r in bare_runs)
        e_ttft = statistics.median(r[0] for r in eng_runs)
        e_tps = statistics.median(r[1] for r in eng_runs)
        print(f"blas: {engine.memory().blas}")
        print(f"{'':24}{'TTFT s':>10}{'decode tok/s':>14}")
        print(f"{'bare mlx_lm':24}{b_ttft:>10.3f}{b_tps:>14.2f}")
        print(f"{'LocalEngine':24}{e_ttft:>10.3f}{e_tps:>14.2f}")
        print(
            f"ratio engine/bare decode tok/s: {e_tps / b_tps:.3f} (target >= 0.97); "
            f"TTFT ratio bare/engine: {b_ttft / e_ttft:.3f}"
        )
        print(
            f"paired ratios over {args.reps} reps: min {paired[0]:.3f}, median {statistics.median(paired):.3f}, "
            f"max {paired[-1]:.3f}"
        )
        base = None
        for n in (1, 4, 8):
            tps = await aggregate(engine, n, args.tokens // 2)
            base = base or tps
            print(f"concurrent={n}: aggregate {tps:.1f} tok/s ({tps / base:.2f}x of one)")
    finally:
        await engine.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
