"""Every key binding of the workbench, grouped by where it works. The help screen shows these
groups (with the keymap applied) and the `[keymap]` config section is checked against their ids."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from textual.binding import Binding


def binding_groups() -> list[tuple[str, list[Binding], list[tuple[str, str]]]]:
    """(title, bindings, extra rows of (keys, what)) for each place keys work."""
    from tui.app import WorkbenchApp
    from tui.panes.chat import ChatPane
    from tui.panes.health import HealthPane
    from tui.panes.models import ModelsPane
    from tui.panes.requests import RequestsPane
    from tui.panes.rules import RulesPane
    from tui.screens.conversations import ConversationPicker
    from tui.screens.dialogs import Confirm, RuleForm
    from tui.screens.help import HelpScreen
    from tui.widgets.backend_card import BackendCard
    from tui.widgets.prompt import PromptArea

    def own(cls: Any) -> list[Binding]:
        return [b for b in cls.BINDINGS if isinstance(b, Binding)]

    return [
        (
            "Everywhere",
            own(WorkbenchApp),
            [("ctrl+p", "command palette: every action by name"), ("tab / shift+tab", "next / previous field")],
        ),
        (
            "Chat",
            own(ChatPane) + own(PromptArea),
            [*PromptArea.HELP_ROWS, ("→ / end", "in the model field: take the suggested name")],
        ),
        ("Models", own(ModelsPane), []),
        ("Rules", own(RulesPane), []),
        ("Health (on a backend card)", own(HealthPane) + own(BackendCard), []),
        ("Requests", own(RequestsPane), RequestsPane.HELP_ROWS),
        (ConversationPicker.HELP_TITLE, own(ConversationPicker), ConversationPicker.HELP_ROWS),
        ("Dialogs", own(RuleForm) + own(Confirm) + own(HelpScreen), []),
    ]


def binding_ids() -> set[str]:
    return {b.id for _, bindings, _ in binding_groups() for b in bindings if b.id}


NAMES = {
    "question_mark": "?",
    "slash": "/",
    "plus": "+",
    "minus": "-",
    "equals_sign": "=",
    "escape": "esc",
    "pageup": "pgup",
    "pagedown": "pgdn",
}


def show_key(binding: Binding) -> str:
    """A key as a person types it: "ctrl+b", "?", "f10" (Textual's footer writes ^b)."""
    return "+".join(NAMES.get(part, part) for part in binding.key.split("+"))


def help_rows(
    keymap: dict[str, str],
    display: Callable[[Binding], str] = show_key,
) -> list[tuple[str, list[tuple[str, str]]]]:
    """The groups as (keys, what) rows, keys as the keymap has made them."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for title, bindings, extra in binding_groups():
        rows: list[tuple[str, str]] = []
        seen: set[str] = set()
        for b in bindings:
            if not b.description or (b.id and b.id in seen):
                continue
            if b.id:
                seen.add(b.id)
            rows.append((keys_of(b, keymap, display), b.description))
        out.append((title, rows + list(extra)))
    return out


def keys_of(binding: Binding, keymap: dict[str, str], display: Callable[[Binding], str]) -> str:
    keys = keymap.get(binding.id, "") if binding.id else ""
    if keys:
        return " / ".join(display(binding.with_key(k.strip(), key_display=None)) for k in keys.split(","))
    return " / ".join(display(binding.with_key(k.strip(), key_display=None)) for k in binding.key.split(","))


def check_keymap(raw: Any, known: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """The usable part of a [keymap] table, and one line per entry that was left out."""
    if not raw:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f'keymap: expected a table of binding id = "keys", not {type(raw).__name__}']
    known = set(known)
    good: dict[str, str] = {}
    problems: list[str] = []
    for name, keys in raw.items():
        if name not in known:
            problems.append(f"keymap: no binding with id {name!r} (? lists them in docs/tui.md)")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f'keymap: {name} must be a key string such as "ctrl+b"')
        else:
            good[name] = keys.replace(" ", "")
    return good, problems
