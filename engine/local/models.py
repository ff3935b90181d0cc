"""Resident models under a memory budget, least recently used evicted first.

The budget covers the models and the stored prompt caches (prompt_cache.py); when room is
needed the caches go first (least recently used), then whole models. Every method here runs on
the MLX thread (generation.MLXWorker); other threads read `published`, an immutable snapshot
replaced after every change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.local.discovery import ModelInfo
from engine.local.prompt_cache import PromptCacheStore
from engine.types import CancelledError, ModelNotFoundError, RejectedError, UnavailableError


@dataclass(frozen=True)
class LoadProgress:
    model_id: str
    stage: str
    fraction: float
    message: str = ""


@dataclass
class LoadedModel:
    info: ModelInfo
    model: Any
    tokenizer: Any
    bytes: int
    loaded_at: float
    last_used: float


@dataclass(frozen=True)
class LoadedModelInfo:
    id: str
    bytes: int
    loaded_at: float
    last_used: float


@dataclass(frozen=True)
class MemorySnapshot:
    loaded: list[LoadedModelInfo]  # a fresh list for each caller
    used_bytes: int  # models plus stored prompt caches
    budget_bytes: int
    blas: str
    prompt_cache_bytes: int = 0  # the stored prompt caches' share of used_bytes
    prompt_cache_entries: int = 0
    prompt_cache_limit_bytes: int = 0  # the prompt_cache_bytes setting (0: caching off)

    @property
    def model_bytes(self) -> int:
        return self.used_bytes - self.prompt_cache_bytes


@dataclass(frozen=True)
class ModelsSnapshot:
    """The resident models, as the MLX thread last published them."""

    loaded: tuple[LoadedModelInfo, ...] = ()
    model_bytes: int = 0

    def has(self, model_id: str) -> bool:
        return any(m.id == model_id for m in self.loaded)


class ModelLoadError(UnavailableError):
    """A model exists but could not be loaded; the router treats it as 'local unavailable'."""


class ModelTooLargeError(RejectedError):
    """The model cannot fit in the memory budget even with everything else unloaded."""


ProgressFn = Callable[[LoadProgress], None]


def _param_bytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


class ModelManager:
    def __init__(self, config: EngineConfig, busy: Callable[[str], bool] = lambda model_id: False, *,
                 prompt_cache: PromptCacheStore | None = None,
                 on_unload: Callable[[str], None] = lambda model_id: None) -> None:
        self.config = config
        self._busy = busy
        self._cache = prompt_cache if prompt_cache is not None else PromptCacheStore(0)
        self._on_unload = on_unload
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self.published = ModelsSnapshot()

    def get(self, info: ModelInfo, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None) -> LoadedModel:
        """The loaded model, loading it (and evicting others) if needed."""
        hit = self._loaded.get(info.id)
        if hit is not None:
            hit.last_used = time.time()
            self._loaded.move_to_end(info.id)
            self._publish()
            return hit
        budget = self.config.memory_budget_bytes
        if info.est_memory_bytes > budget:
            raise ModelTooLargeError(
                f"{info.id} needs about {info.est_memory_bytes / 2**20:.0f} MiB, more than the memory budget "
                f"of {budget / 2**20:.0f} MiB (set memory_budget in the config)"
            )
        self._make_room(info.est_memory_bytes)
        loaded = self._load(info, progress, cancel)
        self._loaded[info.id] = loaded
        # The estimate may have been low: settle the budget with the real size.
        self._make_room(0)
        self._publish()
        return loaded

    def _make_room(self, needed: int) -> None:
        """Free memory for `needed` more bytes: stored prompt caches first, then idle models."""
        budget = self.config.memory_budget_bytes
        self._cache.trim_to(budget - self.model_bytes() - needed)
        for model_id in list(self._loaded):
            if self.used_bytes() + needed <= budget:
                return
            if self._busy(model_id) or (len(self._loaded) == 1 and needed == 0):
                continue
            self.unload(model_id)

    def _load(self, info: ModelInfo, progress: ProgressFn | None, cancel: threading.Event | None) -> LoadedModel:
        def report(stage: str, fraction: float) -> None:
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"loading {info.id} was cancelled")
            if progress is not None:
                progress(LoadProgress(info.id, stage, fraction, f"{info.id}: {stage}"))

        if not Path(info.path).exists():
            raise ModelNotFoundError(f"model {info.id}: {info.path} no longer exists")
        try:
            if info.format == "gguf":
                from engine.local.gguf import load_gguf

                model, tokenizer = load_gguf(info.path, progress=report, cancel=cancel)
            else:
                model, tokenizer = self._load_mlx_folder(info, report)
        except (CancelledError, ModelNotFoundError):
            raise
        except RejectedError as exc:
            raise ModelLoadError(f"cannot load {info.id}: {exc.message}") from None
        except Exception as exc:  # mlx_lm / transformers raise many kinds for a damaged folder
            raise ModelLoadError(f"cannot load {info.id}: {type(exc).__name__}: {exc}") from None
        now = time.time()
        return LoadedModel(info, model, tokenizer, _param_bytes(model), now, now)

    @staticmethod
    def _load_mlx_folder(info: ModelInfo, report: Callable[[str, float], None]) -> tuple[Any, Any]:
        from engine.local import mlx_import

        mlx_import()
        from mlx_lm.utils import load_model, load_tokenizer

        report("reading", 0.1)
        model, config = load_model(Path(info.path))
        report("tokenizer", 0.8)
        tokenizer = load_tokenizer(Path(info.path), eos_token_ids=config.get("eos_token_id"))
        report("done", 1.0)
        return model, tokenizer

    def unload(self, model_id: str) -> bool:
        loaded = self._loaded.pop(model_id, None)
        if loaded is None:
            return False
        # Its batch and prompt caches reference the weights and are worth nothing without them.
        self._on_unload(model_id)
        self._cache.drop_model(model_id)
        del loaded
        import mlx.core as mx

        mx.clear_cache()
        self._publish()
        return True

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    def model_bytes(self) -> int:
        return sum(m.bytes for m in self._loaded.values())

    def used_bytes(self) -> int:
        return self.model_bytes() + self._cache.nbytes

    def cache_room(self) -> int:
        """Bytes the stored prompt caches may take: the budget left over by the models, at most the
        prompt_cache_bytes setting."""
        return max(0, min(self._cache.limit_bytes, self.config.memory_budget_bytes - self.model_bytes()))

    def snapshot(self, blas: str) -> MemorySnapshot:
        """The current numbers, read on the MLX thread (other threads use LocalEngine.memory())."""
        loaded = [LoadedModelInfo(m.info.id, m.bytes, m.loaded_at, m.last_used) for m in self._loaded.values()]
        return MemorySnapshot(loaded, self.used_bytes(), self.config.memory_budget_bytes, blas,
                              self._cache.nbytes, self._cache.entries, self._cache.limit_bytes)

    def _publish(self) -> None:
        loaded = tuple(LoadedModelInfo(m.info.id, m.bytes, m.loaded_at, m.last_used) for m in self._loaded.values())
        self.published = ModelsSnapshot(loaded, sum(m.bytes for m in loaded))
