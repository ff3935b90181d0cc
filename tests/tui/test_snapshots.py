"""Snapshots of every pane (120x40 and 80x24), the dialogs, the help screen, a failover and the
all-backends-down state, from fixed data (tui/screenshots.py: the same scenes as `make screenshots`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.screenshots import SCENES, fixed_app, play


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_scene(scene: str, snap_compare, tmp_path: Path, tiny_models_dir: Path) -> None:
    app = fixed_app(tmp_path, tiny_models_dir)

    async def run_before(pilot) -> None:
        await play(app, pilot, scene)

    assert snap_compare(app, terminal_size=SCENES[scene][0], run_before=run_before)
