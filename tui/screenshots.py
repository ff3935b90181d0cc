"""Fixed, deterministic scenes for the snapshot tests and `make screenshots`.

python -m tui.screenshots screenshots/     # an SVG of each scene in SCREENSHOTS
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from router.config import AppConfig
from router.rules import Rule, Step
from router.store import BackendRecord, Conversation, RequestRecord, Store

FIXED_NOW = 1795000000.0  # a fixed clock: 2026-11-18 10:13:20 UTC
PANES = ("chat", "models", "rules", "health", "requests")


def fixed_config(base: Path, models_dir: Path | None) -> AppConfig:
    engine = EngineConfig(
        data_dir=base / "data",
        model_dirs=[models_dir] if models_dir else [],
        scan_hf_cache=False,
        memory_budget_bytes=8 * 2**30,
    )
    return AppConfig(engine=engine, listener_port=8765)


def seed_store(store: Store) -> None:
    """Rules, backends (unreachable on purpose: nothing is called) and a request log."""
    store.set_setting("cloud_routing", True)  # the screenshots show cloud routes in use
    # A long reset timeout: a tripped breaker's countdown reads the same whenever the scene is taken.
    store.save_backend(
        BackendRecord(
            "openai", "openai", "http://127.0.0.1:9/v1", {"fail_max": 3, "reset_timeout": 7200}, created_at=FIXED_NOW
        )
    )
    store.save_backend(
        BackendRecord("anthropic", "anthropic", "http://127.0.0.1:9", {"reset_timeout": 7200}, created_at=FIXED_NOW)
    )
    store.add_rule(
        Rule(
            "gpt-*",
            "openai",
            fallbacks=[Step("anthropic", "claude-sonnet-4"), Step("local", "demo")],
            priority=5,
            note="cloud first",
        )
    )
    store.add_rule(Rule("fast", "local", model="tiny-llama-mlx", note="rename"))
    store.add_rule(Rule(r"re:claude-.*", "anthropic", fallbacks=[Step("openai", "gpt-4o")]))
    store.add_rule(Rule("*", "local", priority=-10, enabled=False, note="catch-all"))
    attempts_ok = [{"backend": "local", "model": "tiny-llama-mlx", "outcome": "ok", "latency_s": 0.41, "error": None}]
    attempts_fo = [
        {
            "backend": "openai",
            "model": "gpt-4o",
            "outcome": "unavailable",
            "latency_s": 0.02,
            "error": "HTTP 503 after 3 attempts",
        },
        {"backend": "anthropic", "model": "claude-sonnet-4", "outcome": "ok", "latency_s": 1.9, "error": None},
    ]
    rows = [
        RequestRecord(
            "tui",
            "canonical",
            "fast",
            2,
            attempts_ok,
            "local",
            "tiny-llama-mlx",
            18,
            64,
            0.012,
            171.3,
            "ok",
            at=FIXED_NOW - 120,
            request_id="a1b2c3d4e5f6",
            latency_s=0.41,
        ),
        RequestRecord(
            "listener",
            "anthropic",
            "gpt-4o",
            1,
            attempts_fo,
            "anthropic",
            "claude-sonnet-4",
            25,
            212,
            0.84,
            58.2,
            "ok",
            at=FIXED_NOW - 60,
            request_id="0f9e8d7c6b5a",
            latency_s=1.92,
        ),
        RequestRecord(
            "listener",
            "openai",
            "nope",
            None,
            [],
            None,
            None,
            None,
            None,
            None,
            None,
            "error",
            error="model 'nope' not found locally",
            at=FIXED_NOW - 30,
            request_id="112233445566",
        ),
    ]
    for r in rows:
        store.log_request(r)
    store.save_conversation(sample_conversation())


SAMPLE_TITLE = "How do I reverse a list in Python?"


def down_conversation() -> Conversation:
    """A question that found every backend down."""
    meta = (
        "error: all backends unavailable: openai: breaker open; anthropic: breaker open; "
        "local: model 'demo' not found locally"
    )
    return Conversation(
        title="Summarise this changelog",
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "Summarise this changelog in three bullet points."},
            {"role": "assistant", "content": "", "meta": meta, "state": "error"},
        ],
        created_at=FIXED_NOW - 30,
    )


def sample_conversation() -> Conversation:
    """A saved chat whose answer came from the cloud after the first backend failed."""
    from engine.types import Usage
    from tui.panes.chat import describe_answer

    answer = (
        "Use slicing for a reversed copy, or reverse in place:\n\n"
        "```python\nitems = [1, 2, 3]\nprint(items[::-1])  # [3, 2, 1]\nitems.reverse()\n```\n\n"
        "- `reversed(items)` gives an iterator without copying.\n"
        "- `items.reverse()` returns `None`: it changes the list itself."
    )
    meta = describe_answer(
        "anthropic", "claude-sonnet-4", Usage(25, 212, 0.84, 58.2), "openai unavailable: HTTP 503 after 3 attempts"
    )
    return Conversation(
        title="How do I reverse a list in Python?",
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "How do I reverse a list in Python?"},
            {"role": "assistant", "content": answer, "meta": meta},
        ],
        created_at=FIXED_NOW - 60,
    )


def fixed_app(base: Path, models_dir: Path | None) -> Any:
    from tui.app import WorkbenchApp

    os.environ["TZ"] = "UTC"
    time.tzset()
    app = WorkbenchApp(fixed_config(base, models_dir))
    app.workbench.notices.clear()  # they depend on the machine (a missing OpenBLAS); the pictures must not
    seed_store(app.workbench.store)
    return app


def quiet(app: object) -> None:
    """No blinking cursors: snapshots must not depend on when they were taken."""
    from textual.widgets import Input, TextArea

    for screen in app.screen_stack:  # type: ignore[attr-defined]
        for widget in screen.query(Input):
            widget.cursor_blink = False
        for area in screen.query(TextArea):
            area.cursor_blink = False


async def settle(pilot: object, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    """Until every worker but the event pump is done (panes read the database in workers), then
    until the screen has nothing left to do."""
    from textual.worker import WorkerState

    app = pilot.app  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while any(w.group != "events" and w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers):
        if time.monotonic() > deadline:
            raise TimeoutError("workers still running: " + ", ".join(w.name for w in app.workers))
        await asyncio.sleep(0.02)
    await pilot.pause()  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]
    quiet(app)


async def prepare(app: Any, pane: str) -> None:
    """Show a pane as a person would look at it (a saved chat open, a name in the rules' explain box)."""
    app.action_show_pane(pane)
    if pane == "chat":
        from tui.panes.chat import ChatPane

        conv = next(c for c in app.workbench.store.list_conversations() if c.title == SAMPLE_TITLE)
        await app.query_one(ChatPane).open_conversation(conv.id)
    if pane == "rules":
        app.query_one("#try-model").value = "gpt-4o"
    if pane == "requests":
        app.query_one("#requests-table").move_cursor(row=1)


async def all_backends_down(app: Any, pilot: Any) -> None:
    """Both cloud breakers open, the local fallback missing: the chat says so before and after asking."""
    from tui.panes.chat import ChatPane

    for name in ("openai", "anthropic"):
        app.workbench.trip_breaker(name)
    conv = app.workbench.store.save_conversation(down_conversation())
    app.action_show_pane("chat")
    await app.query_one(ChatPane).open_conversation(conv.id)
    app.tick()


async def rule_form(app: Any, pilot: Any) -> None:
    app.action_show_pane("rules")
    await settle(pilot)
    await pilot.press("a")
    form = app.screen
    form.query_one("#pattern").value = "fast"
    form.query_one("#model").value = "tiny-llama-q4"


async def backend_form(app: Any, pilot: Any) -> None:
    app.action_show_pane("rules")
    await settle(pilot)
    await pilot.press("b")
    app.screen.query_one("#name").value = "ollama"
    app.screen.query_one("#kind").value = "openai-compatible"


async def key_form(app: Any, pilot: Any) -> None:
    app.action_show_pane("rules")
    await settle(pilot)
    table = app.query_one("#backends-table")
    table.focus()
    table.move_cursor(row=2)
    await pilot.press("k")


async def confirm_delete(app: Any, pilot: Any) -> None:
    app.action_show_pane("rules")
    await settle(pilot)
    table = app.query_one("#rules-table")
    table.move_cursor(row=1)
    await pilot.press("d")


async def help_screen(app: Any, pilot: Any) -> None:
    await pilot.press("f10")


def pane_scene(pane: str) -> Callable[[Any, Any], Awaitable[None]]:
    async def scene(app: Any, pilot: Any) -> None:
        await prepare(app, pane)

    return scene


# name -> (terminal size, what to do before the picture)
SCENES: dict[str, tuple[tuple[int, int], Callable[[Any, Any], Awaitable[None]]]] = {
    **{f"{pane}-120x40": ((120, 40), pane_scene(pane)) for pane in PANES},
    **{f"{pane}-80x24": ((80, 24), pane_scene(pane)) for pane in PANES},
    "rule-form-80x24": ((80, 24), rule_form),
    "backend-form-80x24": ((80, 24), backend_form),
    "key-form-80x24": ((80, 24), key_form),
    "confirm-80x24": ((80, 24), confirm_delete),
    "help-80x24": ((80, 24), help_screen),
    "all-backends-down-100x30": ((100, 30), all_backends_down),
}
# What `make screenshots` writes (the README shows these).
SCREENSHOTS = [
    *(f"{pane}-120x40" for pane in PANES),
    "chat-80x24",
    "rules-80x24",
    "help-80x24",
    "all-backends-down-100x30",
]


async def play(app: Any, pilot: Any, scene: str) -> None:
    """Bring the app to a scene and wait until nothing moves."""
    await settle(pilot)
    await SCENES[scene][1](app, pilot)
    await settle(pilot)


async def save_all(out: Path, models_dir: Path | None) -> list[Path]:
    import tempfile

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before any app runs)
    written: list[Path] = []
    for scene in SCREENSHOTS:
        size = SCENES[scene][0]
        with tempfile.TemporaryDirectory() as tmp:
            app = fixed_app(Path(tmp), models_dir)
            async with app.run_test(size=size) as pilot:
                await play(app, pilot, scene)
                app.save_screenshot(f"{scene}.svg", str(out))
                written.append(out / f"{scene}.svg")
    return written


def main(argv: list[str]) -> int:
    # Before textual is imported: the tab underline otherwise slides, and the SVG catches it mid-way.
    os.environ["TEXTUAL_ANIMATIONS"] = "none"
    out = Path(argv[0] if argv else "screenshots")
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    import tempfile

    from tests.fixtures.tiny_model import write_tiny_gguf, write_tiny_mlx_model

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        folder = write_tiny_mlx_model(models / "tiny-llama-mlx")
        write_tiny_gguf(folder, models / "tiny-llama.gguf")
        for path in asyncio.run(save_all(out, models)):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
