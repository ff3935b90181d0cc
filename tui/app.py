"""The workbench app: five panes over one Workbench, built from a config object."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any, Callable

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import Footer, Static, TabbedContent, TabPane

from router.config import AppConfig
from router.events import BackendsChanged, BreakerChanged, RequestFinished, RulesChanged
from tui.format import human_bytes
from tui.panes.chat import ChatPane
from tui.panes.health import HealthPane
from tui.panes.models import ModelsPane
from tui.panes.requests import RequestsPane
from tui.panes.rules import RulesPane

log = logging.getLogger(__name__)

PANES = [("chat", "Chat"), ("models", "Models"), ("rules", "Rules"), ("health", "Health"), ("requests", "Requests")]
STATE_COLOURS = {"closed": "green", "half-open": "yellow", "open": "red"}


class StatusBar(Static):
    """Listener state, loaded models and memory, one dot per backend coloured by breaker state."""


class WorkbenchCommands(Provider):
    """Command palette entries built from the app's current state."""

    def commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: WorkbenchApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, Callable[[], Any], str]] = []
        for pane, title in PANES:
            out.append((f"Go to {title}", partial(app.action_show_pane, pane), f"switch to the {title} pane"))
        out.append(("New chat", app.action_new_chat, "start an empty conversation"))
        out.append(("Add rule", app.action_add_rule, "open the rule form"))
        listener = "Stop the listener" if app.listener_running else "Start the listener"
        out.append((listener, app.action_toggle_listener, f"{app.config.listener_host}:{app.config.listener_port}"))
        for info in app.workbench.local.models():
            out.append((f"Load model {info.id}", partial(app.load_model, info.id), "load into memory"))
        for snap in app.workbench.snapshots():
            if snap.state in ("open", "half-open"):
                out.append((f"Reset breaker {snap.name}", partial(app.reset_breaker, snap.name), snap.state))
        return out

    async def discover(self) -> Hits:
        for name, action, help_text in self.commands():
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)


class WorkbenchApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "mlx-workbench"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS = [
        *[Binding(f"f{i},alt+{i},{i}", f"show_pane('{pane}')", title, id=f"pane.{pane}", show=False)
          for i, (pane, title) in enumerate(PANES, 1)],
        Binding("ctrl+l", "toggle_listener", "Listener", id="app.listener"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(self, config: AppConfig, workbench: Any = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self.clock = clock
        self._own_workbench = workbench is None
        if workbench is None:
            from router.workbench import Workbench

            workbench = Workbench.open(config)
        self.workbench = workbench
        self.listener: Any = None
        self.theme = config.theme
        self.mounted_at: float | None = None
        self.status_markup = ""

    @property
    def listener_running(self) -> bool:
        return self.listener is not None and self.listener.running

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status-bar")
        with TabbedContent(id="panes", initial="chat"):
            with TabPane("F1 Chat", id="chat"):
                yield ChatPane(id="chat-pane")
            with TabPane("F2 Models", id="models"):
                yield ModelsPane(id="models-pane")
            with TabPane("F3 Rules", id="rules"):
                yield RulesPane(id="rules-pane")
            with TabPane("F4 Health", id="health"):
                yield HealthPane(id="health-pane")
            with TabPane("F5 Requests", id="requests"):
                yield RequestsPane(id="requests-pane")
        # Compact: spaced out, the rules pane's bindings overflow even 120 columns and get cut in half.
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.mounted_at = time.perf_counter()
        for notice in self.workbench.store.notices:
            self.notify(notice, severity="warning", timeout=15)
        self.refresh_status()
        self.pump_events()
        self.set_interval(1.0, self.tick)
        # At once, not `focus()` (deferred): a deferred focus could land after a pane switch made
        # right after start, and pull the tabs back to the chat.
        self.screen.set_focus(self.query_one("#prompt"))

    def tick(self) -> None:
        """Countdowns to half-open move even when no event arrives."""
        if any(s.state != "closed" for s in self.workbench.snapshots()):
            self.query_one(HealthPane).refresh_cards()
            self.refresh_status()

    @work(exclusive=True, group="events", exit_on_error=False)
    async def pump_events(self) -> None:
        sub = self.workbench.events.subscribe(maxsize=512)
        try:
            async for event in sub:
                self.handle_workbench_event(event)
        finally:
            sub.close()

    def handle_workbench_event(self, event: Any) -> None:
        if isinstance(event, (BreakerChanged, RequestFinished, BackendsChanged)):
            self.query_one(HealthPane).refresh_cards()
            self.refresh_status()
        if isinstance(event, RequestFinished):
            self.query_one(RequestsPane).refresh_rows()
        if isinstance(event, (RulesChanged, BackendsChanged)):
            self.query_one(RulesPane).refresh_all()
            self.query_one(ChatPane).refresh_models()

    def refresh_status(self) -> None:
        mem = self.workbench.local.memory()
        listener = f"listener {self.listener.url}" if self.listener_running else "listener off"
        dots = "  ".join(f"[{STATE_COLOURS.get(s.state, 'white')}]●[/] {s.name}" for s in self.workbench.snapshots())
        self.status_markup = (
            f" {listener} │ {len(mem.loaded)} loaded, {human_bytes(mem.used_bytes)} / "
            f"{human_bytes(mem.budget_bytes)} │ {dots}")
        self.query_one(StatusBar).update(self.status_markup)

    # ------------------------------------------------------------ actions

    FOCUS_IN_PANE = {"chat": "#prompt", "models": "#models-table", "rules": "#rules-table",
                     "health": "BackendCard", "requests": "#requests-table"}

    def action_show_pane(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self._focus_pane(pane)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # A stale message (the first tab's, handled after a quick switch) must not pull focus back.
        if event.pane.id == self.query_one(TabbedContent).active:
            self._focus_pane(event.pane.id or "")

    def _focus_pane(self, pane: str) -> None:
        # Focus must move into the shown pane: left in a hidden pane, Textual hands it to a hidden
        # sibling and the TabbedContent switches back to that pane.
        selector = self.FOCUS_IN_PANE.get(pane)
        if selector:
            targets = self.query_one(f"TabPane#{pane}").query(selector)
            if targets:
                self.set_focus(targets.first())

    async def action_new_chat(self) -> None:
        self.action_show_pane("chat")
        await self.query_one(ChatPane).action_new_chat()

    def action_add_rule(self) -> None:
        self.action_show_pane("rules")
        self.query_one(RulesPane).action_add_rule()

    def load_model(self, name: str) -> None:
        self.action_show_pane("models")
        self.query_one(ModelsPane).load_model(name)

    def reset_breaker(self, name: str) -> None:
        try:
            self.workbench.reset_breaker(name)
        except KeyError as exc:
            self.notify(str(exc).strip("'"), severity="error")
            return
        self.notify(f"breaker of {name} reset (closed)")
        self.query_one(HealthPane).refresh_cards()
        self.refresh_status()

    def trip_breaker(self, name: str) -> None:
        from tui.screens import Confirm

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.workbench.trip_breaker(name)
            except KeyError as exc:
                self.notify(str(exc).strip("'"), severity="error")
                return
            self.notify(f"breaker of {name} tripped (open): requests skip it until it is reset")
            self.query_one(HealthPane).refresh_cards()
            self.refresh_status()

        self.push_screen(Confirm(f"Trip the breaker of {name}? Requests will skip it."), done)

    async def action_toggle_listener(self) -> None:
        from router.listener import Listener, ListenerError

        if self.listener_running:
            await self.listener.stop()
            self.notify("listener stopped")
        else:
            listener = Listener(self.workbench, self.config.listener_host, self.config.listener_port)
            try:
                await listener.start()
            except ListenerError as exc:
                self.notify(str(exc), severity="error", timeout=10)
                return
            self.listener = listener
            self.notify(f"listening on {listener.url} (OpenAI: /v1/chat/completions, Anthropic: /v1/messages)")
        self.refresh_status()

    async def on_unmount(self) -> None:
        if self.listener_running:
            await self.listener.stop()
        if self._own_workbench:
            await self.workbench.aclose()


def run_app(config_path: str | None = None) -> int:
    import sys

    from router.config import ConfigError, load_config
    from router.store import StoreError

    try:
        config = load_config(config_path)
        app = WorkbenchApp(config)
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log_file = config.engine.data_dir / "workbench.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # Nothing may print over the TUI: logs (ours, uvicorn's, httpx's) go to a file.
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app.run()
    return 0
