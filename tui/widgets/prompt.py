"""The chat prompt: a multi-line text area where Enter sends and earlier prompts are a key away."""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptArea(TextArea):
    """Enter sends; ctrl+j (or shift+enter where the terminal reports it) starts a new line; a paste
    keeps every line. Up on an empty prompt brings back earlier prompts, Down walks forward again."""

    DEFAULT_CSS = """
    PromptArea {
        height: auto;
        min-height: 3;
        max-height: 10;
        border: tall $border-blurred;
    }
    PromptArea:focus { border: heavy $accent; }
    """

    HELP_ROWS = [("up / down", "on an empty prompt: earlier / later prompts")]

    BINDINGS = [
        Binding("enter", "send", "Send", id="prompt-send", show=False),
        Binding(
            "ctrl+j,shift+enter,alt+enter", "newline", "New line", id="prompt-newline", show=False, key_display="ctrl+j"
        ),
    ]

    class Submitted(Message):
        def __init__(self, prompt: PromptArea, text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

        @property
        def control(self) -> PromptArea:
            return self.prompt

    class Paging(Message):
        """PgUp/PgDn: the prompt is a few lines high, so they page whatever is above it instead."""

        def __init__(self, direction: int) -> None:
            super().__init__()
            self.direction = direction

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            id=id,
            placeholder=placeholder,
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            highlight_cursor_line=False,
        )
        self.prompts: list[str] = []
        # Where Up/Down stand in the history, and the text they put there (an edit ends the walk).
        self._walk: int | None = None
        self._shown = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            # Not inserted (prevent_default keeps TextArea's own handler out): the key goes on to
            # the bindings, prompt-send or whatever the keymap made of Enter.
            event.prevent_default()
            return
        await super()._on_key(event)

    def action_send(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end)

    def remember(self, text: str) -> None:
        if text and (not self.prompts or self.prompts[-1] != text):
            self.prompts.append(text)
        self._walk = None

    def _walking(self) -> bool:
        return self.text == "" or (self._walk is not None and self.text == self._shown)

    def _show(self, index: int | None) -> None:
        self._walk = index
        self._shown = "" if index is None else self.prompts[index]
        self.load_text(self._shown)
        self.move_cursor(self.document.end)

    def action_cursor_page_up(self) -> None:
        self.post_message(self.Paging(-1))

    def action_cursor_page_down(self) -> None:
        self.post_message(self.Paging(1))

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.prompts and self._walking():
            index = len(self.prompts) - 1 if self._walk is None else max(0, self._walk - 1)
            self._show(index)
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if not select and self._walk is not None and self.text == self._shown:
            self._show(self._walk + 1 if self._walk + 1 < len(self.prompts) else None)
            return
        super().action_cursor_down(select)
