"""Three processes writing one database at once: failed writes, lost writes, and how long a
request-log write holds the event loop.

    PYTHONPATH=$PWD .venv/bin/python bench/store_contention.py [--writes 200] [--sync-log]

(The children run in a temporary folder, so PYTHONPATH alone picks the code under test: point it
at another checkout to measure that one.)

Each process starts at the same moment and does N rounds of: add a rule, then log one request
from inside an asyncio loop. A write that raises is counted as failed (and "locked" if the
message says so). The time the loop spends inside the log call is what every other task on that
loop (the TUI, the listener) waits. With a store that has `log_request_later` the log write goes
to the single writer thread; otherwise (or with --sync-log) it is the synchronous `log_request`
on the loop.
Afterwards the parent counts rows: every write a process saw succeed must be there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from router.rules import Rule
from router.store import RequestRecord, Store

db, tag, n, go, sync = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5] == "sync"
while not go.exists():
    time.sleep(0.001)
store = Store.open(db)
later = hasattr(store, "log_request_later") and not sync
out = {"rule_ok": 0, "rule_failed": 0, "log_ok": 0, "log_failed": 0, "locked": 0, "loop_s": [], "errors": []}

def failed(kind, exc):
    out[kind] += 1
    out["locked"] += "locked" in str(exc)
    if len(out["errors"]) < 3:
        out["errors"].append(f"{type(exc).__name__}: {exc}")

def log_failed(event):
    failed("log_failed", event.error)
    out["log_ok"] -= 1

async def main():
    for i in range(n):
        try:
            store.add_rule(Rule(f"{tag}-{i}", "local"))
            out["rule_ok"] += 1
        except Exception as exc:
            failed("rule_failed", exc)
        rec = RequestRecord(front_end=tag, protocol="canonical", model=f"m{i}", request_id=f"{tag}-{i}")
        t0 = time.perf_counter()
        try:
            if later:
                store.log_request_later(rec, on_failed=log_failed)
            else:
                store.log_request(rec)
            out["log_ok"] += 1
        except Exception as exc:
            failed("log_failed", exc)
        out["loop_s"].append(time.perf_counter() - t0)
        await asyncio.sleep(0)

t_start = time.perf_counter()
asyncio.run(main())
store.close()
out["wall_s"] = time.perf_counter() - t_start
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=200, help="rounds per process")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument(
        "--sync-log",
        action="store_true",
        help="write the log row on the loop (log_request) even when the writer thread exists",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "wb.db"
        go = Path(tmp) / "go"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from router.store import Store; Store.open(sys.argv[1]).close()",
                str(db),
            ],
            check=True,
            cwd=tmp,
        )
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(db),
                    f"p{i}",
                    str(args.writes),
                    str(go),
                    "sync" if args.sync_log else "later",
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=tmp,
            )
            for i in range(args.processes)
        ]
        time.sleep(1.5)  # let every interpreter finish its imports and wait on the start file
        go.touch()
        results = [json.loads(p.communicate()[0]) for p in procs]
        import sqlite3

        conn = sqlite3.connect(db)
        rules = conn.execute("SELECT count(*) FROM rules").fetchone()[0]
        logs = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        conn.close()
    loop = sorted(s for r in results for s in r["loop_s"])
    total = args.writes * args.processes
    summary = {
        "writes_per_kind": total,
        "rule_failed": sum(r["rule_failed"] for r in results),
        "log_failed": sum(r["log_failed"] for r in results),
        "locked_errors": sum(r["locked"] for r in results),
        "acked_rules": sum(r["rule_ok"] for r in results),
        "rules_in_db": rules,
        "acked_logs": sum(r["log_ok"] for r in results),
        "logs_in_db": logs,
        "loop_ms_per_log_write": {
            "median": round(statistics.median(loop) * 1e3, 3),
            "p99": round(loop[int(len(loop) * 0.99) - 1] * 1e3, 3),
            "max": round(loop[-1] * 1e3, 3),
        },
        "wall_s": [round(r["wall_s"], 2) for r in results],
        "sample_errors": [e for r in results for e in r["errors"]][:3],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
