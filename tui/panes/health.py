"""Health: one card per backend, live from breaker and request events."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from engine.types import BackendSnapshot
from tui.format import clock_time, ms


class BackendCard(Vertical, can_focus=True):
    BINDINGS = [
        Binding("r", "reset", "Reset breaker", id="health.reset"),
        Binding("t", "trip", "Trip breaker", id="health.trip"),
    ]

    def __init__(self, snap: BackendSnapshot) -> None:
        super().__init__(id=f"card-{snap.name}", classes="card")
        self.snap = snap

    def compose(self) -> ComposeResult:
        yield Label("", classes="card-title")
        yield Static("", classes="card-body")
        yield Sparkline([], classes="card-spark")

    def on_mount(self) -> None:
        self.show(self.snap)

    def show(self, s: BackendSnapshot) -> None:
        self.snap = s
        for state in ("closed", "open", "half-open"):
            self.set_class(s.state == state, f"state-{state}")
        self.query_one(".card-title", Label).update(f"● {s.name} ({s.kind})  {s.state.upper()}")
        lines = [
            f"failures {s.consecutive_failures}/{s.fail_max}" if s.fail_max else "failures -",
            f"requests {s.requests} · errors {s.errors} · p50 {ms(s.latency_p50_s)} · p95 {ms(s.latency_p95_s)}",
        ]
        if s.seconds_to_half_open is not None:
            lines.append(f"half-open in {s.seconds_to_half_open:.0f} s")
        if s.last_error:
            lines.append(f"last error {clock_time(s.last_error_at)}: {s.last_error[:200]}")
        self.query_one(".card-body", Static).update("\n".join(lines))
        spark = self.query_one(Sparkline)
        spark.data = list(s.recent_latencies_s)
        # One sample draws a solid full-width block that says nothing: a trend needs two.
        spark.display = len(s.recent_latencies_s) >= 2

    def action_reset(self) -> None:
        self.app.reset_breaker(self.snap.name)

    def action_trip(self) -> None:
        self.app.trip_breaker(self.snap.name)


class HealthPane(VerticalScroll):
    def compose(self) -> ComposeResult:
        yield Static("Tab to a card; r resets its breaker, t trips it (asks first).", classes="hint")

    def on_mount(self) -> None:
        self.refresh_cards()

    def refresh_cards(self) -> None:
        snaps = self.app.workbench.snapshots()
        names = {s.name for s in snaps}
        for card in list(self.query(BackendCard)):
            if card.snap.name not in names:
                card.remove()
        existing = {c.snap.name: c for c in self.query(BackendCard)}
        for s in snaps:
            if s.name in existing:
                existing[s.name].show(s)
            else:
                self.mount(BackendCard(s))
