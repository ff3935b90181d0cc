"""Rules: the routing table in match order, a live explain box, backends and their keys."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Static

from router.rules import Rule, order, rules_using
from router.store import BackendRecord
from tui import messages
from tui.db import DB_ERRORS
from tui.explain import explanation_lines
from tui.panes.base import Hint, Pane, PaneStatus
from tui.widgets.fit import Column, FitTable

RULE_COLUMNS = [
    Column("ID", "id", 0),
    Column("Pattern", "pattern", 1),
    Column("Backend", "backend", 2),
    Column("Target", "target", 4),
    Column("Fallbacks", "fallbacks", 3),
    Column("Prio", "priority", 6),
    Column("On", "enabled", 4),
    Column("Note", "note", 7),
]
BACKEND_COLUMNS = [
    Column("Name", "name", 0),
    Column("Kind", "kind", 3),
    Column("Key", "key", 2),
    Column("Breaker", "breaker", 1),
    Column("Base URL", "url", 4),
]
EMPTY_HINT = (
    "No rules: every name goes to the default backend. Press a to add one "
    "(e.g. gpt-* to a cloud backend with local:demo as fallback)."
)


def rule_problems(rule: Rule, backends: set[str]) -> list[str]:
    """Backends a rule names that do not exist (a backend removed while the rule still uses it)."""
    return [b for b in [rule.backend, *(s.backend for s in rule.fallbacks)] if b not in backends]


class RulesPane(Pane):
    HELP_TITLE = "Rules"
    BINDINGS = [
        Binding("a", "add_rule", "Add rule", id="rules-add"),
        Binding("e", "edit_rule", "Edit", id="rules-edit"),
        Binding("d", "delete_rule", "Delete", id="rules-delete"),
        Binding("space", "toggle_rule", "On/off", id="rules-toggle", show=False),
        Binding("plus,=", "priority(1)", "Raise priority", id="rules-raise", key_display="+", show=False),
        Binding("minus", "priority(-1)", "Lower priority", id="rules-lower", key_display="-", show=False),
        Binding("slash", "try_name", "Try a name", id="rules-try", key_display="/"),
        Binding("b", "add_backend", "Add backend", id="backends-add"),
        Binding("k", "set_key", "Set key", id="backends-key"),
        Binding("x", "delete_backend", "Remove backend", id="backends-delete", show=False),
    ]

    DEFAULT_CSS = """
    RulesPane #rules-table { height: 1fr; min-height: 4; }
    RulesPane #backends-table { height: auto; max-height: 7; }
    RulesPane #explain { height: auto; min-height: 1; padding: 0 1; background: $boost; }
    RulesPane #explain-row { height: auto; }

    RulesPane .section { text-style: bold; color: $accent; }
    """

    def __init__(self, workbench: Any, db: Any, **kw: Any) -> None:
        super().__init__(workbench, db, **kw)
        self.rules: list[Rule] = []
        self.backends: list[BackendRecord] = []
        self.local_names: set[str] = set()
        self._keys: dict[str, str | None] = {}
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Label("Rules, in match order", classes="section")
        yield Hint("", id="rules-empty")
        yield FitTable(RULE_COLUMNS, id="rules-table")
        with Horizontal(id="explain-row"):
            yield Input(
                placeholder="/ try a model name: the winning rule and chain show below", id="try-model", classes="tight"
            )
        yield Static("", id="explain")
        yield Label("Backends (b adds, k sets a key, x removes)", classes="section")
        yield FitTable(BACKEND_COLUMNS, id="backends-table")
        yield PaneStatus("", id="rules-status")

    def on_mount(self) -> None:
        self.query_one("#rules-empty", Hint).display = False
        self.reload()

    # ------------------------------------------------------------ reading

    @work(exclusive=True, group="rules-read", exit_on_error=False)
    async def reload(self) -> None:
        """Rules and backends through the database thread, keys through the keyring (a thread too)."""
        try:
            rules, backends = await self.db.run(lambda s: (s.list_rules(), s.list_backends()))
        except DB_ERRORS as exc:
            self.db_failed("reading the rules", exc, "They are read again on the next change")
            return
        keys = await asyncio.to_thread(self.wb.secrets.status, [b.name for b in backends])
        infos = await asyncio.to_thread(self.wb.local.models)
        self.local_names = {n for i in infos for n in (i.id, *i.aliases)}
        self.rules, self.backends = order(rules), backends
        self.loaded = True
        self.show_rules()
        self.show_backends(keys)
        self.update_explain()

    @on(messages.ConfigChanged)
    def config_changed(self) -> None:
        self.reload()

    @on(messages.SnapshotsChanged)
    def breakers_changed(self, event: messages.SnapshotsChanged) -> None:
        if self.loaded and event.breakers_moved:
            self.show_backends(None)
            self.update_explain()

    def backend_names(self) -> list[str]:
        return ["local"] + [b.name for b in self.backends]

    def show_rules(self) -> None:
        known = set(self.backend_names())
        flagged = 0
        rows = []
        for r in self.rules:
            missing = rule_problems(r, known)
            flagged += bool(missing)
            backend = Text(r.backend)
            if r.backend in missing:
                backend.append(" ⚠ missing", style="bold red")
            # One per line: a long chain makes the row taller instead of pushing columns out.
            fallbacks = Text("\n".join(map(str, r.fallbacks)) or "-")
            if any(s.backend in missing for s in r.fallbacks):
                fallbacks.append(" ⚠ missing", style="bold red")
            rows.append(
                (
                    str(r.id),
                    (
                        str(r.id),
                        r.pattern,
                        backend,
                        r.model or "(same)",
                        fallbacks,
                        str(r.priority),
                        "yes" if r.enabled else "no",
                        r.note,
                    ),
                )
            )
        self.query_one("#rules-table", FitTable).set_rows(rows)
        hint = self.query_one("#rules-empty", Hint)
        hint.update(EMPTY_HINT)
        hint.display = not self.rules
        if flagged:
            self.say(
                f"{flagged} rule(s) name a backend that does not exist (⚠): edit them (e) or add the backend (b)",
                error=True,
            )

    def show_backends(self, keys: dict[str, str | None] | None) -> None:
        if keys is not None:
            self._keys = keys
        try:
            states = {s.name: s.state for s in self.wb.snapshots()}
        except DB_ERRORS as exc:
            states = {}
            self.db_failed("reading the breakers", exc)
        rows = [("local", ("local", "mlx", "-", "no breaker", "(built in)"))]
        rows += [
            (
                b.name,
                (
                    b.name,
                    b.kind,
                    self._keys.get(b.name) or "none",
                    states.get(b.name, "misconfigured"),
                    b.base_url or "",
                ),
            )
            for b in self.backends
        ]
        self.query_one("#backends-table", FitTable).set_rows(rows)

    @on(DataTable.RowHighlighted, "#rules-table")
    def show_rule(self, event: DataTable.RowHighlighted) -> None:
        # What the narrow table leaves out, for the selected rule.
        table = self.query_one("#rules-table", FitTable)
        if not table.hidden or event.row_key is None or event.row_key.value is None:
            return
        cells = table.row_cells(event.row_key.value)
        self.say(
            f"rule #{event.row_key.value}: "
            + " · ".join(
                f"{c.label.lower()} {cells[c.key]}" for c in table.hidden if c.key in cells and str(cells[c.key])
            )
        )

    @on(Input.Changed, "#try-model")
    def update_explain(self) -> None:
        name = self.query_one("#try-model", Input).value.strip()
        out = self.query_one("#explain", Static)
        if not name:
            out.update("Type a name above (/ gets there) to see which rule wins and where it goes.")
            return
        try:
            ex = self.wb.router.explain(name)
        except DB_ERRORS as exc:
            out.update(f"cannot read the rules: {exc}")
            return
        out.update(explanation_lines(ex, self.local_names, self.wb.router.default_backend))

    def action_try_name(self) -> None:
        self.query_one("#try-model", Input).focus()

    @on(messages.FocusExplain)
    def focus_explain(self) -> None:
        self.action_try_name()

    # ------------------------------------------------------------ changing

    def selected_rule(self) -> Rule | None:
        table = self.query_one("#rules-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.rules if str(r.id) == key), None)

    def selected_backend(self) -> str | None:
        table = self.query_one("#backends-table", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _written(self, text: str) -> None:
        self.say(text)
        self.post_message(messages.ConfigWritten())

    def _rule_form(self, rule: Rule | None) -> None:
        from tui.screens.dialogs import RuleForm

        async def save(r: Rule) -> Rule:
            if r.id is None:
                return await self.db.run(lambda s: s.add_rule(r))
            return await self.db.run(lambda s: s.update_rule(r))

        def done(r: Rule | None) -> None:
            if r is not None:
                self._written(f"{'added' if rule is None else 'updated'} rule {r.id}: {r.pattern} → {r.backend}")

        self.app.push_screen(RuleForm(self.backend_names(), rule, local_names=self.local_names, save=save), done)

    def action_add_rule(self) -> None:
        self._rule_form(None)

    @on(messages.AddRule)
    def add_rule_command(self) -> None:
        self.action_add_rule()

    def action_edit_rule(self) -> None:
        rule = self.selected_rule()
        if rule is not None:
            self._rule_form(rule)

    def action_delete_rule(self) -> None:
        from tui.screens.dialogs import Confirm

        rule = self.selected_rule()
        if rule is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.write(
                    f"deleting rule {rule.id}",
                    lambda s: s.delete_rule(rule.id),
                    f"deleted rule {rule.id}",
                    "Press d to try again",
                )

        self.app.push_screen(Confirm(f"Delete rule #{rule.id} ({rule.pattern} → {rule.backend})?", yes="Delete"), done)

    def action_toggle_rule(self) -> None:
        rule = self.selected_rule()
        if rule is not None:
            rule.enabled = not rule.enabled
            self.write(
                "switching the rule",
                lambda s: s.update_rule(rule),
                f"rule {rule.id} {'on' if rule.enabled else 'off'}",
                "Press space to try again",
            )

    def action_priority(self, delta: int) -> None:
        rule = self.selected_rule()
        if rule is not None and -1000 <= rule.priority + delta <= 1000:
            rule.priority += delta
            self.write(
                "changing the priority",
                lambda s: s.update_rule(rule),
                f"rule {rule.id} priority {rule.priority}",
                "Press + or - to try again",
            )

    @work(group="rules-write", exit_on_error=False)
    async def write(self, what: str, fn: Any, done: str, again: str) -> None:
        try:
            await self.db.run(fn)
        except DB_ERRORS as exc:
            self.db_failed(what, exc, again)
            self.reload()  # what is shown must be what is stored
            return
        self._written(done)

    def action_add_backend(self) -> None:
        from router.workbench import cloud_config
        from tui.screens.dialogs import BackendForm

        async def save(values: dict[str, Any]) -> BackendRecord:
            rec = BackendRecord(values["name"], values["kind"], values["base_url"])
            cloud_config(rec)  # ValueError: shown in the form
            return await self.db.run(lambda s: s.save_backend(rec))

        def done(rec: BackendRecord | None) -> None:
            if rec is not None:
                self._written(f"added backend {rec.name}; press k to set its key")

        try:
            cloud = self.wb.router.cloud_routing
        except DB_ERRORS:
            cloud = True
        note = (
            ""
            if cloud
            else (
                "Cloud routing is off: rules skip cloud backends until it is turned on "
                "(f9, or `mlx-workbench cloud on`)."
            )
        )
        self.app.push_screen(BackendForm(save, note=note), done)

    @on(messages.AddBackend)
    def add_backend_command(self) -> None:
        self.action_add_backend()

    def action_set_key(self, name: str | None = None) -> None:
        from tui.screens.dialogs import KeyForm

        name = name or self.selected_backend()
        if not name or name == "local":
            self.say("select a cloud backend in the Backends table first (the local engine needs no key)", error=True)
            return

        async def save(key: str) -> str:
            await asyncio.to_thread(self.wb.secrets.set, name, key)
            return key

        def done(key: str | None) -> None:
            if key:
                self.wb.refresh_keys()
                self._written(f"stored the key for {name} in the system keyring")

        self.app.push_screen(KeyForm(name, save), done)

    @on(messages.SetKey)
    def set_key_command(self, event: messages.SetKey) -> None:
        self.action_set_key(event.backend)

    def action_delete_backend(self) -> None:
        from tui.screens.dialogs import Confirm

        name = self.selected_backend()
        if not name or name == "local":
            self.say("select a cloud backend in the Backends table first (local cannot be removed)", error=True)
            return
        users = rules_using(self.rules, name)
        question = f"Remove backend {name}?"
        if users:
            named = ", ".join(f"#{r.id} ({how})" for r, how in users)
            question += f" Rules {named} use it and will be flagged until edited (their requests skip it)."

        def done(yes: bool | None) -> None:
            if yes:
                self.write(
                    f"removing backend {name}",
                    lambda s: s.delete_backend(name),
                    f"removed backend {name}",
                    "Press x to try again",
                )

        self.app.push_screen(Confirm(question, yes="Remove"), done)
