"""Requests: a live tail of the request log; the selected row's full route trace below."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.format import clock_time, ms


def trace_summary(attempts: list[dict[str, Any]]) -> str:
    return " → ".join(f"{a.get('backend')}:{a.get('outcome')}" for a in attempts) or "-"


class RequestsPane(Vertical):
    def compose(self) -> ComposeResult:
        yield DataTable(id="requests-table", cursor_type="row", zebra_stripes=True)
        yield Static("Select a row for its full route trace.", id="trace")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("Time", "Model", "Rule", "Route", "Answered by", "Tokens",
                                              "TTFT", "tok/s", "Status")
        self.records: dict[str, Any] = {}
        self.refresh_rows()

    def refresh_rows(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.records = {}
        for r in self.app.workbench.store.recent_requests(limit=200):
            self.records[str(r.id)] = r
            tokens = f"{r.tokens_in or 0}/{r.tokens_out or 0}" if r.tokens_out is not None else "-"
            table.add_row(clock_time(r.at), r.model, f"#{r.rule_id}" if r.rule_id else "default",
                          trace_summary(r.attempts), r.final_backend or "-", tokens, ms(r.ttft_s),
                          f"{r.tokens_per_s:.1f}" if r.tokens_per_s else "-", r.status, key=str(r.id))

    @on(DataTable.RowHighlighted)
    def show_trace(self, event: DataTable.RowHighlighted) -> None:
        r = self.records.get(event.row_key.value) if event.row_key else None
        if r is None:
            return
        lines = [f"request {r.request_id} · {r.front_end}/{r.protocol} · model {r.model} · {r.status}"
                 + (f" · {r.error}" if r.error else "")]
        for i, a in enumerate(r.attempts, 1):
            lines.append(f"  {i}. {a.get('backend')}/{a.get('model')}: {a.get('outcome')} in "
                         f"{ms(a.get('latency_s'))}" + (f" — {a['error']}" if a.get("error") else ""))
        self.query_one("#trace", Static).update("\n".join(lines))
