"""Fixed, deterministic data for snapshots and `make screenshots`.

    python -m tui.screenshots screenshots/     # an SVG of every pane at 120x40, chat also at 80x24
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from engine.config import EngineConfig
from router.config import AppConfig
from router.rules import Rule, Step
from router.store import BackendRecord, Conversation, RequestRecord

FIXED_NOW = 1795000000.0  # a fixed clock: 2026-11-18 10:13:20 UTC
PANES = ("chat", "models", "rules", "health", "requests")


def fixed_config(base: Path, models_dir: Path | None) -> AppConfig:
    engine = EngineConfig(data_dir=base / "data", model_dirs=[models_dir] if models_dir else [],
                          scan_hf_cache=False, memory_budget_bytes=8 * 2**30)
    return AppConfig(engine=engine, listener_port=8765)


def seed_store(store: object) -> None:
    """Rules, backends (unreachable on purpose: nothing is called) and a request log."""
    store.set_setting("cloud_routing", True)  # the screenshots show cloud routes in use
    store.save_backend(BackendRecord("openai", "openai", "http://127.0.0.1:9/v1", {"fail_max": 3}, created_at=FIXED_NOW))
    store.save_backend(BackendRecord("anthropic", "anthropic", "http://127.0.0.1:9", created_at=FIXED_NOW))
    store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("anthropic", "claude-sonnet-4"), Step("local", "demo")],
                        priority=5, note="cloud first"))
    store.add_rule(Rule("fast", "local", model="tiny-llama-mlx", note="rename"))
    store.add_rule(Rule(r"re:claude-.*", "anthropic", fallbacks=[Step("openai", "gpt-4o")]))
    store.add_rule(Rule("*", "local", priority=-10, enabled=False, note="catch-all"))
    attempts_ok = [{"backend": "local", "model": "tiny-llama-mlx", "outcome": "ok", "latency_s": 0.41, "error": None}]
    attempts_fo = [{"backend": "openai", "model": "gpt-4o", "outcome": "unavailable", "latency_s": 0.02,
                    "error": "HTTP 503 after 3 attempts"},
                   {"backend": "anthropic", "model": "claude-sonnet-4", "outcome": "ok", "latency_s": 1.9,
                    "error": None}]
    rows = [
        RequestRecord("tui", "canonical", "fast", 2, attempts_ok, "local", "tiny-llama-mlx", 18, 64, 0.012, 171.3,
                      "ok", at=FIXED_NOW - 120, request_id="a1b2c3d4e5f6", latency_s=0.41),
        RequestRecord("listener", "anthropic", "gpt-4o", 1, attempts_fo, "anthropic", "claude-sonnet-4", 25, 212,
                      0.84, 58.2, "ok", at=FIXED_NOW - 60, request_id="0f9e8d7c6b5a", latency_s=1.92),
        RequestRecord("listener", "openai", "nope", None, [], None, None, None, None, None, None, "error",
                      error="model 'nope' not found locally", at=FIXED_NOW - 30, request_id="112233445566"),
    ]
    for r in rows:
        store.log_request(r)
    store.save_conversation(sample_conversation())


def sample_conversation() -> Conversation:
    """A saved chat whose answer came from the cloud after the first backend failed."""
    from engine.types import Usage
    from tui.panes.chat import describe_answer

    answer = ("Use slicing for a reversed copy, or reverse in place:\n\n"
              "```python\nitems = [1, 2, 3]\nprint(items[::-1])  # [3, 2, 1]\nitems.reverse()\n```\n\n"
              "- `reversed(items)` gives an iterator without copying.\n"
              "- `items.reverse()` returns `None`: it changes the list itself.")
    meta = describe_answer("anthropic", "claude-sonnet-4", Usage(25, 212, 0.84, 58.2),
                           "openai unavailable: HTTP 503 after 3 attempts")
    return Conversation(title="How do I reverse a list in Python?", model="gpt-4o", messages=[
        {"role": "user", "content": "How do I reverse a list in Python?"},
        {"role": "assistant", "content": answer, "meta": meta},
    ], created_at=FIXED_NOW - 60)


def fixed_app(base: Path, models_dir: Path | None):
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

    for widget in app.query(Input):  # type: ignore[attr-defined]
        widget.cursor_blink = False
    for area in app.query(TextArea):  # type: ignore[attr-defined]
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


async def prepare(app: object, pane: str) -> None:
    """Show a pane as a person would look at it (a saved chat open, a name in the rules' explain box)."""
    app.action_show_pane(pane)  # type: ignore[attr-defined]
    if pane == "chat":
        from tui.panes.chat import ChatPane

        [conv] = app.workbench.store.list_conversations()  # type: ignore[attr-defined]
        await app.query_one(ChatPane).open_conversation(conv.id)  # type: ignore[attr-defined]
    if pane == "rules":
        app.query_one("#try-model").value = "gpt-4o"  # type: ignore[attr-defined]
    if pane == "requests":
        app.query_one("#requests-table").move_cursor(row=1)  # type: ignore[attr-defined]


async def save_all(out: Path, models_dir: Path | None) -> list[Path]:
    import tempfile

    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before any app runs)
    written: list[Path] = []
    for size, panes in (((120, 40), PANES), ((80, 24), ("chat",))):
        for pane in panes:
            with tempfile.TemporaryDirectory() as tmp:
                app = fixed_app(Path(tmp), models_dir)
                async with app.run_test(size=size) as pilot:
                    await settle(pilot)
                    await prepare(app, pane)
                    await settle(pilot)
                    name = f"{pane}-{size[0]}x{size[1]}.svg"
                    app.save_screenshot(name, str(out))
                    written.append(out / name)
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
