"""`mlx-workbench chat`: one question, the answer streamed to stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask a model one question; the answer streams to stdout")
    p.add_argument("prompt", help="the question (use - to read it from stdin)")
    p.add_argument("--model", "-m", default="demo", help="model name, local id or alias (default: demo)")
    p.add_argument("--system", help="system prompt")
    p.add_argument(
        "--temperature",
        "-t",
        type=float,
        default=0.0,
        help="sampling temperature (default 0: greedy, the same answer every time)",
    )
    p.add_argument("--max-tokens", type=int, default=512, help="answer length limit (default 512)")
    p.add_argument("--seed", type=int, help="random seed for temperature > 0")
    p.add_argument("--local", action="store_true", help="use the local engine directly, bypassing the routing rules")
    p.set_defaults(func=_run)


async def stream_answer(streamer: Callable[[Any], AsyncIterator[Any]], request: Any, out: TextIO) -> Any:
    """Print chunks as they arrive; returns the final chunk. The seam between CLI and backend."""
    final = None
    async for chunk in streamer(request):
        if chunk.error is not None:
            raise chunk.error
        if chunk.text:
            out.write(chunk.text)
            out.flush()
        if chunk.finish_reason:
            final = chunk
    out.write("\n")
    out.flush()
    return final


async def _chat(args: argparse.Namespace) -> int:
    from engine.types import ChatRequest, EngineError, Message

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt)]
    # The person at the terminal: a model may be named by its path, and they never wait behind
    # the listener's clients.
    request = ChatRequest(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        metadata={"front_end": "cli"},
        allow_model_paths=True,
        priority="high",
    )
    from router.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    closers = []
    streamer: Callable[[ChatRequest], Any]  # LocalEngine.stream or the router's RouteStream
    try:
        if args.local:
            from engine.local.engine import LocalEngine

            engine = LocalEngine(config.engine)
            closers.append(engine.aclose)
            streamer = engine.stream
        else:
            from router.workbench import Workbench

            wb = Workbench.open(config)
            closers.append(wb.aclose)
            streamer = lambda req: wb.router.route(req, front_end="cli")  # noqa: E731
        final = await stream_answer(streamer, request, sys.stdout)
        if final is not None and final.usage is not None and sys.stderr.isatty():
            print(answer_line(final), file=sys.stderr)
        return 0
    except EngineError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        for close in closers:
            await close()


def answer_line(final: Any) -> str:
    """The line under an answer: who answered, how much, how fast, and any wait worth saying."""
    u = final.usage
    parts = [f"{final.backend}/{final.model}: {u.completion_tokens} tokens"]
    if u.tokens_per_s:
        parts.append(f"{u.tokens_per_s:.1f} tok/s")
    if u.ttft_s is not None:
        parts.append(f"first token after {u.ttft_s:.2f} s")
    if u.load_s and u.load_s > 0.1:
        parts.append(f"loaded {final.model} in {u.load_s:.1f} s")
    if u.queued_s and u.queued_s > 0.1:
        parts.append(f"queued {u.queued_s:.1f} s")
    return "[" + ", ".join(parts) + "]"


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args))
