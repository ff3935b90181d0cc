"""The workbench app: five panes over one Workbench, built from a config object (no globals).

The app owns the status bar, the tabs and app-wide keys. It turns router events into messages for
the panes and carries out what panes, cards and the palette ask for by message; it never calls a
pane's methods.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.widgets import TabbedContent, TabPane

from router.config import AppConfig
from router.events import (
    BackendsChanged,
    BreakerChanged,
    CloudRoutingChanged,
    RequestFinished,
    RequestProgress,
    RequestStarted,
    RequestStatus,
    RulesChanged,
)
from router.writer import WriteFailed
from tui import messages
from tui.db import DB_ERRORS, TuiDatabase, describe_db_error
from tui.format import duration
from tui.keys import binding_ids, check_keymap, help_rows
from tui.panes.base import Pane
from tui.panes.chat import ChatPane
from tui.panes.health import HealthPane
from tui.panes.models import ModelsPane
from tui.panes.requests import RequestsPane
from tui.panes.rules import RulesPane
from tui.widgets.fit import FitFooter
from tui.widgets.status_bar import StatusBar, StatusState

log = logging.getLogger(__name__)

PANES = [("chat", "Chat"), ("models", "Models"), ("rules", "Rules"), ("health", "Health"), ("requests", "Requests")]
# Below this width the tabs drop their F-key prefix, so no label is cut.
NARROW_TABS = 76


class PaneTabs(TabbedContent):
    """The panes' tabs, following the focus only while it is still where the notice says.

    A TabPane tells its TabbedContent "something in me got the focus" by a message that climbs the
    DOM one queue at a time. The start-up focus on the prompt sends one; a pane chosen before it
    arrives (the palette, an F-key, right after start on a slow machine) was switched back to the
    chat by it. A notice from a pane that no longer holds the focus is stale: the pane that holds
    it now has sent its own."""

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        # Textual runs this class's handler, then TabbedContent's (which switches to the pane)
        # unless the default is prevented.
        focused = self.screen.focused
        if focused is not None and event.tab_pane not in focused.ancestors:
            event.prevent_default()
            event.stop()


class WorkbenchCommands(Provider):
    """Command palette entries built from the app's current state."""

    def commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: WorkbenchApp = self.app  # type: ignore[assignment]
        return list(app.palette_commands())

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
        *[
            Binding(
                f"f{i},alt+{i}",
                f"show_pane('{pane}')",
                f"Go to {title}",
                id=f"pane-{pane}",
                show=False,
                key_display=f"f{i}",
            )
            for i, (pane, title) in enumerate(PANES, 1)
        ],
        # ? is typed into text fields (the chat has only those): f10 opens the help from anywhere.
        Binding("question_mark,f10", "help", "Help", id="app-help", key_display="?"),
        Binding("ctrl+l", "toggle_listener", "Listener on/off", id="app-listener", show=False),
        Binding("f9", "toggle_cloud", "Cloud routing on/off", id="app-cloud", show=False),
        Binding("ctrl+q", "quit", "Quit", id="app-quit", priority=True, show=False),
    ]

    def __init__(self, config: AppConfig, workbench: Any = None) -> None:
        super().__init__()
        self.config = config
        self._own_workbench = workbench is None
        if workbench is None:
            from router.workbench import Workbench

            workbench = Workbench.open(config)
        self.workbench = workbench
        from router.store import Store

        self.db = TuiDatabase(lambda: Store.open(config.database))
        self.listener: Any = None
        self.theme = config.theme
        # The [keymap] config section: the entries that name a binding are applied, the others said.
        self.keymap, self.keymap_problems = check_keymap(config.keymap, binding_ids())
        self.status_state = StatusState()
        self._db_trouble: str | None = None
        self._local_activity: tuple[tuple[int, int], ...] = ()

    @property
    def listener_running(self) -> bool:
        return self.listener is not None and self.listener.running

    @property
    def status_markup(self) -> str:
        """The status bar as plain text (what a test or a screen reader sees)."""
        return self.query_one(StatusBar).render().plain

    def compose(self) -> ComposeResult:
        wb, db = self.workbench, self.db
        yield StatusBar(id="status-bar")
        with PaneTabs(id="panes", initial="chat"):
            with TabPane("F1 Chat", id="chat"):
                yield ChatPane(wb, db, id="chat-pane")
            with TabPane("F2 Models", id="models"):
                yield ModelsPane(wb, db, id="models-pane")
            with TabPane("F3 Rules", id="rules"):
                yield RulesPane(wb, db, id="rules-pane")
            with TabPane("F4 Health", id="health"):
                yield HealthPane(wb, db, id="health-pane")
            with TabPane("F5 Requests", id="requests"):
                yield RequestsPane(wb, db, id="requests-pane")
        # Compact, and only the keys that fit whole; every key is in the help screen (?).
        yield FitFooter(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        for notice in [*self.workbench.notices, *self.keymap_problems]:
            self.notify(notice, severity="warning", timeout=15)
        self.refresh_status()
        self.pump_events()
        self.set_interval(1.0, self.tick)
        # At once, not `focus()` (deferred): a deferred focus could land after a pane switch made
        # right after start, and pull the tabs back to the chat.
        self.screen.set_focus(self.query_one("#prompt"))

    def on_resize(self) -> None:
        narrow = self.size.width < NARROW_TABS
        tabs = self.query_one(TabbedContent)
        for i, (pane, title) in enumerate(PANES, 1):
            tabs.get_tab(pane).label = title if narrow else f"F{i} {title}"

    # ------------------------------------------------------------ events -> messages

    def broadcast(self, make: Callable[[], Message]) -> None:
        """A fresh copy of a message for every pane (a message is handled once, by one node)."""
        for pane in self.query(Pane):
            pane.post_message(make())

    def tell(self, pane: type[Pane], message: Message) -> None:
        self.query_one(pane).post_message(message)

    @work(exclusive=True, group="events", exit_on_error=False)
    async def pump_events(self) -> None:
        sub = self.workbench.events.subscribe(maxsize=512)
        try:
            async for event in sub:
                try:
                    self.on_router_event(event)
                except DB_ERRORS as exc:
                    # The events keep coming: one that could not be shown must not stop the rest.
                    self._db_trouble_once(exc)
        finally:
            sub.close()

    def on_router_event(self, event: Any) -> None:
        moved = self.refresh_status() or isinstance(event, (BreakerChanged, BackendsChanged))
        if isinstance(event, RequestStatus):
            self.broadcast(lambda: messages.RequestStatus(event.request_id, event.backend, event.text))
            if event.backend == "local":
                self.broadcast(messages.ModelsChanged)
        if isinstance(event, (BreakerChanged, RequestStarted, RequestProgress, RequestFinished, BackendsChanged)):
            self.broadcast(lambda: messages.SnapshotsChanged(breakers_moved=moved))
        if isinstance(event, RequestFinished):
            self.broadcast(lambda: messages.RequestLogged(event.record))
        if isinstance(event, (RequestFinished, RequestProgress)):
            # A request on the local engine may have loaded (or evicted) a model.
            self.broadcast(messages.ModelsChanged)
        if isinstance(event, (RulesChanged, BackendsChanged, CloudRoutingChanged)):
            self.broadcast(messages.ConfigChanged)
        if isinstance(event, WriteFailed):
            self.broadcast(lambda: messages.WriteFailed(event.what, event.error, event.at))
            self._db_trouble_once(f"could not {event.what}: {event.error}")

    def tick(self) -> None:
        """Countdowns to half-open move without events; other processes' changes are noticed here
        (rules(), backends() compare a change token and publish what changed)."""
        try:
            self.workbench.sync()
            snaps = self.workbench.snapshots()
        except DB_ERRORS as exc:
            self._db_trouble_once(exc)
            return
        self._db_trouble = None
        moved = self.refresh_status()
        # The local engine frees a stopped request's place on the MLX thread, after the request's
        # last event: its running/queued counts are looked at here too.
        activity = tuple((s.running, s.queued) for s in snaps if s.kind == "local")
        settled = activity != self._local_activity
        self._local_activity = activity
        if moved or settled or any(s.state != "closed" for s in snaps):
            # Countdowns to half-open move even when nothing happens.
            self.broadcast(lambda: messages.SnapshotsChanged(breakers_moved=moved))

    def _db_trouble_once(self, trouble: BaseException | str) -> None:
        """One notification per distinct database problem, not one a second."""
        if isinstance(trouble, str):
            text = trouble
        else:
            text = f"the database cannot be read: {describe_db_error(trouble)}. The app keeps going and tries again."
        if text != self._db_trouble:
            self._db_trouble = text
            self.notify(text, severity="error", timeout=15)

    def status_now(self) -> StatusState:
        wb = self.workbench
        mem = wb.local.memory()
        try:
            breakers = tuple((s.name, s.state) for s in wb.snapshots() if s.kind != "local")
            cloud: bool | None = wb.router.cloud_routing
        except DB_ERRORS:
            breakers, cloud = self.status_state.breakers, self.status_state.cloud
        # The prompt cache's share of the memory, when caching is on.
        cache = mem.prompt_cache_bytes if mem.prompt_cache_limit_bytes else None
        return StatusState(
            listener_url=self.listener.url if self.listener_running else None,
            loaded=len(mem.loaded),
            used_bytes=mem.used_bytes,
            budget_bytes=mem.budget_bytes,
            cache_bytes=cache,
            breakers=(("local", "closed"), *breakers),
            cloud=cloud,
        )

    def refresh_status(self) -> bool:
        """Update the status bar; True when a breaker or the cloud switch moved since last time."""
        state = self.status_now()
        moved = (state.breakers, state.cloud) != (self.status_state.breakers, self.status_state.cloud)
        if state != self.status_state:
            self.status_state = state
            # query, not query_one: a load finishing while the app closes finds no bar any more.
            for bar in self.query(StatusBar):
                bar.state = state
        return moved

    @on(messages.StatusChanged)
    def status_changed(self) -> None:
        self.refresh_status()

    @on(messages.ConfigWritten)
    def config_written(self) -> None:
        # Written through the TUI's own connection: the router notices on its next read.
        self.tick()
        self.broadcast(messages.ConfigChanged)

    # ------------------------------------------------------------ panes and app-wide actions

    FOCUS_IN_PANE = {
        "chat": "#prompt",
        "models": "#models-table",
        "rules": "#rules-table",
        "health": "BackendCard",
        "requests": "#requests-table",
    }

    def action_show_pane(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self._focus_pane(pane)

    @on(messages.ShowPane)
    def show_pane_message(self, event: messages.ShowPane) -> None:
        self.action_show_pane(event.pane)

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

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(help_rows(self.keymap)))

    def command(self, pane: str, pane_cls: type[Pane], message: Message) -> None:
        """Show a pane and hand it a command (from the palette or an app-wide key)."""
        self.action_show_pane(pane)
        self.tell(pane_cls, message)

    @on(messages.ResetBreaker)
    def reset_breaker(self, event: messages.ResetBreaker) -> None:
        name = event.backend
        try:
            self.workbench.reset_breaker(name)
        except KeyError as exc:
            self.notify(str(exc).strip("'"), severity="error")
            return
        except DB_ERRORS as exc:
            self.notify(
                f"resetting the breaker of {name} failed: {describe_db_error(exc)}. Press r to try again.",
                severity="error",
            )
            return
        self.notify(f"breaker of {name} reset (closed)")
        self.broadcast(messages.SnapshotsChanged)
        self.refresh_status()

    @on(messages.TripBreaker)
    def trip_breaker(self, event: messages.TripBreaker) -> None:
        from tui.screens.dialogs import Confirm

        name = event.backend

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.workbench.trip_breaker(name)
                snap = next((s for s in self.workbench.snapshots() if s.name == name), None)
            except KeyError as exc:
                self.notify(str(exc).strip("'"), severity="error")
                return
            except DB_ERRORS as exc:
                self.notify(
                    f"tripping the breaker of {name} failed: {describe_db_error(exc)}. Press t to try again.",
                    severity="error",
                )
                return
            wait = snap.seconds_to_half_open if snap is not None else None
            when = f"in {duration(wait)}" if wait is not None else "after its reset timeout"
            self.notify(
                f"breaker of {name} tripped (open): requests skip it; it lets one probe through (half-open) "
                f"{when}, or press r to reset it now"
            )
            self.broadcast(messages.SnapshotsChanged)
            self.refresh_status()

        self.push_screen(
            Confirm(
                f"Trip the breaker of {name}? Requests skip it until it half-opens after its "
                "reset timeout, or until you reset it (r).",
                yes="Trip",
            ),
            done,
        )

    def action_toggle_cloud(self) -> None:
        """Off at once; on only after a yes: prompts then leave the machine for the cloud backends."""
        from tui.screens.dialogs import Confirm

        try:
            on = self.workbench.router.cloud_routing
        except DB_ERRORS as exc:
            self.notify(f"reading the cloud switch failed: {describe_db_error(exc)}", severity="error")
            return
        if on:
            self.set_cloud_routing(False)
            return
        names = ", ".join(b.name for b in self.workbench.store.list_backends()) or "none added yet"
        question = (
            f"Turn cloud routing on? Requests that rules send to a cloud backend ({names}) will then "
            "leave this machine, for every process on this database."
        )

        def done(yes: bool | None) -> None:
            if yes:
                self.set_cloud_routing(True)

        self.push_screen(Confirm(question, yes="Turn on"), done)

    @work(group="cloud-switch", exit_on_error=False)
    async def set_cloud_routing(self, on: bool) -> None:
        try:
            await self.db.run(lambda store: store.set_cloud_routing(on))
            self.workbench.sync()  # publishes CloudRoutingChanged here at once
        except DB_ERRORS as exc:
            self.notify(
                f"turning cloud routing {'on' if on else 'off'} failed: {describe_db_error(exc)}. "
                "Press f9 to try again.",
                severity="error",
                timeout=12,
            )
            return
        self.notify(
            "cloud routing on: rules may send requests to cloud backends"
            if on
            else "cloud routing off: every request stays on this machine"
        )
        self.refresh_status()

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

    # ------------------------------------------------------------ the palette

    def palette_commands(self) -> Iterator[tuple[str, Callable[[], Any], str]]:
        """Built from the state right now: what can be done, not what cannot."""
        wb = self.workbench
        for pane, title in PANES:
            yield f"Go to {title}", partial(self.action_show_pane, pane), f"switch to the {title} pane"
        yield "Help: every key", self.action_help, "?"
        yield "New chat", partial(self.command, "chat", ChatPane, messages.NewChat()), "start an empty conversation"
        yield "Open chat", partial(self.command, "chat", ChatPane, messages.OpenChat()), "a saved conversation"
        yield "Add rule", partial(self.command, "rules", RulesPane, messages.AddRule()), "open the rule form"
        yield (
            "Try a model name",
            partial(self.command, "rules", RulesPane, messages.FocusExplain()),
            "which rule wins, and the chain",
        )
        yield (
            "Add backend",
            partial(self.command, "rules", RulesPane, messages.AddBackend()),
            "an OpenAI, Anthropic or OpenAI-compatible service",
        )
        try:
            cloud = wb.router.cloud_routing
        except DB_ERRORS:
            cloud = None
        if cloud is not None:
            yield (
                ("Turn cloud routing off" if cloud else "Turn cloud routing on (asks first)"),
                self.action_toggle_cloud,
                "f9: whether rules may send requests to cloud backends",
            )
        listener = "Stop the listener" if self.listener_running else "Start the listener"
        yield listener, self.action_toggle_listener, f"{self.config.listener_host}:{self.config.listener_port}"
        loaded = {m.id for m in wb.local.memory().loaded}
        for info in wb.local.models():
            names = ", ".join(info.aliases)
            label = f"{info.id} ({names})" if names else info.id
            if info.id in loaded:
                yield (
                    f"Unload model {label}",
                    partial(self.command, "models", ModelsPane, messages.UnloadModel(info.id)),
                    "free its memory",
                )
            else:
                yield (
                    f"Load model {label}",
                    partial(self.command, "models", ModelsPane, messages.LoadModel(info.id)),
                    "load into memory",
                )
        try:
            snaps = wb.snapshots()
        except DB_ERRORS:
            snaps = []
        for snap in snaps:
            if snap.kind == "local":
                continue
            yield (
                f"Set key for {snap.name}",
                partial(self.command, "rules", RulesPane, messages.SetKey(snap.name)),
                "stored in the system keyring",
            )
            if snap.state in ("open", "half-open"):
                yield (
                    f"Reset breaker {snap.name}",
                    partial(self.post_message, messages.ResetBreaker(snap.name)),
                    snap.state,
                )
            else:
                yield (
                    f"Trip breaker {snap.name}",
                    partial(self.post_message, messages.TripBreaker(snap.name)),
                    "stop sending it requests for a while",
                )

    async def on_unmount(self) -> None:
        if self.listener_running:
            await self.listener.stop()
        await self.db.aclose()
        if self._own_workbench:
            await self.workbench.aclose()


def open_log_file(data_dir: Path) -> Path:
    """<data dir>/workbench.log, private like the database (0600), whatever the umask."""
    log_file = data_dir / "workbench.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(log_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    os.chmod(log_file, 0o600)
    return log_file


def run_app(config_path: str | None = None) -> int:
    import sys

    from router.config import ConfigError, load_config
    from router.store import StoreError

    try:
        config = load_config(config_path)
        log_file = open_log_file(config.engine.data_dir)
        app = WorkbenchApp(config)
    except (ConfigError, StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Nothing may print over the TUI: logs (ours, uvicorn's, httpx's) go to a file.
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app.run()
    # Textual sets 1 when the app ended on an unhandled error; an ordinary quit leaves 0.
    return app.return_code or 0
