"""The saved conversations: date, title, message count and model; filter as you type, rename,
delete (after asking). The list is read through the TUI's database thread."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from router.store import Conversation
from tui.db import DB_ERRORS, TuiDatabase, describe_db_error
from tui.screens.dialogs import Confirm, Dialog, TextPrompt

LIST_LIMIT = 500


def conversation_row(c: Conversation, width_hint: int = 40) -> Text:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated_at or c.created_at or 0))
    n = len(c.messages)
    row = Text(when, style="dim")
    row.append("  ")
    row.append(c.title or "(untitled)", style="bold")
    row.append(f"  {n} message{'s' if n != 1 else ''}", style="dim")
    if c.model:
        row.append(f" · {c.model}", style="dim")
    return row


def matches(c: Conversation, needle: str) -> bool:
    needle = needle.casefold()
    return not needle or needle in (c.title or "").casefold() or needle in (c.model or "").casefold()


class ConversationPicker(Dialog):
    HELP_TITLE = "Saved conversations (ctrl+o in Chat)"
    HELP_ROWS = [("type", "filter by title or model"), ("enter", "open the chosen one")]
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="conversations-close"),
        Binding("ctrl+r", "rename", "Rename", id="conversations-rename"),
        Binding("f8,delete", "delete", "Delete", id="conversations-delete", key_display="f8"),
        Binding("down", "move(1)", "Next", id="conversations-next", show=False),
        Binding("up", "move(-1)", "Previous", id="conversations-previous", show=False),
    ]

    DEFAULT_CSS = """
    ConversationPicker > .dialog { width: 100; }
    ConversationPicker #list { height: auto; max-height: 16; }
    ConversationPicker .hint { color: $text-muted; height: auto; }
    """

    def __init__(self, db: TuiDatabase, current: int | None = None) -> None:
        super().__init__()
        self.db = db
        self.current = current
        self.conversations: list[Conversation] = []
        self.deleted: set[int] = set()
        self.loaded = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Open a conversation", classes="dialog-title")
            yield Input(placeholder="filter: type part of a title or model", id="filter")
            yield OptionList(id="list")
            yield Static("Loading…", id="picker-hint", classes="hint")
            yield Static("enter opens · ctrl+r renames · f8 deletes (asks first) · esc closes", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#filter", Input).focus()
        self.load()

    @work(exclusive=True, group="conversations", exit_on_error=False)
    async def load(self) -> None:
        try:
            self.conversations = await self.db.run(lambda store: store.list_conversations(limit=LIST_LIMIT))
        except DB_ERRORS as exc:
            self.query_one("#picker-hint", Static).update(
                f"could not read the conversations: {describe_db_error(exc)}. Press ctrl+o again to retry."
            )
            return
        self.loaded = True
        self.show_list()

    def shown(self) -> list[Conversation]:
        needle = self.query_one("#filter", Input).value.strip()
        return [c for c in self.conversations if matches(c, needle)]

    @on(Input.Changed, "#filter")
    def show_list(self) -> None:
        box = self.query_one("#list", OptionList)
        keep = box.highlighted_option.id if box.highlighted_option else None
        shown = self.shown()
        box.clear_options()
        box.add_options([Option(conversation_row(c), id=str(c.id)) for c in shown])
        ids = [str(c.id) for c in shown]
        if shown:
            box.highlighted = ids.index(keep) if keep in ids else 0
        hint = self.query_one("#picker-hint", Static)
        if not self.conversations:
            hint.update("No saved conversations yet: every chat is saved as you go.")
        elif not shown:
            hint.update("Nothing matches the filter.")
        else:
            hint.update(f"{len(shown)} of {len(self.conversations)}")

    def highlighted(self) -> Conversation | None:
        box = self.query_one("#list", OptionList)
        option = box.highlighted_option
        if option is None:
            return None
        return next((c for c in self.conversations if str(c.id) == option.id), None)

    def action_move(self, delta: int) -> None:
        box = self.query_one("#list", OptionList)
        if box.option_count:
            box.highlighted = max(0, min(box.option_count - 1, (box.highlighted or 0) + delta))

    @on(Input.Submitted, "#filter")
    def submitted(self) -> None:
        conv = self.highlighted()
        if conv is not None:
            self.dismiss(conv.id)

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_rename(self) -> None:
        conv = self.highlighted()
        if conv is None:
            return

        async def save(title: str) -> Any:
            conv.title = title
            return await self.db.run(lambda store: store.save_conversation(conv))

        def done(result: Any) -> None:
            if result is not None:
                self.show_list()

        self.app.push_screen(TextPrompt("Rename the conversation", conv.title, save), done)

    def action_delete(self) -> None:
        conv = self.highlighted()
        if conv is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.delete(conv)

        n = len(conv.messages)
        self.app.push_screen(
            Confirm(
                f"Delete the conversation {conv.title!r} ({n} message{'s' if n != 1 else ''})? This cannot be undone.",
                yes="Delete",
            ),
            confirmed,
        )

    @work(group="conversations-delete", exit_on_error=False)
    async def delete(self, conv: Conversation) -> None:
        if conv.id is None:
            return
        conv_id = conv.id
        try:
            await self.db.run(lambda store: store.delete_conversation(conv_id))
        except DB_ERRORS as exc:
            self.notify(
                f"deleting the conversation failed: {describe_db_error(exc)}. Press f8 to try again.",
                severity="error",
                timeout=12,
            )
            return
        self.deleted.add(conv_id)
        self.conversations = [c for c in self.conversations if c.id != conv.id]
        self.show_list()
        self.notify(f"deleted {conv.title!r}")
