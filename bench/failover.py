"""Failover time with default backend settings: how long a request waits for its first chunk when
the first step's upstream never answers, or answers 429 with `Retry-After: 100`, and the next step
(a healthy upstream) answers at once. Both upstreams are the loopback fake (tests/fixtures).

    PYTHONPATH=. python bench/failover.py [--case never|retry-after|both]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from engine.config import EngineConfig
from engine.types import ChatRequest, Message
from router.config import AppConfig
from router.rules import Rule, Step
from router.store import BackendRecord
from router.workbench import Workbench
from tests.fixtures.fake_upstream import OPENAI_PATH, FakeUpstream, Reply

CASES = {
    "never": Reply(delay=3600),
    "retry-after": Reply(status=429, headers={"Retry-After": "100"}),
}


async def failover_time(case: str, dead: FakeUpstream, good: FakeUpstream) -> tuple[float, int, str]:
    dead.reset()
    dead.set_default(OPENAI_PATH, CASES[case])
    with tempfile.TemporaryDirectory() as folder:
        config = AppConfig(engine=EngineConfig(data_dir=Path(folder), model_dirs=[], scan_hf_cache=False))
        wb = Workbench.open(config)
        try:
            wb.store.set_setting("cloud_routing", True)
            wb.store.save_backend(BackendRecord("dead", "openai", dead.openai_url, {}))
            wb.store.save_backend(BackendRecord("good", "openai", good.openai_url, {}))
            wb.store.add_rule(Rule("m", "dead", fallbacks=[Step("good")]))
            request = ChatRequest(model="m", messages=[Message("user", "hi")], max_tokens=8)
            # Key look-ups (off the loop since the router rework, ~0.4 s each on this machine's
            # keyring) are not part of failover: done before the clock starts.
            prepare = getattr(wb, "prepare", None)
            await prepare() if prepare else wb.backends()
            started = time.perf_counter()
            stream = wb.router.route(request)
            first = await stream.__anext__()
            elapsed = time.perf_counter() - started
            await stream.aclose()
            assert first.backend == "good", first
            return elapsed, dead.count(), stream.failover_note()
        finally:
            await wb.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "both"], default="both")
    args = parser.parse_args()
    dead, good = FakeUpstream().start(), FakeUpstream().start()
    try:
        for case in CASES if args.case == "both" else [args.case]:
            elapsed, requests, note = await failover_time(case, dead, good)
            print(f"{case:12s} failover after {elapsed:7.2f} s, {requests} request(s) to the dead upstream: {note}")
    finally:
        dead.stop()
        good.stop()


if __name__ == "__main__":
    asyncio.run(main())
