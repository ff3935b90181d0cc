"""What the listener adds to a streamed answer: direct to an upstream vs through the listener.

    .venv/bin/python bench/listener.py [--rounds 2] [--chunks 100] [--pace-ms 2] [--loops uvloop,asyncio]

An OpenAI-compatible upstream on 127.0.0.1 streams `--chunks` content chunks per answer as fast as
it can (uvicorn with uvloop and httptools, TCP_NODELAY: a fast cloud API, not a slow model). The
same streamed request goes (a) straight to it and (b) through the listener, whose rule routes the
model to it as an `openai-compatible` backend. At 1, 16 and 64 concurrent clients, each on its
own keep-alive connection, it prints requests/s, time to first byte (TTFB: request sent -> first
content chunk received) p50/p99 and the whole answer's p50, and the listener's added TTFB and
throughput ratio against direct, measured in the same run, direct and listener alternating
`--rounds` times. The listener runs like `mlx-workbench serve` (uvloop, log file) and, with
`--loops uvloop,asyncio`, also on a plain asyncio loop as inside the TUI.

Then the same again against a paced upstream (`--pace-ms` between chunks, as a fast cloud model
streams; 0 skips it): there the upstream, not the CPU, sets the rate, and the ratio shows what the
listener costs when it is not fighting the upstream and the clients for the cores. Each row also
says how much CPU each process spent per answer (from /proc; Linux only): on a machine where all
three share the cores, direct throughput is bounded by clients + upstream, the listener's by all
three.

Upstream, listener and clients are separate processes (in one process they would mostly measure
contention for one GIL); on a small machine they compete for the same cores, so the ratio at high
concurrency says as much about the machine as about the listener. Targets (issue 12): added TTFB
p50 at 1 client <= 2 ms; throughput at 16 clients >= 0.9 of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

MODEL = "bench-model"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
LEVELS = (1, 16, 64)
TARGET_ADDED_TTFB_MS = 2.0
TARGET_RATIO_16 = 0.9


# ---------------------------------------------------------------- the upstream


def _upstream_events(chunks: int) -> list[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    return (
        [event({"role": "assistant", "content": ""})]
        + [event({"content": f"w{i} "}) for i in range(chunks)]
        + [event({}, "stop"), b"data: [DONE]\n\n"]
    )


def _upstream_app(chunks: int, pace_s: float) -> Callable[..., Awaitable[None]]:
    events = _upstream_events(chunks)

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")],
            }
        )
        for i, data in enumerate(events):
            if pace_s and 1 < i < len(events) - 1:
                await asyncio.sleep(pace_s)  # between content chunks: the model's pace
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def _upstream_process(conn: Connection, chunks: int, pace_s: float = 0.0) -> None:
    import uvicorn
    import uvloop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = uvicorn.Server(
        uvicorn.Config(
            _upstream_app(chunks, pace_s),
            log_config=None,
            lifespan="off",
            access_log=False,
            http="httptools",
            backlog=1024,
        )
    )

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
        conn.send(f"http://127.0.0.1:{sock.getsockname()[1]}/v1")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        server.should_exit = True
        await task

    uvloop.run(main())


# ---------------------------------------------------------------- the listener


def _listener_process(conn: Connection, upstream_url: str, data_dir: str, loop: str, profile: str) -> None:
    from engine.config import EngineConfig
    from router.config import AppConfig
    from router.listener import Listener
    from router.listener.standalone import freeze_startup_objects, log_to_file
    from router.rules import Rule
    from router.store import BackendRecord
    from router.workbench import Workbench

    log_to_file(Path(data_dir))  # as `serve` does: one access-log line per request in the file

    async def main() -> None:
        wb = Workbench.open(AppConfig(engine=EngineConfig(data_dir=Path(data_dir), scan_hf_cache=False)))
        wb.store.set_cloud_routing(True)
        wb.store.save_backend(
            BackendRecord("up", "openai-compatible", upstream_url, {"retries": 0, "fail_max": 100_000})
        )
        wb.store.add_rule(Rule(MODEL, "up"))
        listener = Listener(wb, "127.0.0.1", 0)
        await listener.start()
        freeze_startup_objects()  # as `serve` does
        conn.send(listener.url + "/v1")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await listener.stop()
        await wb.aclose()

    def run() -> None:
        if loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())

    if not profile:
        run()
        return
    import cProfile

    cProfile.runctx("run()", globals(), {"run": run}, f"{profile}.{loop}")


def spawn(target: Callable[..., None], *args: Any) -> tuple[str, Connection, Any]:
    """Start a server in its own process; returns its URL."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    if not parent.poll(120):
        proc.kill()
        raise SystemExit(f"{target.__name__} did not start")
    return parent.recv(), parent, proc


# ---------------------------------------------------------------- the clients


@dataclass
class Level:
    rps: float
    ttfb: list[float]
    whole: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds per answer


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere). None: this one."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Requests sent again: a kept-alive connection that the server closed as the request went out
# (its keep-alive timer ran out while an overloaded client was slow to send the next request). The
# official SDKs send such a request again; so does the bench, once, and it says how often.
resent = [0]


async def one(client: httpx.AsyncClient, url: str, chunks: int) -> tuple[float, float]:
    """(time to the first content chunk, time to the end of the answer), in seconds."""
    try:
        return await _one(client, url, chunks)
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
        if getattr(exc, "answered", False):
            raise
        resent[0] += 1
        return await _one(client, url, chunks)


async def _one(client: httpx.AsyncClient, url: str, chunks: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttfb = 0.0
    got = 0
    async with client.stream("POST", url, json=BODY) as r:
        try:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if '"content":"w' in line:
                    got += 1
                    if got == 1:
                        ttfb = time.perf_counter() - t0
        except httpx.HTTPError as exc:
            exc.answered = True  # type: ignore[attr-defined]  # the request arrived: never sent again
            raise
    if got < chunks:
        raise RuntimeError(f"only {got} of {chunks} chunks arrived from {url}")
    return ttfb, time.perf_counter() - t0


async def level(url: str, clients: int, per_client: int, chunks: int, pids: dict[str, int | None]) -> Level:
    """`clients` workers, each on its own keep-alive connection, `per_client` answers each; the CPU
    that the processes in `pids` spent per answer meanwhile."""
    url += "/chat/completions"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(one(client, url, chunks) for _ in range(clients)))  # open the connections
        results: list[tuple[float, float]] = []

        async def worker() -> None:
            for _ in range(per_client):
                results.append(await one(client, url, chunks))

        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / len(results) for name, pid in pids.items()}
    return Level(len(results) / elapsed, [r[0] for r in results], [r[1] for r in results], cpu)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def merge(runs: list[Level]) -> Level:
    return Level(
        statistics.mean(r.rps for r in runs),
        [t for r in runs for t in r.ttfb],
        [t for r in runs for t in r.whole],
        {name: statistics.mean(r.cpu[name] for r in runs) for name in runs[0].cpu},
    )


def row(clients: int | str, name: str, m: Level) -> str:
    return (
        f"{clients:>7} {name:>16} {m.rps:>8.1f} {pct(m.ttfb, 0.5) * 1e3:>9.2f} {pct(m.ttfb, 0.99) * 1e3:>9.2f} "
        f"{statistics.median(m.whole) * 1e3:>10.1f}"
    )


def cpu_note(m: Level) -> str:
    return "   CPU ms/answer: " + ", ".join(f"{name} {cpu * 1e3:.2f}" for name, cpu in m.cpu.items())


@dataclass
class Upstream:
    name: str  # "" for the fast one, else e.g. "paced 2 ms: "
    url: str
    pid: int | None
    listeners: dict[str, tuple[str, int | None]]  # name -> (url, pid)


async def compare(up: Upstream, args: argparse.Namespace, answers: int) -> list[str]:
    failures = []
    print(f"{'clients':>7} {'path':>16} {'req/s':>8} {'TTFB p50':>9} {'TTFB p99':>9} {'answer p50':>10}  (ms)")
    for clients in LEVELS:
        per = max(args.per_client, answers // clients)
        runs: dict[str, list[Level]] = {"direct": [], **{name: [] for name in up.listeners}}
        direct_pids = {"clients": None, "upstream": up.pid}
        for _ in range(args.rounds):
            runs["direct"].append(await level(up.url, clients, per, args.chunks, direct_pids))
            for name, (url, pid) in up.listeners.items():
                runs[name].append(await level(url, clients, per, args.chunks, {**direct_pids, "listener": pid}))
        direct = merge(runs["direct"])
        print(row(clients, "direct", direct) + cpu_note(direct))
        for name in up.listeners:
            via = merge(runs[name])
            added = (pct(via.ttfb, 0.5) - pct(direct.ttfb, 0.5)) * 1e3
            ratio = via.rps / direct.rps
            print(
                row(clients, name, via) + f"   added TTFB p50 {added:+.2f} ms, throughput x{ratio:.2f}" + cpu_note(via)
            )
            if clients == 1 and added > TARGET_ADDED_TTFB_MS:
                failures.append(
                    f"{up.name}{name}: added TTFB p50 at 1 client {added:.2f} ms > {TARGET_ADDED_TTFB_MS} ms"
                )
            if clients == 16 and ratio < TARGET_RATIO_16:
                failures.append(f"{up.name}{name}: throughput at 16 clients x{ratio:.2f} < {TARGET_RATIO_16}")
    return failures


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="direct/listener alternations per level")
    ap.add_argument("--answers", type=int, default=200, help="answers per level and round (spread over the clients)")
    ap.add_argument("--chunks", type=int, default=100, help="content chunks per answer")
    ap.add_argument("--pace-ms", type=float, default=2.0, help="the paced upstream's wait between chunks (0: skip it)")
    ap.add_argument("--paced-answers", type=int, default=48, help="answers per level and round, paced upstream")
    ap.add_argument(
        "--per-client",
        type=int,
        default=10,
        help="at least this many answers per client and round: with fewer, a round is mostly its ramp-up and tail",
    )
    ap.add_argument("--loops", default="uvloop", help="listener loops to measure: uvloop,asyncio")
    ap.add_argument("--profile", default="", help="write the listener's cProfile stats to FILE.<loop>")
    args = ap.parse_args()
    procs = []
    upstreams: list[tuple[Upstream, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paces = [0.0] + ([args.pace_ms / 1e3] if args.pace_ms > 0 else [])
        for pace in paces:
            upstream_url, up_conn, up_proc = spawn(_upstream_process, args.chunks, pace)
            procs.append((up_conn, up_proc))
            listeners = {}
            for loop in args.loops.split(","):
                data_dir = Path(tmp) / f"{loop}-{pace}"
                profile = f"{args.profile}.paced" if args.profile and pace else args.profile
                url, conn, proc = spawn(_listener_process, upstream_url, str(data_dir), loop, profile)
                listeners[f"listener/{loop}"] = (url, proc.pid)
                procs.append((conn, proc))
            name = f"paced {args.pace_ms:g} ms: " if pace else ""
            upstreams.append(
                (Upstream(name, upstream_url, up_proc.pid, listeners), args.paced_answers if pace else args.answers)
            )
        try:
            failures = []
            for up, answers in upstreams:
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                what = (
                    f"a paced upstream ({args.pace_ms:g} ms between chunks)"
                    if up.name
                    else "a fast upstream (as fast as it can)"
                )
                print(
                    f"{os.cpu_count()} cores, 1-minute load average before the run: {load:.1f}; "
                    f"{args.chunks} chunks per answer; {what}"
                )
                failures += await compare(up, args, answers)
        finally:
            for conn, proc in procs:
                conn.send("stop")
                proc.join(15)
                if proc.is_alive():
                    proc.kill()
    if resent[0]:
        print(f"{resent[0]} requests sent again (a kept-alive connection closed by the server as they went out)")
    print("targets met" if not failures else "targets missed: " + "; ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
