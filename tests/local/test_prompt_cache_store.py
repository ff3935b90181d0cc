"""PromptCacheStore on its own, with real mlx-lm KV caches (run on the test thread: the only MLX user)."""

from __future__ import annotations

from typing import Any

from engine.local import mlx_import
from engine.local.prompt_cache import PromptCacheStore


def kv(tokens: int, layers: int = 2) -> list[Any]:
    """A real mlx-lm KVCache holding `tokens` positions (1 head, 4 dims, float32: 32 bytes a token a layer)."""
    mx = mlx_import()
    from mlx_lm.models.cache import KVCache

    caches = []
    for _ in range(layers):
        c = KVCache()
        c.update_and_fetch(mx.zeros((1, 1, tokens, 4)), mx.zeros((1, 1, tokens, 4)))
        c.keys, c.values = c.keys[..., :tokens, :], c.values[..., :tokens, :]
        mx.eval(c.keys, c.values)
        caches.append(c)
    return caches


def test_a_follow_up_starts_from_the_longest_cached_prefix() -> None:
    store = PromptCacheStore(2**20)
    store.insert("m", [1, 2, 3, 4], kv(4))
    hit = store.fetch("m", [1, 2, 3, 4, 5, 6])
    assert (hit.cached, hit.rest) == (4, [5, 6])
    assert hit.cache is not None and hit.cache[0].offset == 4
    assert store.fetch("other-model", [1, 2, 3, 4, 5]).cached == 0


def test_a_longer_entry_is_copied_and_trimmed_never_changed() -> None:
    store = PromptCacheStore(2**20)
    store.insert("m", [1, 2, 3, 4, 5, 6], kv(6))
    hit = store.fetch("m", [1, 2, 3, 9])
    assert (hit.cached, hit.rest) == (3, [9])
    assert hit.cache is not None and hit.cache[0].offset == 3
    again = store.fetch("m", [1, 2, 3, 4, 5, 6, 7])
    assert again.cached == 6  # the stored entry kept all six positions


def test_an_exact_match_gives_back_the_last_token_to_feed() -> None:
    store = PromptCacheStore(2**20)
    store.insert("m", [1, 2, 3], kv(3))
    hit = store.fetch("m", [1, 2, 3])
    assert (hit.cached, hit.rest) == (2, [3])
    assert hit.cache is not None and hit.cache[0].offset == 2


def test_the_limit_evicts_the_least_recently_used_model_first() -> None:
    one = sum(c.nbytes for c in kv(10))
    store = PromptCacheStore(int(one * 2.5))
    store.insert("a", list(range(10)), kv(10))
    store.insert("b", list(range(100, 110)), kv(10))
    store.fetch("a", list(range(12)))  # a is used again: b is now the least recent
    store.insert("c", list(range(200, 210)), kv(10))
    assert store.nbytes <= int(one * 2.5) and store.entries == 2
    assert store.fetch("b", list(range(100, 112))).cached == 0
    assert store.fetch("a", list(range(12))).cached == 10
    assert store.published.nbytes == store.nbytes and store.published.entries == 2


def test_dropping_a_model_and_zero_bytes() -> None:
    store = PromptCacheStore(2**20)
    store.insert("a", [1, 2], kv(2))
    store.drop_model("a")
    assert (store.nbytes, store.entries, store.published.entries) == (0, 0, 0)
    off = PromptCacheStore(0)
    off.insert("a", [1, 2], kv(2))
    assert not off.enabled and off.entries == 0 and off.fetch("a", [1, 2, 3]).cached == 0
    assert store.trim_to(0) == 0
