"""Settings the engine needs, passed in explicitly (no globals, no import-time side effects)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BUDGET_FRACTION = 0.5


def default_data_dir() -> Path:
    env = os.environ.get("MLXWB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("mlx-workbench", appauthor=False))


def openblas_disabled_by_env() -> bool:
    """MLXWB_NO_OPENBLAS=1 keeps MLX on its built-in BLAS on Linux (the one place it is read)."""
    return os.environ.get("MLXWB_NO_OPENBLAS", "").lower() in ("1", "true", "yes")


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


@dataclass
class EngineConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    # Extra folders to scan for models (the data dir's models/ folder is always scanned).
    model_dirs: list[Path] = field(default_factory=list)
    # Also scan the Hugging Face hub cache (HF_HUB_CACHE or ~/.cache/huggingface/hub) if present.
    scan_hf_cache: bool = True
    memory_budget_bytes: int = field(
        default_factory=lambda: int(total_memory_bytes() * DEFAULT_BUDGET_FRACTION)
    )
    # Load the system OpenBLAS before MLX on Linux (env MLXWB_NO_OPENBLAS=1 turns it off).
    use_system_openblas: bool = field(default_factory=lambda: not openblas_disabled_by_env())

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
