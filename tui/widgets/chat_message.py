"""One message of a conversation: who said it, the Markdown body, and for answers the line saying
which backend answered, how fast, or why it did not."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static

# Model output may hold C0 control characters (random or confused models do): they must not reach
# the terminal as escape sequences.
_CONTROLS = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


class ChatMessage(Vertical):
    DEFAULT_CSS = """
    ChatMessage { height: auto; margin: 0 0 1 0; }
    ChatMessage .role { text-style: bold; }
    ChatMessage.user .role { color: $accent; }
    ChatMessage.assistant .role { color: $success; }
    ChatMessage.-error .role, ChatMessage.-error .meta { color: $error; }
    ChatMessage Markdown { margin: 0; padding: 0; }
    ChatMessage .meta { color: $text-muted; height: auto; }
    """

    def __init__(self, role: str, text: str = "", meta: str = "", *, error: bool = False) -> None:
        super().__init__(classes=f"message {role}" + (" -error" if error else ""))
        self.role = role
        self.text = text
        self._meta = meta

    def compose(self) -> ComposeResult:
        yield Label("You" if self.role == "user" else "Assistant", classes="role")
        yield Markdown(printable(self.text))
        yield Static(self._meta, classes="meta", markup=False)

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    @property
    def meta(self) -> str:
        return self._meta

    def set_meta(self, text: str, *, error: bool = False) -> None:
        self._meta = text
        self.set_class(error, "-error")
        self.query_one(".meta", Static).update(text)
