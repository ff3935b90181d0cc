"""The other processes of the storage tests: `python -m tests.router.storage_child MODE DB ...`.

Every line a child prints is flushed at once, so the parent knows exactly what was acknowledged
(committed) before it killed the child or the child failed:

    ack rule <id>          add_rule returned: the rule is committed
    ack log <request id>   the writer thread committed the request-log row
    answered <request id>  the router delivered a whole answer
    failed <kind> <text>   a write raised (kind: the StoreError kind or the exception type)
    in-tx                  a transaction is open and holds the write lock (see `hold`)
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

_say_lock = threading.Lock()


def say(*parts: object) -> None:
    # One locked write per line: the writer thread's callbacks say things too, and print() writes
    # its parts separately (a killed run once showed "ack rule 1894ack log ...").
    line = " ".join(str(p) for p in parts) + "\n"
    with _say_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def wait_for(go: str) -> None:
    while not Path(go).exists():
        time.sleep(0.001)


def failed(exc: BaseException) -> None:
    say("failed", getattr(exc, "kind", type(exc).__name__), str(exc).replace("\n", " "))


def contend(db: str, tag: str, rounds: str, go: str) -> None:
    """Rules, routed requests (answered by the fake upstream) and their log rows, as fast as it can."""
    from engine.config import EngineConfig
    from engine.types import ChatRequest, Message, collect
    from router.config import AppConfig
    from router.rules import Rule
    from router.store import Store
    from router.workbench import Workbench
    from router.writer import WriteFailed

    async def main() -> None:
        config = AppConfig(
            engine=EngineConfig(data_dir=Path(db).parent, model_dirs=[], scan_hf_cache=False), db_path=Path(db)
        )
        wb = Workbench(config, Store.open(db))
        wb.events.add_callback(lambda e: failed(RuntimeError(e.error)) if isinstance(e, WriteFailed) else None)
        try:
            for i in range(int(rounds)):
                try:
                    rule = wb.store.add_rule(Rule(f"{tag}-rule-{i}", "up"))
                    say("ack rule", rule.id)
                except Exception as exc:
                    failed(exc)
                request = ChatRequest(
                    model=f"{tag}-model",
                    messages=[Message("user", f"question {i}")],
                    max_tokens=8,
                    metadata={"request_id": f"{tag}-{i}"},
                )
                stream = wb.router.route(request, front_end=tag)
                try:
                    await collect(stream)
                    say("answered", stream.request_id)
                except Exception as exc:
                    failed(exc)
                await asyncio.sleep(0)
        finally:
            await wb.aclose()

    wait_for(go)
    asyncio.run(main())


def hold(db: str, seconds: str) -> None:
    """Open a write transaction that adds rules, say so, and sit in it (to be killed, or to block)."""
    from router.rules import Rule
    from router.store import Store

    store = Store.open(db)

    def body(sqlite_db: Any) -> None:
        for i in range(50):
            sqlite_db["rules"].insert(store._rule_row(Rule(f"uncommitted-{i}", "local")))
        say("in-tx")
        time.sleep(float(seconds))

    store.write(body, what="hold the write lock")
    say("released")
    store.close()


def loop(db: str) -> None:
    """Commit rules and request-log rows (through the writer thread) until killed."""
    from router.rules import Rule
    from router.store import RequestRecord, Store

    store = Store.open(db)
    i = 0
    while True:
        rule = store.add_rule(Rule(f"loop-{i}-" + "x" * 200, "local"))
        say("ack rule", rule.id)
        rec = RequestRecord("loop", "canonical", "m", request_id=f"loop-{i}", attempts=[{"n": i}])
        store.log_request_later(rec).add_done_callback(
            lambda f, rid=rec.request_id: say("ack log", rid) if f.exception() is None else failed(f.exception())
        )
        i += 1


def fill(db: str) -> int:
    """A command run through the CLI's `wrap` on a disk that is full (PRAGMA max_page_count)."""
    import argparse

    from router.rules import Rule
    from tui.cli.common import wrap

    def command(args: argparse.Namespace, ctx: Any) -> int:
        _, store = ctx
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        for i in range(100000):
            rule = store.add_rule(Rule(f"fill-{i}-" + "y" * 300, "local"))
            say("ack rule", rule.id)
        return 0

    import os

    os.environ["MLXWB_DB"] = db
    return wrap(command)(argparse.Namespace(config=None))


def open_at_once(db: str, go: str) -> None:
    from router.rules import Rule
    from router.store import Store

    wait_for(go)
    store = Store.open(db)
    rule = store.add_rule(Rule(f"opened-{time.time_ns()}", "local"))
    say("ack rule", rule.id)
    store.close()


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "fill":
        return fill(*args)
    {"contend": contend, "hold": hold, "loop": loop, "open": open_at_once}[mode](*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
