"""Health: one card per backend, live from breaker and request events."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll

from tui import messages
from tui.db import DB_ERRORS
from tui.format import clock_time
from tui.panes.base import Hint, Pane, PaneStatus
from tui.widgets.backend_card import BackendCard

HINT = "Tab to a card: r resets its breaker, t trips it (asks first)."
EMPTY_HINT = "Only the local engine so far: add a cloud backend in Rules (F3, then b) to see its breaker here."


class HealthPane(Pane):
    HELP_TITLE = "Health"
    DEFAULT_CSS = """
    HealthPane #cards { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Hint(HINT, id="health-hint")
        with VerticalScroll(id="cards", can_focus=False):
            pass
        yield PaneStatus("", id="health-status")

    def on_mount(self) -> None:
        self.refresh_cards()

    @on(messages.WriteFailed)
    def write_failed(self, event: messages.WriteFailed) -> None:
        # The answer was delivered; what the database refused is said here (and in the log file).
        self.say(f"{clock_time(event.at)} could not {event.what}: {event.error}", error=True)

    @on(messages.SnapshotsChanged)
    @on(messages.ConfigChanged)
    def refresh_cards(self) -> None:
        try:
            snaps = self.wb.snapshots()
        except DB_ERRORS as exc:
            self.db_failed("reading the backends", exc)
            return
        names = {s.name for s in snaps}
        box = self.query_one("#cards", VerticalScroll)
        for card in list(box.query(BackendCard)):
            if card.snap.name not in names:
                card.remove()
        existing = {c.snap.name: c for c in box.query(BackendCard)}
        for s in snaps:
            if s.name in existing:
                existing[s.name].show(s)
            else:
                box.mount(BackendCard(s))
        only_local = all(s.kind == "local" for s in snaps)
        self.query_one("#health-hint", Hint).update(EMPTY_HINT if only_local else HINT)
