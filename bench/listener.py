"""The listener's overhead over calling an upstream directly.

    .venv/bin/python bench/listener.py [--requests-per-client 10]

A fake OpenAI upstream on loopback streams 100 chunks per answer. The same streamed request is
sent (a) straight to the upstream and (b) through the listener, whose rule routes the model to
that upstream as an openai-compatible backend. At 1, 16 and 64 concurrent clients it prints
requests/s and the p50 / p99 latency of a whole streamed answer, and the listener's added
latency and throughput ratio against the direct baseline measured in the same run.
Everything runs on 127.0.0.1; upstream, listener and clients are three processes (as in real
use: in one process the three would mostly measure contention for one GIL). The machine's cores
are shared by all three, so at high concurrency the clients and the upstream compete with the
listener for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from engine.config import EngineConfig  # noqa: E402
from router.config import AppConfig  # noqa: E402
from router.rules import Rule  # noqa: E402
from router.listener import Listener  # noqa: E402
from router.store import BackendRecord  # noqa: E402
from router.workbench import Workbench  # noqa: E402
from tests.fixtures.fake_upstream import OPENAI_PATH, FakeUpstream, Reply, openai_text_stream  # noqa: E402

BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _upstream_process(conn) -> None:
    upstream = FakeUpstream().start()
    text = " ".join(f"w{i}" for i in range(100))
    upstream.set_default(OPENAI_PATH, Reply(stream=openai_text_stream(text, "bench-model")))
    conn.send(upstream.openai_url)
    conn.recv()
    upstream.stop()


def _listener_process(conn, upstream_url: str, data_dir: str) -> None:
    async def main() -> None:
        wb = Workbench.open(AppConfig(engine=EngineConfig(data_dir=Path(data_dir), scan_hf_cache=False)))
        wb.store.save_backend(BackendRecord("up", "openai-compatible", upstream_url,
                                            {"retries": 0, "fail_max": 1000}))
        wb.store.add_rule(Rule("bench-model", "up"))
        lst = Listener(wb, "127.0.0.1", 0)
        await lst.start()
        conn.send(lst.url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await lst.stop()
        await wb.aclose()

    asyncio.run(main())


def spawn(target, *args) -> tuple[str, object, object]:
    """Start a server in its own process (its own GIL, as in real use); returns its URL."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    if not parent.poll(120):
        proc.kill()
        raise SystemExit(f"{target.__name__} did not start")
    return parent.recv(), parent, proc


async def one(client: httpx.AsyncClient, url: str) -> float:
    t0 = time.perf_counter()
    chunks = 0
    async with client.stream("POST", url, json=BODY) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                chunks += 1
    if chunks < 100:
        raise RuntimeError(f"only {chunks} chunks arrived from {url}")
    return time.perf_counter() - t0


async def level(url: str, clients: int, per_client: int) -> tuple[float, float, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await one(client, url)  # warm-up: connection, routing caches
        latencies: list[float] = []

        async def worker() -> None:
            for _ in range(per_client):
                latencies.append(await one(client, url))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / elapsed, statistics.median(latencies), p99


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests-per-client", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upstream_url, up_conn, up_proc = spawn(_upstream_process)
        listener_url, lst_conn, lst_proc = spawn(_listener_process, upstream_url, tmp)
        try:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"{os.cpu_count()} cores, 1-minute load average before the run: {load:.1f}")
            print(f"{'clients':>7} {'path':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for clients in (1, 16, 64):
                per = args.requests_per_client if clients < 64 else max(2, args.requests_per_client // 2)
                direct = await level(upstream_url + "/chat/completions", clients, per)
                via = await level(listener_url + "/v1/chat/completions", clients, per)
                for name, (rps, p50, p99) in (("direct", direct), ("listener", via)):
                    print(f"{clients:>7} {name:>9} {rps:>8.1f} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f}")
                print(f"{'':>7} {'added':>9} {'':>8} {(via[1] - direct[1]) * 1000:>8.1f} "
                      f"{(via[2] - direct[2]) * 1000:>8.1f}   throughput ratio listener/direct: "
                      f"{via[0] / direct[0]:.2f}")
        finally:
            for conn, proc in ((lst_conn, lst_proc), (up_conn, up_proc)):
                conn.send("stop")
                proc.join(15)
                if proc.is_alive():
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
