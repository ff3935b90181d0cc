"""Which BLAS MLX's CPU backend uses.

The mlx-cpu wheel links a reference BLAS; loading the system OpenBLAS into the process (global
symbols) before `mlx.core` is imported made prefill about 20x faster on Linux (DESIGN.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_lock = threading.Lock()
_label: str | None = None


def openblas_disabled_by_env() -> bool:
    return os.environ.get("MLXWB_NO_OPENBLAS", "").lower() in ("1", "true", "yes")


def find_openblas() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    found = ctypes.util.find_library("openblas")
    return found


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
            _label = "reference (mlx-cpu built-in; install libopenblas0-pthread for speed)"
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
