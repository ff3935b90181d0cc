"""Snapshots of every pane at 120x40 and the chat pane at 80x24, from fixed data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.screenshots import PANES, fixed_app, prepare, quiet, settle


def _run_before(pane: str):
    async def run_before(pilot) -> None:
        quiet(pilot.app)
        await settle(pilot)
        await prepare(pilot.app, pane)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("pane", PANES)
def test_pane_120x40(pane: str, snap_compare, tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)
    assert snap_compare(app, terminal_size=(120, 40), run_before=_run_before(pane))


def test_chat_80x24(snap_compare, tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_run_before("chat"))
