"""Workbench: everything a front end needs, built from one AppConfig (no globals, no MLX import)."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from engine.cloud import default_base_url
from engine.local.engine import LocalEngine
from engine.types import Backend, BackendSnapshot, BreakerEvent
from router.config import AppConfig
from router.events import BackendsChanged, BreakerChanged, EventBus
from router.router import Router
from router.secrets import Secrets
from router.store import BackendRecord, Store

log = logging.getLogger(__name__)

CLOUD_SETTINGS = ("retries", "backoff_factor", "max_backoff_wait", "connect_timeout", "first_byte_timeout",
                  "idle_timeout", "total_timeout", "fail_max", "reset_timeout", "extra_headers", "default_model")


def cloud_config(rec: BackendRecord) -> Any:
    from engine.cloud.base import CloudConfig

    known = {f.name for f in fields(CloudConfig)}
    settings = {k: v for k, v in rec.settings.items() if k in known}
    base_url = rec.base_url or default_base_url(rec.kind) or ""
    return CloudConfig(name=rec.name, kind=rec.kind, base_url=base_url, **settings)


class Workbench:
    def __init__(self, config: AppConfig, store: Store, secrets: Secrets | None = None,
                 local: LocalEngine | None = None) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets or Secrets()
        self.events = EventBus()
        self.local = local or LocalEngine(config.engine)
        self._cloud: dict[str, tuple[tuple[Any, ...], Backend]] = {}
        self._token: Any = None
        self._backends: dict[str, Backend] = {"local": self.local}
        self.backend_errors: dict[str, str] = {}
        self.router = Router(store, self.backends, self.events, default_backend=config.default_backend,
                             log_prompts=config.log_prompts)

    @classmethod
    def open(cls, config: AppConfig, **kw: Any) -> "Workbench":
        store = Store.open(config.database, log_prompts=config.log_prompts, max_rows=config.request_log_max_rows,
                           max_age_days=config.request_log_max_age_days)
        return cls(config, store, **kw)

    def _publish_breaker(self, event: BreakerEvent) -> None:
        self.events.publish(BreakerChanged(event))

    def backends(self) -> dict[str, Backend]:
        """"local" plus the cloud backends in the store; rebuilt only when the store changed, and a
        backend whose settings and key did not change keeps its client and breaker."""
        token = self.store.change_token()
        if token == self._token:
            return self._backends
        self._token = token
        from engine.cloud import make_cloud_backend

        fresh: dict[str, tuple[tuple[Any, ...], Backend]] = {}
        errors: dict[str, str] = {}
        for rec in self.store.list_backends():
            if not rec.enabled:
                continue
            key = self.secrets.get(rec.name)
            ident = (rec.kind, rec.base_url, repr(sorted(rec.settings.items())), hash(key))
            old = self._cloud.get(rec.name)
            if old is not None and old[0] == ident:
                fresh[rec.name] = old
                continue
            try:
                backend = make_cloud_backend(cloud_config(rec), key, listeners=[self._publish_breaker])
            except ValueError as exc:
                errors[rec.name] = str(exc)
                log.warning("backend %s is misconfigured: %s", rec.name, exc)
                continue
            fresh[rec.name] = (ident, backend)
        stale = [b for name, (ident, b) in self._cloud.items() if fresh.get(name, (None, None))[1] is not b]
        self._cloud = fresh
        self.backend_errors = errors
        self._backends = {"local": self.local, **{n: b for n, (_, b) in fresh.items()}}
        for b in stale:
            self._close_later(b)
        self.events.publish(BackendsChanged())
        return self._backends

    def _close_later(self, backend: Backend) -> None:
        import asyncio

        try:
            asyncio.get_running_loop().create_task(backend.aclose())
        except RuntimeError:
            log.debug("no running loop: %s's client is dropped with its connection pool", backend.name)

    def refresh_keys(self) -> None:
        """A key changed in keyring (not visible to change_token): rebuild on next use."""
        self._token = None

    def snapshots(self) -> list[BackendSnapshot]:
        return [b.snapshot() for b in self.backends().values()]

    def reset_breaker(self, name: str) -> None:
        backend = self.backends().get(name)
        if backend is None or not hasattr(backend, "reset_breaker"):
            raise KeyError(f"no cloud backend named {name!r}")
        backend.reset_breaker()

    def trip_breaker(self, name: str) -> None:
        backend = self.backends().get(name)
        if backend is None or not hasattr(backend, "trip_breaker"):
            raise KeyError(f"no cloud backend named {name!r}")
        backend.trip_breaker()

    async def aclose(self) -> None:
        for _, b in self._cloud.values():
            await b.aclose()
        self._cloud = {}
        await self.local.aclose()
        self.store.close()
