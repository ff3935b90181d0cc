"""Models: what is on disk, what is loaded, memory against the budget; kept current by events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, ProgressBar, Static

from engine.types import CancelledError, EngineError
from tui import messages
from tui.format import human_bytes, human_count
from tui.panes.base import Hint, Pane, PaneStatus
from tui.widgets.fit import Column, FitTable

COLUMNS = [
    Column("Name", "name", 0),
    Column("State", "state", 1),
    Column("Size", "size", 3),
    Column("Memory", "memory", 2),
    Column("Params", "params", 4),
    Column("Quant", "quant", 5),
    Column("Format", "format", 6),
    Column("Arch", "arch", 7),
]
EMPTY_HINT = (
    "No local models yet: press f to fetch the demo model (SmolLM2-135M, 98 MB), or add model_dirs in the config."
)


class ModelsPane(Pane):
    HELP_TITLE = "Models"
    BINDINGS = [
        Binding("l", "load", "Load", id="models-load"),
        Binding("u", "unload", "Unload", id="models-unload"),
        Binding("f", "fetch_demo", "Fetch demo", id="models-fetch-demo"),
        Binding("r", "rescan", "Rescan", id="models-rescan", show=False),
        Binding("escape", "cancel_load", "Cancel load", id="models-cancel-load"),
    ]

    DEFAULT_CSS = """
    ModelsPane #models-table { height: 1fr; }
    ModelsPane #load-progress { margin: 1 0 0 0; }
    ModelsPane #memory { height: auto; }
    """

    def __init__(self, workbench: Any, db: Any, **kw: Any) -> None:
        super().__init__(workbench, db, **kw)
        # Set while a load runs; the MLX thread checks it between the load's stages.
        self._load_cancel: threading.Event | None = None
        self._shown: tuple[Any, ...] | None = None
        self.scanned = False

    def compose(self) -> ComposeResult:
        yield Hint("", id="models-empty")
        yield FitTable(COLUMNS, id="models-table")
        yield ProgressBar(total=1.0, id="load-progress", show_eta=False)
        yield Static("", id="memory")
        yield PaneStatus("", id="models-status")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self.query_one("#models-empty", Hint).display = False
        self.rescan(force=False)

    @work(exclusive=True, group="models-scan", exit_on_error=False)
    async def rescan(self, force: bool = True) -> None:
        # A disk scan (model folders, the Hugging Face cache): off the screen's thread.
        scan = self.wb.local.refresh_models if force else self.wb.local.models
        await asyncio.to_thread(scan)
        self.scanned = True
        self.refresh_table(force=True)
        if force:
            # The list of models changed: the chat's names and the rule form's checks follow.
            self.post_message(messages.ConfigWritten())

    def refresh_table(self, force: bool = False) -> None:
        if not self.scanned:
            return
        table = self.query_one(FitTable)
        models = self.wb.local.models()
        mem = self.wb.local.memory()
        loaded = {m.id: m for m in mem.loaded}
        cache = mem.prompt_cache_bytes if mem.prompt_cache_limit_bytes else None
        shown = (tuple(m.id for m in models), tuple(sorted(loaded)), mem.used_bytes, cache)
        if shown == self._shown and not force:
            return
        self._shown = shown
        rows = []
        for m in models:
            name = m.id + (f" ({', '.join(m.aliases)})" if m.aliases else "")
            state = "loaded" if m.id in loaded else "-"
            memory = human_bytes(loaded[m.id].bytes) if m.id in loaded else f"~{human_bytes(m.est_memory_bytes)}"
            rows.append(
                (
                    m.id,
                    (
                        name,
                        state,
                        human_bytes(m.size_bytes),
                        memory,
                        human_count(m.parameters),
                        m.quantization,
                        m.format,
                        m.architecture,
                    ),
                )
            )
        table.set_rows(rows)
        hint = self.query_one("#models-empty", Hint)
        hint.update(EMPTY_HINT)
        hint.display = not models
        line = (
            f"Memory: {human_bytes(mem.used_bytes)} of {human_bytes(mem.budget_bytes)} budget · "
            f"{len(mem.loaded)} loaded"
        )
        if cache is not None:
            line += (
                f" · prompt cache {human_bytes(cache)} ({mem.prompt_cache_entries} entries, "
                f"up to {human_bytes(mem.prompt_cache_limit_bytes)})"
            )
        self.query_one("#memory", Static).update(f"{line} · BLAS: {mem.blas}")

    @on(DataTable.RowHighlighted)
    def show_details(self, event: DataTable.RowHighlighted) -> None:
        # What the narrow table leaves out, for the selected model.
        table = self.query_one(FitTable)
        if not table.hidden or event.row_key is None or event.row_key.value is None:
            return
        cells = table.row_cells(event.row_key.value)
        self.say(" · ".join(f"{c.label.lower()} {cells[c.key]}" for c in table.hidden if c.key in cells))

    @on(messages.ModelsChanged)
    def models_changed(self) -> None:
        self.refresh_table()

    @on(messages.RequestStatus)
    def request_status(self, event: messages.RequestStatus) -> None:
        # A chat or the listener loading a model: the progress shows here too.
        if event.backend == "local":
            self.say(event.text)

    def selected(self) -> str | None:
        table = self.query_one(FitTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def is_loaded(self, name: str) -> bool:
        return any(m.id == name for m in self.wb.local.memory().loaded)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_load":
            return self._load_cancel is not None  # shown in the footer only while a model loads
        return True

    def action_load(self) -> None:
        name = self.selected()
        if name:
            self.load_model(name)

    @on(messages.LoadModel)
    def load_command(self, event: messages.LoadModel) -> None:
        self.load_model(event.model)

    def action_cancel_load(self) -> None:
        if self._load_cancel is not None:
            self._load_cancel.set()
            self.say("cancelling the load…")

    @work(exclusive=True, group="models", exit_on_error=False)
    async def load_model(self, name: str) -> None:
        bar = self.query_one(ProgressBar)
        bar.display = True
        bar.update(progress=0.0)
        self.say(f"loading {name}…")

        def progress(p: Any) -> None:
            # Called on the MLX thread: hand the number over, never wait for the screen.
            self.app.call_later(bar.update, progress=p.fraction)

        cancel = self._load_cancel = threading.Event()
        self.refresh_bindings()
        try:
            await self.wb.local.load(name, progress=progress, cancel=cancel)
            self.say(f"loaded {name}")
        except CancelledError:
            self.say(f"loading {name} was cancelled; nothing was kept")
        except EngineError as exc:
            self.say(str(exc), error=True)
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
            self.post_message(messages.StatusChanged())

    def action_unload(self) -> None:
        name = self.selected()
        if name:
            self.unload_model(name)

    @on(messages.UnloadModel)
    def unload_command(self, event: messages.UnloadModel) -> None:
        self.unload_model(event.model)

    @work(exclusive=True, group="models", exit_on_error=False)
    async def unload_model(self, name: str) -> None:
        try:
            done = await self.wb.local.unload(name)
            self.say(f"unloaded {name}" if done else f"{name} was not loaded")
        except EngineError as exc:
            self.say(str(exc), error=True)
        self.refresh_table()
        self.post_message(messages.StatusChanged())

    def action_rescan(self) -> None:
        self.rescan()
        self.say("rescanning the model folders…")

    def action_fetch_demo(self) -> None:
        self.fetch_demo()

    @work(thread=True, exclusive=True, group="fetch", exit_on_error=False)
    def fetch_demo(self) -> None:
        from engine.local.demo import DemoFetchError, fetch_demo

        def say(msg: str) -> None:
            self.app.call_from_thread(self.say, msg)

        try:
            fetch_demo(self.wb.config.engine, say)
        except DemoFetchError as exc:
            self.app.call_from_thread(self.say, str(exc), True)
            return
        self.app.call_from_thread(self.rescan)
