"""Which BLAS MLX's CPU backend uses.

The mlx-cpu wheel links a reference BLAS; loading the system OpenBLAS into the process (global
symbols) before `mlx.core` is imported made prefill about 20x faster on Linux (DESIGN.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import sys
import threading

from engine.config import openblas_disabled_by_env

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_lock = threading.Lock()
_label: str | None = None


@functools.cache  # ldconfig runs in a subprocess; the answer holds for the process
def find_openblas() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    return ctypes.util.find_library("openblas")


def openblas_install_command() -> str:
    """The one command that installs the system OpenBLAS on this machine."""
    if shutil.which("apt-get"):
        return "sudo apt-get install libopenblas0-pthread"
    if shutil.which("dnf"):
        return "sudo dnf install openblas"
    return "install OpenBLAS (libopenblas.so.0) with the system's package manager"


def reference_blas_notice(use_system_openblas: bool) -> str | None:
    """What to say at start when MLX would run on its reference BLAS on Linux (prefill ~20x slower)."""
    if sys.platform != "linux" or not use_system_openblas or find_openblas() is not None:
        return None
    return (
        "no system OpenBLAS: local models run about 20x slower on MLX's built-in reference BLAS. "
        f"Fix: {openblas_install_command()}"
    )


def ensure_blas(use_system_openblas: bool | None = None) -> str:
    """Load the system OpenBLAS if wanted and possible; return a label of the BLAS in use."""
    global _label
    with _lock:
        if _label is not None:
            return _label
        if sys.platform == "darwin":
            _label = "accelerate (macOS)"
            return _label
        if use_system_openblas is not True and openblas_disabled_by_env():
            _label = "reference: OpenBLAS disabled by MLXWB_NO_OPENBLAS"
            return _label
        if use_system_openblas is False:
            _label = "reference (mlx-cpu built-in; system OpenBLAS turned off)"
            return _label
        if "mlx.core" in sys.modules:
            _label = "reference (mlx was imported before OpenBLAS could be loaded)"
            return _label
        path = find_openblas()
        if path is None:
            _label = f"reference (mlx-cpu built-in; for speed: {openblas_install_command()})"
            return _label
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            _label = f"reference (loading {path} failed: {exc})"
            return _label
        _label = f"openblas ({path})"
        return _label


def blas_label() -> str:
    """The label without loading anything: what ensure_blas decided, or that MLX isn't loaded yet."""
    return _label or "not loaded yet"
