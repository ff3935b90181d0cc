"""Modal screens: rule form, backend form, key entry, confirmation, conversation picker."""

from __future__ import annotations

from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static, Switch
from textual.widgets.option_list import Option

from engine.cloud import default_base_url
from router.rules import Rule, RuleError, Step, validate_rule


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel", id="confirm.cancel"),
                Binding("y", "dismiss(True)", "Yes", id="confirm.yes")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static(self.question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (esc)", id="no")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class RuleForm(ModalScreen[Rule | None]):
    """Add or edit a rule; validated as you type, Save disabled while invalid."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="rule_form.cancel"),
                Binding("ctrl+s", "save", "Save", id="rule_form.save")]

    def __init__(self, backends: list[str], rule: Rule | None = None) -> None:
        super().__init__()
        self.backends = backends
        self.rule = rule

    def compose(self) -> ComposeResult:
        r = self.rule
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Edit rule" if r else "Add rule", classes="dialog-title")
            yield Label("Pattern (exact name, glob like gpt-*, or re:<regex>)")
            yield Input(r.pattern if r else "", id="pattern", placeholder="gpt-*")
            yield Label("Backend")
            yield Select([(b, b) for b in self.backends], value=r.backend if r else self.backends[0],
                         allow_blank=False, id="backend")
            yield Label("Target model (empty: the requested name)")
            yield Input((r.model or "") if r else "", id="model")
            yield Label("Fallbacks, in order: backend or backend:model, comma-separated")
            yield Input(", ".join(map(str, r.fallbacks)) if r else "", id="fallbacks", placeholder="anthropic:claude-x, local:demo")
            with Horizontal(classes="form-row"):
                yield Label("Priority")
                yield Input(str(r.priority) if r else "0", id="priority", classes="short")
                yield Label("Enabled")
                yield Switch(r.enabled if r else True, id="enabled")
            yield Label("Note")
            yield Input(r.note if r else "", id="note")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.validate()

    def build(self) -> Rule:
        val = lambda wid: self.query_one(f"#{wid}", Input).value.strip()  # noqa: E731
        try:
            priority = int(val("priority") or "0")
        except ValueError:
            raise RuleError("priority: must be a whole number") from None
        fallbacks = [Step.parse(f) for f in val("fallbacks").split(",") if f.strip()]
        r = self.rule
        rule = Rule(pattern=val("pattern"), backend=str(self.query_one("#backend", Select).value),
                    model=val("model") or None, fallbacks=fallbacks, priority=priority,
                    enabled=self.query_one("#enabled", Switch).value, note=val("note"),
                    id=r.id if r else None, created_at=r.created_at if r else None)
        validate_rule(rule, self.backends)
        return rule

    def validate(self) -> Rule | None:
        error = self.query_one("#form-error", Static)
        try:
            rule = self.build()
        except RuleError as exc:
            error.update(str(exc))
            self.query_one("#save", Button).disabled = True
            return None
        error.update("")
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
            self.dismiss(rule)

    @on(Button.Pressed, "#save")
    def save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)


class BackendForm(ModalScreen[dict[str, Any] | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="backend_form.cancel"),
                Binding("ctrl+s", "save", "Save", id="backend_form.save")]
    KINDS = ("openai", "anthropic", "openai-compatible")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Add backend", classes="dialog-title")
            yield Label("Name")
            yield Input(id="name", placeholder="openai")
            yield Label("Kind")
            yield Select([(k, k) for k in self.KINDS], value="openai", allow_blank=False, id="kind")
            yield Label("Base URL (empty: the service's own)")
            yield Input(id="base_url")
            yield Static("", id="form-error", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def values(self) -> dict[str, Any]:
        kind = str(self.query_one("#kind", Select).value)
        return {"name": self.query_one("#name", Input).value.strip(), "kind": kind,
                "base_url": self.query_one("#base_url", Input).value.strip() or default_base_url(kind) or ""}

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
        self.query_one("#base_url", Input).placeholder = default_base_url(str(self.query_one("#kind", Select).value)) or ""
        problem = self.check()
        self.query_one("#form-error", Static).update(problem or "")
        self.query_one("#save", Button).disabled = problem is not None

    def on_mount(self) -> None:
        self.changed()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.check() is None:
            self.dismiss(self.values())

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class KeyForm(ModalScreen[str | None]):
    """A masked input; the key goes to keyring and is never displayed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="key_form.cancel")]

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static(f"API key for {self.backend}", classes="dialog-title")
            yield Input(password=True, id="key", placeholder="paste the key; it is stored in the system keyring")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Store", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def save(self) -> None:
        key = self.query_one("#key", Input).value.strip()
        self.dismiss(key or None)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)


class ConversationPicker(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="conversations.cancel")]

    def __init__(self, conversations: list[Any], describe: Callable[[Any], str]) -> None:
        super().__init__()
        self.conversations = conversations
        self.describe = describe

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", can_focus=False):
            yield Static("Open a conversation", classes="dialog-title")
            if self.conversations:
                yield OptionList(*[Option(self.describe(c), id=str(c.id)) for c in self.conversations], id="list")
            else:
                yield Static("No saved conversations yet.")
            yield Button("Cancel (esc)", id="cancel")

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
