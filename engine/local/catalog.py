"""The models the local engine knows: found on disk, looked up by id or alias.

A scan walks the model folders and the Hugging Face cache. From the event loop it runs on a
worker thread (`rescan`), one at a time: callers that wait on a scan in progress share its result.
A name still unknown after a scan is remembered for UNKNOWN_TTL_S, so a client sending made-up
names cannot make the engine walk the disk for each. A name is read as a file or folder path only
when the caller allows it (the local user, through the TUI or the CLI); a request from the network
never makes the engine touch a path it names.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from engine.config import EngineConfig
from engine.local.discovery import ModelInfo, discover, model_info_for_path
from engine.types import ModelNotFoundError, RejectedError

UNKNOWN_TTL_S = 30.0
UNKNOWN_MAX = 1024


class ModelCatalog:
    def __init__(self, config: EngineConfig, backend: str = "local",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.backend = backend
        self._clock = clock
        self._models: list[ModelInfo] | None = None
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._scans = 0
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------ listing

    def models(self) -> list[ModelInfo]:
        """The known models, scanning the disk on this thread the first time."""
        if self._models is None:
            self._set(discover(self.config))
        return list(self._models or [])

    def refresh(self) -> list[ModelInfo]:
        """Scan again on this thread (the user asked for it: forget the unknown names too)."""
        self._set(discover(self.config))
        return list(self._models or [])

    async def rescan(self) -> list[ModelInfo]:
        """Scan again on a worker thread; a caller that waited on a scan in progress takes its result."""
        seen = self._scans
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._scans == seen:
                self._set(await asyncio.to_thread(discover, self.config))
        return list(self._models or [])

    def _set(self, models: list[ModelInfo]) -> None:
        self._models = models
        self._scans += 1
        self._unknown.clear()

    def lookup(self, name: str) -> ModelInfo | None:
        """A known model by id or alias, from memory only (None before the first scan)."""
        for info in self._models or ():
            if name == info.id or name in info.aliases:
                return info
        return None

    # ------------------------------------------------------------ resolving

    def resolve(self, name: str, *, allow_paths: bool = False) -> ModelInfo:
        """A model by id or alias (or path, if allowed), scanning on this thread if needed."""
        if self._models is None:
            self.models()
        hit = self.lookup(name)
        if hit is None and not self._recently_unknown(name):
            self.refresh()
            hit = self.lookup(name)
        if hit is None and allow_paths:
            hit = self._path_info(name)
        if hit is None:
            self._remember_unknown(name)
            raise self.not_found(name)
        return hit

    async def aresolve(self, name: str, *, allow_paths: bool = False) -> ModelInfo:
        """Like resolve, with every disk access on a worker thread."""
        if self._models is None:
            await self.rescan()
        hit = self.lookup(name)
        if hit is None and not self._recently_unknown(name):
            await self.rescan()
            hit = self.lookup(name)
        if hit is None and allow_paths:
            hit = await asyncio.to_thread(self._path_info, name)
        if hit is None:
            self._remember_unknown(name)
            raise self.not_found(name)
        return hit

    def _path_info(self, name: str) -> ModelInfo | None:
        path = Path(name).expanduser()
        if not path.exists():
            return None
        try:
            return model_info_for_path(path)
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise RejectedError(f"{path} is not a usable model: {exc}", backend=self.backend) from None

    def _recently_unknown(self, name: str) -> bool:
        at = self._unknown.get(name)
        return at is not None and self._clock() - at < UNKNOWN_TTL_S

    def _remember_unknown(self, name: str) -> None:
        self._unknown[name] = self._clock()
        self._unknown.move_to_end(name)
        while len(self._unknown) > UNKNOWN_MAX:
            self._unknown.popitem(last=False)

    def not_found(self, name: str) -> ModelNotFoundError:
        models = self._models or []
        known = ", ".join(sorted({i.id for i in models} | {a for i in models for a in i.aliases}))
        return ModelNotFoundError(
            f"model {name!r} not found locally" + (f" (known: {known})" if known else
                                                  " (no local models; run `mlx-workbench models fetch-demo`)"),
            backend=self.backend,
        )
