"""Typed messages between the app, its panes, cards and dialogs (Harlequin's pattern).

Up: a pane, card or dialog asks for something it does not own (switch panes, trip a breaker); the
message bubbles to the app, whose `@on` handler does it. Down: the app turns router events into
messages and posts them to each pane (they do not bubble: every pane gets its own copy), and posts
commands (from the palette or app-wide keys) to the one pane that carries them out. The app never
calls a pane's methods and a card never calls the app's.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

# ------------------------------------------------------------------ up: asked of the app


class ShowPane(Message):
    def __init__(self, pane: str) -> None:
        super().__init__()
        self.pane = pane


class ResetBreaker(Message):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend


class TripBreaker(Message):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend


class StatusChanged(Message):
    """Something the status bar shows (loaded models, memory, breakers) may have changed."""


class ConfigWritten(Message):
    """This process changed rules, backends, keys or the list of local models: every pane should
    reread them."""


# ------------------------------------------------------------------ down: what happened


class RouterEvent(Message, bubble=False):
    """Base of the router events as seen by a pane."""


class SnapshotsChanged(RouterEvent):
    """What a backend's card shows may have changed: a breaker moved, a request started, went on
    or ended (running and queued counts, request counts, latencies). Sent often while answers
    stream: what depends on breaker states alone checks `breakers_moved`."""

    def __init__(self, breakers_moved: bool = True) -> None:
        super().__init__()
        self.breakers_moved = breakers_moved


class ConfigChanged(RouterEvent):
    """Rules, backends, keys (in this process or another one on the same database) or the list of
    local models changed."""


class ModelsChanged(RouterEvent):
    """Loaded models or memory may have changed (a load, an unload, a request on the local engine)."""


class RequestLogged(RouterEvent):
    def __init__(self, record: Any) -> None:
        super().__init__()
        self.record = record


class WriteFailed(RouterEvent):
    """The store's writer gave up on a write (the request log, usually): said in the Health pane."""

    def __init__(self, what: str, error: str, at: float) -> None:
        super().__init__()
        self.what = what
        self.error = error
        self.at = at


class RequestStatus(RouterEvent):
    """What a request waits on now, in words ("loading demo 45 %", "openai: retry 2/3")."""

    def __init__(self, request_id: str, backend: str | None, text: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.backend = backend
        self.text = text


# ------------------------------------------------------------------ down: commands for one pane


class Command(Message, bubble=False):
    """Base of the commands the app posts to the pane that carries them out."""


class NewChat(Command):
    pass


class OpenChat(Command):
    pass


class AddRule(Command):
    pass


class AddBackend(Command):
    pass


class FocusExplain(Command):
    pass


class SetKey(Command):
    def __init__(self, backend: str | None = None) -> None:
        super().__init__()
        self.backend = backend


class LoadModel(Command):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model


class UnloadModel(Command):
    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
