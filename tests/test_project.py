"""Project-level guarantees: layering, fast start-up, the CLI frame."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    """engine/ and router/ never import textual; engine/ never imports router/ (import-linter)."""
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" in proc.stdout and "0 broken" in proc.stdout


def test_cli_start_imports_neither_mlx_nor_textual() -> None:
    code = (
        "import sys, tui.cli; tui.cli.build_parser(); "
        "print(','.join(sorted(m for m in ('mlx', 'mlx.core', 'mlx_lm', 'textual') if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_cli_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("models", "chat", "rules", "backends", "keys", "serve"):
        assert command in proc.stdout
