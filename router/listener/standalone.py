"""The listener as its own process: `mlx-workbench serve`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from router.config import AppConfig
from router.listener.errors import ListenerError
from router.listener.server import Listener
from router.workbench import Workbench

log = logging.getLogger("mlxwb.listener")


async def serve_forever(workbench: Workbench, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (or the server dies), then stop cleanly."""
    listener = Listener(workbench, host, port)
    await listener.start()
    print(
        f"mlx-workbench listening on {listener.url} (OpenAI: {listener.url}/v1, Anthropic: {listener.url})", flush=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):
            log.debug("no loop signal handler for %s here; KeyboardInterrupt still stops the server", sig)
    waiter = asyncio.ensure_future(stop.wait())
    served = asyncio.ensure_future(listener.wait())
    try:
        await asyncio.wait({waiter, served}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        served.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
        await listener.stop()
    print("mlx-workbench listener stopped", flush=True)


def run_serve(config: AppConfig, host: str | None = None, port: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        wb = Workbench.open(config)
        try:
            await serve_forever(wb, host or config.listener_host, config.listener_port if port is None else port)
        finally:
            await wb.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 0
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
