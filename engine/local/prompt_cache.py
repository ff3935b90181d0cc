"""The KV caches of recent sequences, per loaded model, so a follow-up turn prefills only what is new.

Every front end sends the whole conversation each turn. A finished answer leaves its sequence's
cache (prompt + answer tokens) here; the next request on the same model starts from the longest
cached prefix of its tokens (trimming an entry that runs past the shared part) and prefills only
the rest. Built on mlx-lm's own `LRUPromptCache` (a token trie with an LRU order and a byte count),
one per model so that unloading a model drops exactly its caches; the byte limit is global and the
least recently used model's entries go first.

Only the MLX thread touches this object (generation.MLXWorker); others read published snapshots.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Entries per model; the byte limit is what binds in practice (a new turn replaces its prefixes).
MAX_ENTRIES_PER_MODEL = 64


@dataclass
class CacheHit:
    """Where a request starts: a cache covering `cached` tokens (None: from scratch), then `rest`."""

    cache: list[Any] | None
    rest: list[int]
    cached: int


@dataclass(frozen=True)
class CacheStats:
    nbytes: int = 0
    entries: int = 0


class PromptCacheStore:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = max(0, int(limit_bytes))
        self._by_model: OrderedDict[str, Any] = OrderedDict()  # model id -> LRUPromptCache, LRU first
        # Replaced after every change: what other threads read.
        self.published = CacheStats()

    def _publish(self) -> None:
        self.published = CacheStats(self.nbytes, self.entries)

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    @property
    def nbytes(self) -> int:
        return sum(lru.nbytes for lru in self._by_model.values())

    @property
    def entries(self) -> int:
        return sum(len(lru) for lru in self._by_model.values())

    def fetch(self, model_id: str, tokens: list[int]) -> CacheHit:
        """A private copy of the nearest cache for `tokens` (never the stored entry itself)."""
        lru = self._by_model.get(model_id) if self.enabled else None
        if lru is None or not tokens:
            return CacheHit(None, list(tokens), 0)
        self._by_model.move_to_end(model_id)
        cache, rest = lru.fetch_nearest_cache(model_id, list(tokens))
        if cache is None:
            return CacheHit(None, list(tokens), 0)
        if not rest:
            # An exact match: the generator needs at least one token to feed, so give back the last.
            from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

            if not can_trim_prompt_cache(cache):
                return CacheHit(None, list(tokens), 0)
            trim_prompt_cache(cache, 1)
            rest = list(tokens[-1:])
        return CacheHit(cache, list(rest), len(tokens) - len(rest))

    def insert(self, model_id: str, tokens: list[int], cache: list[Any]) -> None:
        """Keep `cache`, which holds exactly `tokens`; then evict down to the byte limit."""
        if not self.enabled or not tokens or not cache:
            return
        from mlx_lm.models.cache import LRUPromptCache

        lru = self._by_model.get(model_id)
        if lru is None:
            lru = self._by_model[model_id] = LRUPromptCache(max_size=MAX_ENTRIES_PER_MODEL)
        lru.insert_cache(model_id, list(tokens), cache)
        self._by_model.move_to_end(model_id)
        self.trim_to(self.limit_bytes)
        self._publish()

    def trim_to(self, n_bytes: int) -> int:
        """Evict least recently used entries, the least recently used model's first, until at most
        `n_bytes` remain. Returns the bytes freed."""
        before = self.nbytes
        for model_id in list(self._by_model):
            excess = self.nbytes - max(0, n_bytes)
            if excess <= 0:
                break
            lru = self._by_model[model_id]
            lru.trim_to(n_bytes=max(0, lru.nbytes - excess))
            if len(lru) == 0:
                del self._by_model[model_id]
        self._publish()
        return before - self.nbytes

    def drop_model(self, model_id: str) -> None:
        """Forget a model's caches (it was unloaded: they are worth nothing without it)."""
        self._by_model.pop(model_id, None)
        self._publish()

    def clear(self) -> None:
        self._by_model.clear()
        self._publish()
