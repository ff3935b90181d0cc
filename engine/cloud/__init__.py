"""Cloud backends over httpx with retries (httpx-retries) and a circuit breaker (pybreaker).

Importing this package is cheap: httpx and the wire-format modules load when a backend is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from engine.cloud.base import CloudBackend, CloudConfig
    from engine.cloud.breaker import BreakerStates
    from engine.types import BreakerEvent


# The kinds of cloud backend (CloudConfig.kind), in the order a form lists them.
CloudKind = Literal["openai", "anthropic", "openai-compatible"]
KINDS: tuple[str, ...] = get_args(CloudKind)

# The services' public endpoints: a backend of these kinds needs no base URL. An openai-compatible
# server (Ollama, vLLM, LM Studio, another workbench) has no such default.
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def default_base_url(kind: str) -> str | None:
    return DEFAULT_BASE_URLS.get(kind)


def make_cloud_backend(
    cfg: CloudConfig,
    api_key: str | None,
    listeners: Iterable[Callable[[BreakerEvent], None]] = (),
    breaker_states: BreakerStates | None = None,
) -> CloudBackend:
    """Build the backend for `cfg.kind` ("openai", "openai-compatible" or "anthropic"); its breaker
    keeps its shared state in `breaker_states` (default: this process's memory)."""
    backend: CloudBackend
    if cfg.kind == "anthropic":
        from engine.cloud.anthropic import AnthropicBackend

        backend = AnthropicBackend(cfg, api_key, breaker_states)
    elif cfg.kind in ("openai", "openai-compatible"):
        from engine.cloud.openai import OpenAIBackend

        backend = OpenAIBackend(cfg, api_key, breaker_states)
    else:
        raise ValueError(f"unknown cloud backend kind {cfg.kind!r}")
    for fn in listeners:
        backend.add_listener(fn)
    return backend


__all__ = ["DEFAULT_BASE_URLS", "default_base_url", "make_cloud_backend"]
