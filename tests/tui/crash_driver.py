"""A workbench in a process of its own, asking a question the tiny model answers slowly, for the
kill -9 test: `python -m tests.tui.crash_driver DATA_DIR MODELS_DIR`. Prints STREAMING once the
answer has begun, then keeps streaming until it is killed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path


async def main(data: Path, models: Path) -> None:
    from mlx_lm.models import llama

    from tests.tui.helpers import ask, make_app, wait_for

    forward = llama.Model.__call__

    def slow_forward(self, *args, **kwargs):
        time.sleep(0.05)
        return forward(self, *args, **kwargs)

    llama.Model.__call__ = slow_forward
    app = make_app(data, models)
    async with app.run_test(size=(100, 30)) as pilot:
        chat = app.query_one("ChatPane")
        await app.workbench.local.load("tiny-llama-mlx")
        app.query_one("#max-tokens").value = "100000"
        app.query_one("#temperature").value = "0"
        await ask(pilot, "alpha beta gamma", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: chat.live_tokens > 0, timeout=60)
        print("STREAMING", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
