"""On Linux without the system OpenBLAS, the app says so once at start, with the command that fixes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local import blas
from engine.local.blas import openblas_install_command, reference_blas_notice
from router.config import AppConfig
from router.workbench import Workbench

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the reference BLAS is a Linux matter")


def _path_with(tmp_path: Path, *tools: str) -> str:
    """A PATH holding only the named (empty, executable) tools."""
    for tool in tools:
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    return str(tmp_path)


@pytest.mark.parametrize(
    "tools,command",
    [
        (("apt-get",), "sudo apt-get install libopenblas0-pthread"),
        (("dnf",), "sudo dnf install openblas"),
        ((), "install OpenBLAS (libopenblas.so.0) with the system's package manager"),
    ],
)
def test_the_command_fits_the_package_manager(tmp_path: Path, monkeypatch, tools: tuple[str, ...], command: str):
    monkeypatch.setenv("PATH", _path_with(tmp_path, *tools))
    assert openblas_install_command() == command


@linux_only
def test_missing_openblas_gives_one_notice_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(blas, "find_openblas", lambda: None)
    monkeypatch.setenv("PATH", _path_with(tmp_path, "apt-get"))
    notice = reference_blas_notice(True)
    assert notice is not None and "20x slower" in notice
    assert notice.endswith("Fix: sudo apt-get install libopenblas0-pthread")
    wb = Workbench.open(AppConfig(engine=EngineConfig(data_dir=tmp_path / "d", scan_hf_cache=False)))
    try:
        assert wb.notices == [notice]
    finally:
        wb.store.close()


def test_no_notice_when_openblas_is_there_or_turned_off(monkeypatch) -> None:
    monkeypatch.setattr(blas, "find_openblas", lambda: "/usr/lib/x86_64-linux-gnu/libopenblas.so.0")
    assert reference_blas_notice(True) is None
    monkeypatch.setattr(blas, "find_openblas", lambda: None)
    assert reference_blas_notice(False) is None  # MLXWB_NO_OPENBLAS=1: the user chose it
    monkeypatch.setattr(sys, "platform", "darwin")  # Accelerate, not a reference BLAS
    assert reference_blas_notice(True) is None


@linux_only
def test_the_notice_matches_what_mlx_then_runs_on() -> None:
    """The real check, no patching: a notice exactly when MLX ends up on its reference BLAS."""
    probe = (
        "from engine.local.blas import reference_blas_notice; from engine.local import mlx_import; "
        "from engine.local.blas import blas_label; n = reference_blas_notice(True); mlx_import(True); "
        "print(n is None); print(blas_label().startswith('openblas'))"
    )
    env = {**os.environ, "MLXWB_NO_OPENBLAS": ""}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    no_notice, on_openblas = out.stdout.split()
    assert no_notice == on_openblas


@linux_only
async def test_the_tui_says_it_once_at_start(tmp_path: Path, tiny_models_dir: Path, monkeypatch) -> None:
    from tests.tui.helpers import make_app, notifications, wait_for

    monkeypatch.setattr(blas, "find_openblas", lambda: None)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: notifications(app), timeout=10)
        said = [n for n in notifications(app) if "no system OpenBLAS" in n]
    assert len(said) == 1 and said[0].endswith(openblas_install_command())
