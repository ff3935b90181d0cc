"""Local inference with MLX: discovery, loading, memory budget, the generation thread.

MLX is imported lazily, through `mlx_import()`, so that the CLI and the TUI start without it and
the system OpenBLAS can be loaded first.
"""

from __future__ import annotations

from types import ModuleType


def mlx_import(use_system_openblas: bool | None = None) -> ModuleType:
    """`mlx.core`, imported after the BLAS choice has been made (see blas.py)."""
    from engine.local.blas import ensure_blas

    ensure_blas(use_system_openblas)
    import mlx.core as mx

    return mx
