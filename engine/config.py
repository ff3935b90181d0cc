"""Settings the engine needs, passed in explicitly (no globals, no import-time side effects)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BUDGET_FRACTION = 0.5
# Stored prompt caches (KV of recent conversations), counted inside the memory budget and evicted
# before any model. 1 GiB holds about 23k tokens of the demo model's float32 cache, or 8k tokens
# of an 8B model's float16 one: a handful of long conversations.
DEFAULT_PROMPT_CACHE_BYTES = 2**30


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
    memory_budget_bytes: int = field(default_factory=lambda: int(total_memory_bytes() * DEFAULT_BUDGET_FRACTION))
    # Load the system OpenBLAS before MLX on Linux (env MLXWB_NO_OPENBLAS=1 turns it off).
    use_system_openblas: bool = field(default_factory=lambda: not openblas_disabled_by_env())

    # Bytes of prompt caches to keep (config key prompt_cache_bytes, MLXWB_PROMPT_CACHE_BYTES); 0: off.
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES
    # Sequences decoding together per model (config key max_batch, MLXWB_MAX_BATCH); more wait in
    # a priority queue, and high-priority requests may use a small overflow above it.
    max_batch: int = 8
    # Seconds of prompt reading per generation step, shared by the prompts being read (chunk sizes
    # follow the measured speed): bounds how long the other streams wait for their next token and
    # how long a cancelled prompt keeps the thread.
    prefill_step_s: float = 0.2
    # A fixed prompt chunk in tokens instead (0: follow prefill_step_s); tests use it.
    prefill_chunk_tokens: int = 0

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
