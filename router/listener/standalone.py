"""The listener as its own process: `mlx-workbench serve`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from router.config import AppConfig
from router.listener.errors import ListenerError
from router.listener.server import Listener
from router.workbench import Workbench

log = logging.getLogger("mlxwb.listener")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def freeze_startup_objects() -> None:
    """Take everything built at start-up (modules, the app, the store) out of the garbage
    collector's sight: a full collection walked all of it, a 20 ms stall of every open stream
    (measured twice in 600 requests), and they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


async def serve_forever(workbench: Workbench, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (or the server dies), then stop cleanly: open streams end with
    their protocol's error event, and the process exits 0."""
    listener = Listener(workbench, host, port)
    await listener.start()
    freeze_startup_objects()
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
        open_requests = listener.open_requests
        await listener.stop()
    log.info("listener stopped (%d open requests ended)", open_requests)
    print("mlx-workbench listener stopped", flush=True)


def log_to_file(data_dir: Path) -> Path:
    """<data dir>/workbench.log, private like the database (0600) whatever the umask; the console
    keeps warnings and errors."""
    path = data_dir / "workbench.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    to_console = logging.StreamHandler()
    to_console.setLevel(logging.WARNING)
    to_console.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # httpx says "HTTP Request: POST ..." at INFO for every upstream request: the access log and the
    # request log say it already, and the line was a file write between upstream headers and answer.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root.addHandler(to_file)
    root.addHandler(to_console)
    return path


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it installs (uvicorn[standard]); the TUI's listener runs on Textual's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_serve(config: AppConfig, host: str | None = None, port: int | None = None) -> int:
    try:
        log_to_file(config.engine.data_dir)
    except OSError as exc:
        print(f"error: cannot write the log file in {config.engine.data_dir}: {exc}", file=sys.stderr, flush=True)
        return 1

    async def main() -> None:
        wb = Workbench.open(config)
        try:
            await serve_forever(wb, host or config.listener_host, config.listener_port if port is None else port)
        finally:
            await wb.aclose()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        return 0
    except ListenerError as exc:
        log.info("listener not started: %s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
