"""What the TUI tests share: an app on a temporary data dir, waiting without pilot.pause (MLX keeps
the CPU busy), asking a question, reading the screen as text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from router.config import AppConfig
from tui.app import WorkbenchApp


def make_config(tmp_path: Path, models_dir: Path, **kw: Any) -> AppConfig:
    cfg = AppConfig(
        engine=EngineConfig(
            data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False, memory_budget_bytes=2**30
        ),
        listener_port=0,
    )
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def make_app(tmp_path: Path, models_dir: Path, **kw: Any) -> WorkbenchApp:
    return WorkbenchApp(make_config(tmp_path, models_dir, **kw))


async def wait_for(pilot: Any, predicate: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError("condition not reached in time")
        # Not pilot.pause(): that waits for the CPU to go idle, which it doesn't while MLX generates.
        await asyncio.sleep(0.02)


async def ask(pilot: Any, text: str, model: str | None = None) -> None:
    app = pilot.app
    if model is not None:
        app.query_one("#model").value = model
    app.query_one("#prompt").load_text(text)
    app.query_one("#prompt").focus()
    await pilot.press("enter")


def screen_text(app: Any) -> str:
    """The screen as plain text, one line per row."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def notifications(app: Any) -> list[str]:
    return [n.message for n in app._notifications]
