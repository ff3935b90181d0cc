"""Starting and ending the app: the log file is private, the exit status is honest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from textual.app import App

from tui.app import WorkbenchApp, run_app


def run_headless(monkeypatch: pytest.MonkeyPatch, on_mount) -> None:
    monkeypatch.setattr(WorkbenchApp, "run", lambda self: App.run(self, headless=True, size=(80, 24)))
    monkeypatch.setattr(WorkbenchApp, "on_mount", on_mount)


def test_the_log_file_is_private_whatever_the_umask(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect 16: workbench.log was created 0644 next to a 0600 database.
    run_headless(monkeypatch, lambda self: self.exit())
    old = os.umask(0o022)
    try:
        assert run_app() == 0
    finally:
        os.umask(old)
    log = isolated_env / "workbench.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((isolated_env / "workbench.db").stat().st_mode) == 0o600


def test_an_app_that_ends_on_an_error_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self) -> None:
        raise RuntimeError("boom")

    run_headless(monkeypatch, crash)
    assert run_app() == 1
