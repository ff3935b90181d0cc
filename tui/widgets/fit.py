"""Widgets that leave things out whole instead of cutting them: a footer that shows the keys that
fit (help always), and a table that shows the columns that fit (the most important first)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import DataTable, Footer
from textual.widgets._footer import FooterKey


def _width(cell: Any) -> int:
    if isinstance(cell, Text):
        return max((cell_len(line) for line in cell.plain.splitlines()), default=0)
    return max((cell_len(line) for line in str(cell).splitlines()), default=0)


class FitFooter(Footer):
    """The compact footer, minus the keys that would not fit whole; `? Help` stays."""

    KEEP_ACTIONS = ("app.help", "help")

    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        room = (self.size.width or self.app.size.width) - 1

        def width(w: Widget) -> int:
            if isinstance(w, FooterKey):
                return cell_len(w.key_display) + (1 + cell_len(w.description) if w.description else 0) + 1
            return 0

        keep: list[Widget] = [w for w in widgets if isinstance(w, FooterKey) and w.action in self.KEEP_ACTIONS]
        used = sum(width(w) for w in keep)
        for w in widgets:
            if w in keep:
                continue
            if used + width(w) <= room:
                keep.append(w)
                used += width(w)
        yield from (w for w in widgets if w in keep)

    def on_resize(self, event: Resize) -> None:
        self.call_after_refresh(self.recompose)


@dataclass(frozen=True)
class Column:
    label: str
    key: str
    keep: int  # lower numbers stay longest when the table is narrow


class FitTable(DataTable):
    """A DataTable of fixed columns of which only those that fit the width are shown."""

    DEFAULT_CSS = """
    FitTable { border-left: blank; }
    FitTable:focus { border-left: heavy $accent; }
    """

    def __init__(self, columns: list[Column], **kw: Any) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self.spec = columns
        self._rows: list[tuple[str, tuple[Any, ...]]] = []
        self.shown_columns: list[Column] = []

    def on_mount(self) -> None:
        self.refit()

    def on_resize(self, event: Resize) -> None:
        self.refit()

    def set_rows(self, rows: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        self._rows = list(rows)
        self.refit(force=True)

    @property
    def hidden(self) -> list[Column]:
        return [c for c in self.spec if c not in self.shown_columns]

    def row_cells(self, key: str) -> dict[str, Any]:
        for k, cells in self._rows:
            if k == key:
                return {c.key: cell for c, cell in zip(self.spec, cells, strict=True)}
        return {}

    def _choose(self) -> list[Column]:
        room = self.scrollable_content_region.width or self.size.width
        if room <= 0:
            return list(self.spec)
        pad = 2 * self.cell_padding
        widths = {
            c.key: max([cell_len(c.label)] + [_width(cells[i]) for _, cells in self._rows]) + pad
            for i, c in enumerate(self.spec)
        }
        chosen: list[Column] = []
        used = 0
        for c in sorted(self.spec, key=lambda c: c.keep):
            if used + widths[c.key] <= room or not chosen:
                chosen.append(c)
                used += widths[c.key]
        return [c for c in self.spec if c in chosen]

    def refit(self, force: bool = False) -> None:
        visible = self._choose()
        if visible == self.shown_columns and not force:
            return
        key = None
        if self.row_count:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        self.shown_columns = visible
        self.clear(columns=True)
        for c in visible:
            self.add_column(c.label, key=c.key)
        index = {c.key: i for i, c in enumerate(self.spec)}
        for row_key, cells in self._rows:
            self.add_row(*(cells[index[c.key]] for c in visible), key=row_key, height=None)
        keys = [k for k, _ in self._rows]
        if key in keys:
            self.move_cursor(row=keys.index(key))
