"""Requests: a live tail of the request log (each finished request is added as it ends); the
selected row's full route trace below."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from tui import messages
from tui.db import DB_ERRORS
from tui.format import clock_time, ms
from tui.panes.base import Hint, Pane
from tui.widgets.fit import Column, FitTable

ROWS = 200
# Status and timings before the long columns: at 80 columns the route is what is left out.
COLUMNS = [
    Column("Time", "time", 3),
    Column("Model", "model", 1),
    Column("Status", "status", 0),
    Column("TTFT", "ttft", 2),
    Column("tok/s", "tps", 4),
    Column("Tokens", "tokens", 5),
    Column("Answered by", "backend", 6),
    Column("Rule", "rule", 7),
    Column("Route", "route", 8),
]
EMPTY_HINT = "No requests yet: ask something in Chat (F1), or start the listener (ctrl+l) for other programs."


def attempts_of(record: Any) -> list[dict[str, Any]]:
    """The attempts, ending with the backend that was answering when the log does not (a request
    stopped mid-answer is logged without its last attempt)."""
    attempts = list(record.attempts or [])
    answering = record.final_backend
    if answering and not (attempts and attempts[-1].get("backend") == answering):
        attempts.append(
            {
                "backend": answering,
                "model": record.final_model,
                "outcome": record.status,
                "latency_s": record.latency_s,
                "error": None,
            }
        )
    return attempts


def trace_summary(record: Any) -> str:
    return " → ".join(f"{a.get('backend')}:{a.get('outcome')}" for a in attempts_of(record)) or "-"


def cells(r: Any) -> tuple[str, ...]:
    tokens = f"{r.tokens_in or 0}/{r.tokens_out or 0}" if r.tokens_out is not None else "-"
    return (
        clock_time(r.at),
        r.model,
        r.status,
        ms(r.ttft_s),
        f"{r.tokens_per_s:.1f}" if r.tokens_per_s else "-",
        tokens,
        r.final_backend or "-",
        f"#{r.rule_id}" if r.rule_id else "default",
        trace_summary(r),
    )


class RequestsPane(Pane):
    HELP_TITLE = "Requests"
    HELP_ROWS = [("up / down", "select a request: its route trace shows below")]
    DEFAULT_CSS = """
    RequestsPane #requests-table { height: 1fr; }
    RequestsPane #trace { height: auto; min-height: 3; padding: 0 1; background: $boost; }
    """

    def __init__(self, workbench: Any, db: Any, **kw: Any) -> None:
        super().__init__(workbench, db, **kw)
        self.records: dict[str, Any] = {}
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Hint(EMPTY_HINT, id="requests-empty")
        yield FitTable(COLUMNS, id="requests-table")
        yield Static("Select a row for its full route trace.", id="trace", markup=False)

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="requests-read", exit_on_error=False)
    async def load(self) -> None:
        try:
            rows = await self.db.run(lambda s: s.recent_requests(limit=ROWS))
        except DB_ERRORS as exc:
            self.query_one("#requests-empty", Hint).update(f"could not read the request log: {exc}")
            return
        self.records = {}
        for r in rows:
            self._add(r)
        self.loaded = True
        self._show()

    def _add(self, r: Any) -> None:
        key = str(r.id if r.id is not None else r.request_id)
        self.records[key] = r
        if len(self.records) > ROWS:
            oldest = min(self.records, key=lambda k: self.records[k].at or 0)
            del self.records[oldest]

    def _show(self) -> None:
        self.query_one("#requests-empty", Hint).display = not self.records
        newest_first = sorted(self.records.items(), key=lambda kv: kv[1].at or 0, reverse=True)
        self.query_one(FitTable).set_rows((key, cells(r)) for key, r in newest_first)

    @on(messages.RequestLogged)
    def request_logged(self, event: messages.RequestLogged) -> None:
        if not self.loaded:
            return
        self._add(event.record)
        self._show()

    @on(DataTable.RowHighlighted)
    def show_trace(self, event: DataTable.RowHighlighted) -> None:
        r = self.records.get(event.row_key.value or "") if event.row_key else None
        if r is None:
            return
        lines = [
            f"request {r.request_id} · {r.front_end}/{r.protocol} · model {r.model} · {r.status}"
            + (f" · {r.error}" if r.error else "")
        ]
        for i, a in enumerate(attempts_of(r), 1):
            lines.append(
                f"  {i}. {a.get('backend')}/{a.get('model')}: {a.get('outcome')} in "
                f"{ms(a.get('latency_s'))}" + (f" — {a['error']}" if a.get("error") else "")
            )
        self.query_one("#trace", Static).update("\n".join(lines))
