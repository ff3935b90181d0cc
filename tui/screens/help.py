"""`?`: every key of the workbench, grouped by the pane or dialog where it works."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.screens.dialogs import Dialog


class HelpScreen(Dialog):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close the help", id="help-close")]

    DEFAULT_CSS = """
    HelpScreen > .dialog { width: 76; }
    HelpScreen .help-group { height: auto; padding: 0 0 1 0; }
    """

    def __init__(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help-body"):
            yield Static("Keys (esc closes; ↑/↓ scroll)", classes="dialog-title")
            for title, rows in self.groups:
                table = Table(
                    title=title,
                    title_justify="left",
                    title_style="bold",
                    show_header=False,
                    box=None,
                    padding=(0, 1),
                    expand=True,
                )
                table.add_column("keys", style="bold", no_wrap=True, ratio=1)
                table.add_column("what", ratio=3)
                for keys, what in rows:
                    table.add_row(keys, what)
                yield Static(table, classes="help-group")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()
