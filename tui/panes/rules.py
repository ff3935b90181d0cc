"""Rules: the routing table in match order, a live explain() box, backends and their keys."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static

from router.rules import Rule, order
from router.secrets import KeyringUnavailableError
from router.store import BackendRecord


class RulesPane(Vertical):
    BINDINGS = [
        Binding("a", "add_rule", "Add rule", id="rules.add"),
        Binding("e", "edit_rule", "Edit", id="rules.edit"),
        Binding("d", "delete_rule", "Delete", id="rules.delete"),
        Binding("space", "toggle_rule", "On/off", id="rules.toggle"),
        Binding("plus,=", "priority(1)", "Raise", id="rules.priority_up", key_display="+"),
        Binding("minus", "priority(-1)", "Lower", id="rules.priority_down", key_display="-"),
        Binding("b", "add_backend", "Add backend", id="rules.add_backend"),
        Binding("k", "set_key", "Set key", id="rules.set_key"),
    ]

    @property
    def wb(self) -> Any:
        return self.app.workbench

    def compose(self) -> ComposeResult:
        yield Label("Rules, in match order", classes="section")
        yield DataTable(id="rules-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="explain-row"):
            yield Input(placeholder="try a model name: the winning rule and chain show below", id="try-model")
        yield Static("", id="explain")
        yield Label("Backends", classes="section")
        yield DataTable(id="backends-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="rules-status")

    def on_mount(self) -> None:
        self.query_one("#rules-table", DataTable).add_columns("ID", "Pattern", "Backend", "Target model",
                                                              "Fallbacks", "Priority", "Enabled", "Note")
        self.query_one("#backends-table", DataTable).add_columns("Name", "Kind", "Base URL", "Key", "Breaker")
        self.refresh_all()

    def status(self, text: str, error: bool = False) -> None:
        w = self.query_one("#rules-status", Static)
        w.update(text)
        w.set_class(error, "error")

    def backend_names(self) -> list[str]:
        return ["local"] + [b.name for b in self.wb.store.list_backends()]

    def refresh_all(self) -> None:
        table = self.query_one("#rules-table", DataTable)
        row = table.cursor_row
        table.clear()
        rules = order(self.wb.router.rules())
        for r in rules:
            table.add_row(str(r.id), r.pattern, r.backend, r.model or "(same)",
                          ", ".join(map(str, r.fallbacks)) or "-", str(r.priority),
                          "yes" if r.enabled else "no", r.note, key=str(r.id))
        if rules:
            table.move_cursor(row=min(row, len(rules) - 1))
        backends = self.query_one("#backends-table", DataTable)
        backends.clear()
        states = {s.name: s.state for s in self.wb.snapshots()}
        backends.add_row("local", "mlx", "(built in)", "-", "closed", key="local")
        keys = self.wb.secrets.status(b.name for b in self.wb.store.list_backends())
        for b in self.wb.store.list_backends():
            backends.add_row(b.name, b.kind, b.base_url or "", keys.get(b.name) or "none",
                             states.get(b.name, "misconfigured"), key=b.name)
        self.update_explain()

    @on(Input.Changed, "#try-model")
    def update_explain(self) -> None:
        name = self.query_one("#try-model", Input).value.strip()
        out = self.query_one("#explain", Static)
        if not name:
            out.update("")
            return
        ex = self.wb.router.explain(name)
        lines = [f"rule #{ex.rule.id} [b]{ex.rule.pattern}[/b] wins" if ex.rule else
                 f"no rule matches: default route ({self.wb.router.default_backend})"]
        lines += [f"  beats #{r.id} {r.pattern}: {why}" for r, why in ex.beaten]
        lines.append("chain: " + "  →  ".join(
            f"[strike]{s.backend}/{s.model}[/strike] ({s.reason})" if s.skipped else f"{s.backend}/{s.model}"
            for s in ex.chain))
        out.update("\n".join(lines))

    def selected_rule(self) -> Rule | None:
        table = self.query_one("#rules-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.wb.store.get_rule(int(key))

    def action_add_rule(self) -> None:
        from tui.screens import RuleForm

        self.app.push_screen(RuleForm(self.backend_names()), self._saved)

    def action_edit_rule(self) -> None:
        from tui.screens import RuleForm

        rule = self.selected_rule()
        if rule is not None:
            self.app.push_screen(RuleForm(self.backend_names(), rule), self._saved)

    def _saved(self, rule: Rule | None) -> None:
        if rule is None:
            return
        if rule.id is None:
            self.wb.store.add_rule(rule)
            self.status(f"added rule {rule.id}: {rule.pattern} → {rule.backend}")
        else:
            self.wb.store.update_rule(rule)
            self.status(f"updated rule {rule.id}")
        self.refresh_all()

    def action_delete_rule(self) -> None:
        from tui.screens import Confirm

        rule = self.selected_rule()
        if rule is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.wb.store.delete_rule(rule.id)
                self.status(f"deleted rule {rule.id}")
                self.refresh_all()

        self.app.push_screen(Confirm(f"Delete rule #{rule.id} ({rule.pattern} → {rule.backend})?"), done)

    def action_toggle_rule(self) -> None:
        rule = self.selected_rule()
        if rule is not None:
            rule.enabled = not rule.enabled
            self.wb.store.update_rule(rule)
            self.refresh_all()

    def action_priority(self, delta: int) -> None:
        rule = self.selected_rule()
        if rule is not None and -1000 <= rule.priority + delta <= 1000:
            rule.priority += delta
            self.wb.store.update_rule(rule)
            self.refresh_all()

    def action_add_backend(self) -> None:
        from tui.screens import BackendForm

        def done(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            from router.workbench import cloud_config

            rec = BackendRecord(values["name"], values["kind"], values["base_url"])
            try:
                cloud_config(rec)
                self.wb.store.save_backend(rec)
            except ValueError as exc:
                self.status(str(exc), error=True)
                return
            self.status(f"added backend {rec.name}; press k to set its key")
            self.refresh_all()

        self.app.push_screen(BackendForm(), done)

    def action_set_key(self) -> None:
        from tui.screens import KeyForm

        table = self.query_one("#backends-table", DataTable)
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
        if not name or name == "local":
            self.status("select a cloud backend in the Backends table first", error=True)
            return

        def done(key: str | None) -> None:
            if not key:
                return
            try:
                self.wb.secrets.set(name, key)
            except KeyringUnavailableError as exc:
                self.status(str(exc), error=True)
                return
            self.wb.refresh_keys()
            self.status(f"stored the key for {name} in the system keyring")
            self.refresh_all()

        self.app.push_screen(KeyForm(name), done)
