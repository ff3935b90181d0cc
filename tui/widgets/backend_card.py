"""A backend's health card: breaker state (in words and border shape, not colour alone), failures,
latency, last error. r / t ask (by message) for a reset or a trip; the local engine has no breaker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from engine.types import BackendSnapshot
from tui import messages
from tui.format import clock_time, duration, ms


def card_lines(s: BackendSnapshot) -> list[str]:
    lines = []
    if s.fail_max:
        lines.append(f"failures {s.consecutive_failures}/{s.fail_max}")
    if s.kind == "local":
        lines.append(f"running {s.running} · queued {s.queued}")
    lines.append(f"requests {s.requests} · errors {s.errors} · p50 {ms(s.latency_p50_s)} · p95 {ms(s.latency_p95_s)}")
    if s.seconds_to_half_open is not None:
        lines.append(f"half-open in {duration(s.seconds_to_half_open)} (r resets now)")
    if s.last_error:
        lines.append(f"last error {clock_time(s.last_error_at)}: {s.last_error[:200]}")
    return lines


class BackendCard(Vertical, can_focus=True):
    DEFAULT_CSS = """
    BackendCard { height: auto; border: round $success; padding: 0 1; margin: 0 0 1 0; }
    BackendCard:focus { border: double $accent; }
    BackendCard.state-half-open { border: round $warning; }
    BackendCard.state-open { border: round $error; }
    BackendCard.state-half-open:focus, BackendCard.state-open:focus { border: double $accent; }
    BackendCard .card-title { text-style: bold; }
    BackendCard.state-closed .card-title { color: $success; }
    BackendCard.state-half-open .card-title { color: $warning; }
    BackendCard.state-open .card-title { color: $error; }
    BackendCard .card-body { height: auto; }
    BackendCard .card-spark { height: 2; }
    """

    BINDINGS = [
        Binding("r", "reset", "Reset breaker", id="card-reset"),
        Binding("t", "trip", "Trip breaker", id="card-trip"),
    ]

    def __init__(self, snap: BackendSnapshot) -> None:
        super().__init__(id=f"card-{snap.name}", classes="card")
        self.snap = snap
        self._ready = False

    @property
    def has_breaker(self) -> bool:
        return self.snap.kind != "local"

    def compose(self) -> ComposeResult:
        yield Label("", classes="card-title")
        yield Static("", classes="card-body", markup=False)
        yield Sparkline([], classes="card-spark")

    def on_mount(self) -> None:
        self._ready = True
        self.show(self.snap)

    def show(self, s: BackendSnapshot) -> None:
        self.snap = s
        if not self._ready:
            return  # on_mount shows it
        for state in ("closed", "open", "half-open"):
            self.set_class(s.state == state, f"state-{state}")
        what = "no breaker" if s.kind == "local" else s.state.upper()
        self.query_one(".card-title", Label).update(f"{s.name} ({s.kind})  {what}")
        self.query_one(".card-body", Static).update("\n".join(card_lines(s)))
        spark = self.query_one(Sparkline)
        spark.data = list(s.recent_latencies_s)
        # One sample draws a solid full-width block that says nothing: a trend needs two.
        spark.display = len(s.recent_latencies_s) >= 2

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("reset", "trip"):
            return self.has_breaker
        return True

    def action_reset(self) -> None:
        self.post_message(messages.ResetBreaker(self.snap.name))

    def action_trip(self) -> None:
        self.post_message(messages.TripBreaker(self.snap.name))
