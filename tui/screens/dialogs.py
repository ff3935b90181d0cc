"""Dialogs: rule form, backend form, key entry, confirmation, a one-line text prompt.

A form that writes (rule, backend, key, rename) does the write itself, through a `save` callable it
is given: when the database or the keyring refuses, the form stays open with everything typed and
says what failed; pressing Save again retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, Switch

from engine.cloud import KINDS, default_base_url
from router.rules import Rule, RuleError, Step, validate_rule
from router.secrets import KeyringUnavailableError
from tui.db import DB_ERRORS, describe_db_error

# What a save may raise and the form reports in its own words.
SAVE_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, KeyringUnavailableError, ValueError, KeyError)


class Dialog(ModalScreen[Any]):
    """A centred box that scrolls when the terminal is short."""

    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > .dialog {
        width: 72; max-width: 95%; height: auto; max-height: 95%;
        scrollbar-size-vertical: 1; border: thick $accent; background: $surface; padding: 1 2;
    }
    Dialog .dialog-title { text-style: bold; padding: 0 0 1 0; }
    Dialog .dialog-buttons { height: auto; padding: 1 0 0 0; }
    Dialog .dialog-buttons Button { margin: 0 1 0 0; }
    Dialog Label { width: 100%; }
    Dialog .form-row { height: auto; }
    Dialog .form-row Label { width: auto; padding: 1 1 0 0; }
    Dialog .form-error { color: $error; height: auto; }
    Dialog .short { width: 10; }
    """

    def on_mount(self) -> None:
        # Focusing the first field scrolls a tall form to centre it: start at the top instead,
        # where the title and what is wrong are.
        for box in self.query(".dialog"):
            self.call_after_refresh(box.scroll_home, animate=False)


class Confirm(Dialog):
    BINDINGS = [
        Binding("escape,n", "dismiss(False)", "No", id="confirm-no"),
        Binding("y", "dismiss(True)", "Yes", id="confirm-yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static(self.question, classes="dialog-title", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("No (esc)", id="no")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class SavingDialog(Dialog):
    """A dialog whose Save runs `save(value)`; errors keep it open."""

    def __init__(self, save: Callable[[Any], Awaitable[Any]] | None = None) -> None:
        super().__init__()
        self._save = save

    def show_error(self, text: str) -> None:
        self.query_one("#form-error", Static).update(text)

    @work(exclusive=True, group="dialog-save", exit_on_error=False)
    async def commit(self, value: Any) -> None:
        save = self.query_one("#save", Button)
        save.disabled = True
        try:
            result = await self._save(value) if self._save is not None else value
        except SAVE_ERRORS as exc:
            self.show_error(f"could not save: {describe_db_error(exc)}. Press Save (ctrl+s) to try again.")
            save.disabled = False
            return
        self.dismiss(result if result is not None else value)


def check_local_model(what: str, model: str | None, local_names: Collection[str] | None) -> None:
    if not model or local_names is None or model in local_names or "/" in model:
        return
    known = ", ".join(sorted(local_names)) or "none yet: fetch the demo model in Models (F2)"
    raise RuleError(f"{what}: no local model named {model!r} (known: {known})")


class RuleForm(SavingDialog):
    """Add or edit a rule; checked as you type (the field at fault is marked), Save disabled while
    something is wrong."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog-cancel"),
        Binding("ctrl+s", "save", "Save", id="dialog-save"),
    ]

    def __init__(
        self,
        backends: list[str],
        rule: Rule | None = None,
        *,
        local_names: Collection[str] | None = None,
        save: Callable[[Rule], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(save)
        self.backends = backends
        self.rule = rule
        self.local_names = local_names

    def compose(self) -> ComposeResult:
        r = self.rule
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Edit rule" if r else "Add rule", classes="dialog-title")
            # First, not last: on a short screen the form scrolls, and what is wrong must show.
            yield Static("", id="form-error", classes="form-error")
            yield Label("Pattern (exact name, glob like gpt-*, or re:<regex>)")
            yield Input(r.pattern if r else "", id="pattern", placeholder="gpt-*")
            yield Label("Backend")
            backend = r.backend if r and r.backend in self.backends else self.backends[0]
            yield Select([(b, b) for b in self.backends], value=backend, allow_blank=False, id="backend")
            yield Label("Target model (empty: the requested name)")
            yield Input((r.model or "") if r else "", id="model")
            yield Label("Fallbacks, in order: backend or backend:model, comma-separated")
            yield Input(
                ", ".join(map(str, r.fallbacks)) if r else "",
                id="fallbacks",
                placeholder="anthropic:claude-x, local:demo",
            )
            with Horizontal(classes="form-row"):
                yield Label("Priority")
                yield Input(str(r.priority) if r else "0", id="priority", classes="short")
                yield Label("Enabled")
                yield Switch(r.enabled if r else True, id="enabled")
            yield Label("Note")
            yield Input(r.note if r else "", id="note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.validate()

    def _val(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def build(self) -> Rule:
        """The rule as typed; RuleError names the field at fault (and marks it)."""
        for wid in ("pattern", "model", "fallbacks", "priority"):
            self.query_one(f"#{wid}", Input).remove_class("-invalid")

        def fail(wid: str, message: str) -> RuleError:
            if wid in ("pattern", "model", "fallbacks", "priority"):
                self.query_one(f"#{wid}", Input).add_class("-invalid")
            return RuleError(message)

        try:
            priority = int(self._val("priority") or "0")
        except ValueError:
            raise fail("priority", "priority: must be a whole number") from None
        try:
            fallbacks = [Step.parse(f) for f in self._val("fallbacks").split(",") if f.strip()]
        except RuleError as exc:
            raise fail("fallbacks", f"fallbacks: {exc}") from None
        for step in fallbacks:
            if step.backend not in self.backends:
                raise fail(
                    "fallbacks",
                    f"fallbacks: unknown backend {step.backend!r} (known: {', '.join(sorted(self.backends))})",
                )
            if step.backend == "local":
                try:
                    check_local_model("fallbacks", step.model, self.local_names)
                except RuleError as exc:
                    raise fail("fallbacks", str(exc)) from None
        r = self.rule
        rule = Rule(
            pattern=self._val("pattern"),
            backend=str(self.query_one("#backend", Select).value),
            model=self._val("model") or None,
            fallbacks=fallbacks,
            priority=priority,
            enabled=self.query_one("#enabled", Switch).value,
            note=self._val("note"),
            id=r.id if r else None,
            created_at=r.created_at if r else None,
        )
        if rule.backend == "local":
            try:
                check_local_model("target model", rule.model, self.local_names)
            except RuleError as exc:
                raise fail("model", str(exc)) from None
        try:
            validate_rule(rule, self.backends)
        except RuleError as exc:
            raise fail(str(exc).split(":", 1)[0], str(exc)) from None
        return rule

    def validate(self) -> Rule | None:
        try:
            rule = self.build()
        except RuleError as exc:
            self.show_error(str(exc))
            self.query_one("#save", Button).disabled = True
            return None
        self.show_error("")
        self.query_one("#save", Button).disabled = False
        return rule

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def changed(self) -> None:
        self.validate()

    def action_save(self) -> None:
        rule = self.validate()
        if rule is not None:
            self.commit(rule)

    @on(Button.Pressed, "#save")
    def save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)


class BackendForm(SavingDialog):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="dialog-cancel"),
        Binding("ctrl+s", "save", "Save", id="dialog-save"),
    ]

    def __init__(self, save: Callable[[dict[str, Any]], Awaitable[Any]] | None = None, note: str = "") -> None:
        super().__init__(save)
        self.note = note

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Add backend", classes="dialog-title")
            yield Static("", id="form-error", classes="form-error")
            if self.note:
                yield Static(self.note, classes="hint", markup=False)
            yield Label("Name")
            yield Input(id="name", placeholder="openai")
            yield Label("Kind")
            yield Select([(k, k) for k in KINDS], value="openai", allow_blank=False, id="kind")
            yield Label("Base URL (empty: the service's own)")
            yield Input(id="base_url")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def values(self) -> dict[str, Any]:
        kind = str(self.query_one("#kind", Select).value)
        return {
            "name": self.query_one("#name", Input).value.strip(),
            "kind": kind,
            "base_url": self.query_one("#base_url", Input).value.strip() or default_base_url(kind) or "",
        }

    def check(self) -> str | None:
        v = self.values()
        if not v["name"]:
            return "name: must not be empty"
        if v["name"] == "local":
            return "name: 'local' is the built-in MLX engine"
        if not v["base_url"]:
            return f"base URL: required for {v['kind']} (e.g. http://127.0.0.1:11434/v1 for Ollama)"
        if not v["base_url"].startswith(("http://", "https://")):
            return "base URL: must start with http:// or https://"
        return None

    @on(Input.Changed)
    @on(Select.Changed)
    def changed(self) -> None:
        kind = str(self.query_one("#kind", Select).value)
        self.query_one("#base_url", Input).placeholder = default_base_url(kind) or ""
        problem = self.check()
        self.show_error(problem or "")
        self.query_one("#save", Button).disabled = problem is not None

    def on_mount(self) -> None:
        self.changed()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.check() is None:
            self.commit(self.values())

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class KeyForm(SavingDialog):
    """A masked input; the key goes to the keyring and is never displayed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog-cancel")]

    def __init__(self, backend: str, save: Callable[[str], Awaitable[Any]] | None = None) -> None:
        super().__init__(save)
        self.backend = backend

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static(f"API key for {self.backend}", classes="dialog-title", markup=False)
            yield Input(password=True, id="key", placeholder="paste the key; it goes to the system keyring")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Store", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def save(self) -> None:
        key = self.query_one("#key", Input).value.strip()
        if not key:
            self.show_error("the key is empty")
            return
        self.commit(key)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class TextPrompt(SavingDialog):
    """One line of text (a conversation's new title)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog-cancel")]

    def __init__(self, title: str, value: str = "", save: Callable[[str], Awaitable[Any]] | None = None) -> None:
        super().__init__(save)
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Input(self.value, id="text")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (enter)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def save(self) -> None:
        text = self.query_one("#text", Input).value.strip()
        if not text:
            self.show_error("must not be empty")
            return
        self.commit(text)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
