"""The one-line status bar: listener, models and memory, breakers; parts that do not fit are left out
whole (never cut in the middle of a word)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.format import human_bytes

STATE_COLOURS = {"closed": "green", "half-open": "yellow", "open": "red"}
# Shape as well as colour: the state must be readable without colours.
STATE_MARKS = {"closed": "●", "half-open": "◐", "open": "○"}


@dataclass(frozen=True)
class StatusState:
    listener_url: str | None = None
    loaded: int = 0
    used_bytes: int = 0
    budget_bytes: int = 0
    cache_bytes: int | None = None  # the local engine's prompt cache, when it reports one
    breakers: tuple[tuple[str, str], ...] = ()  # (backend, state)
    cloud: bool | None = None  # the cloud routing switch, when the router has one
    extra: tuple[str, ...] = field(default=())


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    state: reactive[StatusState] = reactive(StatusState, layout=False)

    def parts(self) -> list[tuple[int, list[Text]]]:
        """(importance, renderings from longest to shortest): the least important parts are
        shortened, then left out, when the bar is narrow."""
        s = self.state
        out: list[tuple[int, list[Text]]] = []
        if s.cloud is not None:
            out.append((0, [Text("cloud on" if s.cloud else "cloud off", style="bold")]))
        listener = [Text(f"listener {s.listener_url}"), Text("listening")] if s.listener_url else [Text("listener off")]
        out.append((1, listener))
        memory = [
            Text(f"{s.loaded} loaded, {human_bytes(s.used_bytes)} / {human_bytes(s.budget_bytes)}"),
            Text(f"{s.loaded} loaded {human_bytes(s.used_bytes)}"),
        ]
        out.append((3, memory))
        if s.cache_bytes:
            out.append((4, [Text(f"cache {human_bytes(s.cache_bytes)}")]))
        if s.breakers:
            out.append((2, [self._dots(s.breakers), self._dots([b for b in s.breakers if b[1] != "closed"])]))
        out.extend((5, [Text(e)]) for e in s.extra)
        return out

    @staticmethod
    def _dots(breakers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> Text:
        if not breakers:
            return Text("backends ok")
        dots = Text()
        for i, (name, state) in enumerate(breakers):
            if i:
                dots.append(" ")
            dots.append(STATE_MARKS.get(state, "?"), style=STATE_COLOURS.get(state, "white"))
            dots.append(f" {name}")
        return dots

    def render(self) -> Text:
        width = self.content_region.width or self.size.width
        parts = self.parts()
        sep = " │ "
        choice = {i: 0 for i in range(len(parts))}

        def total() -> int:
            return sum(cell_len(parts[i][1][c].plain) for i, c in choice.items()) + cell_len(sep) * (len(choice) - 1)

        by_importance = sorted(range(len(parts)), key=lambda i: -parts[i][0])
        while choice and width > 0 and total() > width:
            # The least important part left: shorter if it can be, else gone.
            least = next(i for i in by_importance if i in choice)
            if choice[least] + 1 < len(parts[least][1]):
                choice[least] += 1
            else:
                del choice[least]
        line = Text()
        for n, i in enumerate(sorted(choice)):
            if n:
                line.append(sep, style="dim")
            line.append_text(parts[i][1][choice[i]])
        return line
