"""Small terminals: every pane usable at 80x24, nothing cut in the middle of a word at 60x20."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Button, Label, Tab
from textual.widgets._footer import FooterKey

from tests.tui.helpers import screen_text
from tui.screenshots import PANES, fixed_app, prepare, settle
from tui.widgets.fit import FitTable


def clipped(app) -> list[str]:
    """Labels, tabs, buttons and footer keys that do not fit whole on the screen; columns whose
    header does not fit whole in its table."""
    screen = app.screen.region
    out = []
    for widget in app.screen.query("*"):
        if not widget.display or not widget.region.area:
            continue
        if isinstance(widget, (Tab, FooterKey, Button, Label)):
            text = widget.render()
            plain = getattr(text, "plain", str(text))
            width, height = widget.content_region.width, widget.content_region.height
            longest_word = max((cell_len(w) for w in plain.split()), default=0)
            lines = Text(plain).wrap(app.console, max(width, 1))
            if widget.region.right > screen.right or longest_word > width or len(lines) > height:
                out.append(f"{type(widget).__name__} {plain!r}")
        if isinstance(widget, FitTable):
            width = sum(c.get_render_width(widget) for c in widget.columns.values())
            if width > widget.scrollable_content_region.width:
                out.append(f"table {widget.id}: {width} > {widget.scrollable_content_region.width}")
    return out


def _run_before(pane: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await prepare(pilot.app, pane)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("pane", PANES)
async def test_nothing_is_cut_at_60x20(pane: str, tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(60, 20)) as pilot:
        await _run_before(pane)(pilot)
        assert clipped(app) == [], screen_text(app)
        footer = screen_text(app).splitlines()[-1]
        assert "? Help" in footer


@pytest.mark.parametrize("pane", PANES)
async def test_every_pane_is_usable_at_80x24(pane: str, tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await _run_before(pane)(pilot)
        assert clipped(app) == [], screen_text(app)
        text = screen_text(app)
        if pane == "requests":
            header = next(line for line in text.splitlines() if "Time" in line and "Model" in line)
            for column in ("Status", "TTFT", "tok/s"):
                assert column in header, header
        if pane == "models":
            assert "State" in next(line for line in text.splitlines() if "Name" in line)
        if pane == "rules":
            assert "k Set key" in text.splitlines()[-1]
        if pane == "chat":
            # The prompt, the model field and a few lines of the conversation are all on screen.
            assert app.query_one("#prompt").region.bottom <= 23 and app.query_one("#model").region.height >= 1
            assert app.query_one("#conversation").region.height >= 8


@pytest.mark.parametrize(
    "keys", [("f3", "a"), ("f3", "b"), ("f10",), ("ctrl+o",)], ids=["rule", "backend", "help", "conversations"]
)
async def test_dialogs_fit_at_60x20(keys: tuple[str, ...], tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)
        assert app.screen.is_modal
        assert clipped(app) == [], screen_text(app)
