"""What every pane shares: the workbench and the TUI's database, a status line, database errors
turned into notifications."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.containers import Vertical
from textual.widgets import Static

from tui.db import TuiDatabase, describe_db_error


class Hint(Static):
    """One line that says what to do first when a pane has nothing to show."""

    DEFAULT_CSS = """
    Hint { color: $text-muted; height: auto; padding: 0 0 1 0; }
    """


class PaneStatus(Static):
    DEFAULT_CSS = """
    PaneStatus { height: auto; color: $text-muted; }
    PaneStatus.-error { color: $error; }
    """


class Pane(Vertical):
    """A pane of the workbench. Subclasses set HELP_TITLE (the group in the help screen)."""

    HELP_TITLE: ClassVar[str] = ""
    HELP_ROWS: ClassVar[list[tuple[str, str]]] = []

    DEFAULT_CSS = """
    Pane { height: 1fr; }
    """

    def __init__(self, workbench: Any, db: TuiDatabase, **kw: Any) -> None:
        super().__init__(**kw)
        self.wb = workbench
        self.db = db

    def on_resize(self) -> None:
        fit_inputs(self)

    def say(self, text: str, error: bool = False) -> None:
        """The pane's status line."""
        for widget in self.query(PaneStatus):
            widget.update(text)
            widget.set_class(error, "-error")
            return

    def said(self) -> str:
        for widget in self.query(PaneStatus):
            return str(widget.render())
        return ""

    def db_failed(self, what: str, exc: BaseException, again: str = "") -> None:
        """A database error as a notification: what failed, why, and how to try again."""
        text = f"{what} failed: {describe_db_error(exc)}"
        if again:
            text += f". {again}"
        self.notify(text, severity="error", timeout=12)
        self.say(text, error=True)


# Below this many rows, one-line (compact) inputs leave room for the tables and the conversation.
SHORT_SCREEN = 30


def fit_inputs(pane: Pane) -> None:
    """Inputs marked `tight` go one line high on a short screen (their focus shows as a bar)."""
    short = pane.app.size.height < SHORT_SCREEN
    for widget in pane.query("Input.tight"):
        widget.set_class(short, "-short")
