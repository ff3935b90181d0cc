"""Local inference with MLX: discovery, loading, memory budget, the generation thread.

MLX is imported lazily, through `mlx_import()`, so that the CLI and the TUI start without it and
the system OpenBLAS can be loaded first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def mlx_import(config: Any = None) -> ModuleType:
    """`mlx.core`, imported after the BLAS choice has been made (see blas.py).

    `config` is an EngineConfig (its `use_system_openblas` decides), a bool, or None (the
    MLXWB_NO_OPENBLAS environment variable decides). Only the first call in a process matters.
    """
    from engine.local.blas import ensure_blas

    wanted = getattr(config, "use_system_openblas", config)
    ensure_blas(None if wanted is None else bool(wanted))
    import mlx.core as mx

    return mx
