"""Workbench: everything a front end needs, built from one AppConfig (no globals, no MLX import)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

from engine.cloud import default_base_url
from engine.local.blas import reference_blas_notice
from engine.local.engine import LocalEngine
from engine.types import Backend, BackendSnapshot, BreakerEvent
from router.breakers import SQLiteBreakerStates
from router.config import AppConfig
from router.events import BackendsChanged, BreakerChanged, EventBus
from router.router import Router
from router.secrets import Secrets
from router.store import BackendRecord, Store

if TYPE_CHECKING:
    from engine.cloud import CloudKind
    from engine.cloud.base import CloudConfig

log = logging.getLogger(__name__)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def cloud_config(rec: BackendRecord) -> CloudConfig:
    from engine.cloud.base import CloudConfig

    known = {f.name for f in fields(CloudConfig)}
    settings = {k: v for k, v in rec.settings.items() if k in known}
    base_url = rec.base_url or default_base_url(rec.kind) or ""
    # The stored kind is any string; CloudConfig refuses one that is not a CloudKind.
    return CloudConfig(name=rec.name, kind=cast("CloudKind", rec.kind), base_url=base_url, **settings)


class Workbench:
    def __init__(
        self, config: AppConfig, store: Store, secrets: Secrets | None = None, local: LocalEngine | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets or Secrets()
        self.events = EventBus()
        self.local = local or LocalEngine(config.engine)
        self._cloud: dict[str, tuple[tuple[Any, ...], Backend]] = {}
        self._token: Any = None
        self._backends: dict[str, Backend] = {"local": self.local}
        self._enabled: list[str] = []  # enabled cloud backends as of self._token
        self._keys: dict[str, str | None] = {}
        self._keys_stale = False
        self._key_fetch: asyncio.Task[None] | None = None
        # What a front end says once at start (found here, before any event loop runs).
        blas = reference_blas_notice(config.engine.use_system_openblas)
        self.notices: list[str] = [*store.notices, *([blas] if blas else [])]
        self.breakers = SQLiteBreakerStates(store, on_failed=self.events.publish)
        self.router = Router(
            store,
            self.backends,
            self.events,
            default_backend=config.default_backend,
            log_prompts=config.log_prompts,
            prepare=self.prepare,
            breaker_states=self.breaker_states,
        )

    @classmethod
    def open(cls, config: AppConfig, **kw: Any) -> Workbench:
        store = Store.open(
            config.database,
            log_prompts=config.log_prompts,
            max_rows=config.request_log_max_rows,
            max_age_days=config.request_log_max_age_days,
        )
        return cls(config, store, **kw)

    def _publish_breaker(self, event: BreakerEvent) -> None:
        self.events.publish(BreakerChanged(event))

    def backends(self) -> dict[str, Backend]:
        """ "local" plus the cloud backends in the store; rebuilt only when the store changed, and a
        backend whose settings and key did not change keeps its client and breaker.

        Keys come from a cache filled off the event loop (a keyring look-up can block for long): on
        the loop a backend whose key is not fetched yet joins when the look-up ends (`prepare()`
        waits for it); without a running loop (the CLI) keys are read right here."""
        token = self.store.change_token()
        if token == self._token:
            return self._backends
        self._token = token
        records = [r for r in self.store.list_backends() if r.enabled]
        self._enabled = [r.name for r in records]
        wanted = [r.name for r in records if self._keys_stale or r.name not in self._keys]
        if wanted and self._key_fetch is None:
            if _loop_running():
                self._key_fetch = asyncio.get_running_loop().create_task(self._fetch_keys(wanted))
            else:
                self._keys.update(self._read_keys(wanted))
            self._keys_stale = False
        self._rebuild([r for r in records if r.name in self._keys])
        return self._backends

    def _read_keys(self, names: list[str]) -> dict[str, str | None]:
        return {name: self.secrets.get(name) for name in names}

    async def _fetch_keys(self, names: list[str]) -> None:
        try:
            found = await asyncio.to_thread(self._read_keys, names)
        finally:
            self._key_fetch = None
        self._keys.update(found)
        self._token = None
        self.backends()

    async def prepare(self) -> bool:
        """Wait for key look-ups in flight (off the loop); True if the backends were rebuilt."""
        changed = False
        self.backends()
        while self._key_fetch is not None:
            await asyncio.shield(self._key_fetch)
            changed = True
            self.backends()
        return changed

    def _rebuild(self, records: list[BackendRecord]) -> None:
        from engine.cloud import make_cloud_backend

        fresh: dict[str, tuple[tuple[Any, ...], Backend]] = {}
        for rec in records:
            key = self._keys.get(rec.name)
            ident = (rec.kind, rec.base_url, repr(sorted(rec.settings.items())), hash(key))
            old = self._cloud.get(rec.name)
            if old is not None and old[0] == ident:
                fresh[rec.name] = old
                continue
            try:
                backend = make_cloud_backend(
                    cloud_config(rec), key, listeners=[self._publish_breaker], breaker_states=self.breakers
                )
            except ValueError as exc:
                log.warning("backend %s is misconfigured: %s", rec.name, exc)
                continue
            fresh[rec.name] = (ident, backend)
        stale = [b for name, (_, b) in self._cloud.items() if fresh.get(name, (None, None))[1] is not b]
        changed = bool(stale) or fresh.keys() != self._cloud.keys()
        self._cloud = fresh
        self._backends = {"local": self.local, **{n: b for n, (_, b) in fresh.items()}}
        for b in stale:
            self._close_later(b)
        if changed:
            self.events.publish(BackendsChanged())

    def _close_later(self, backend: Backend) -> None:
        try:
            asyncio.get_running_loop().create_task(backend.aclose())
        except RuntimeError:
            log.debug("no running loop: %s's client is dropped with its connection pool", backend.name)

    def refresh_keys(self) -> None:
        """A key changed in keyring (not visible to change_token): look the keys up again."""
        self._keys_stale = True
        self._token = None

    def snapshots(self) -> list[BackendSnapshot]:
        """Every backend, also one whose key look-up is still running (from its shared breaker)."""
        built = self.backends()
        snaps = [self.local.snapshot()]
        for rec in self.store.list_backends():
            if not rec.enabled:
                continue
            backend = built.get(rec.name)
            snaps.append(backend.snapshot() if backend is not None else self._stored_snapshot(rec))
        return snaps

    def _stored_snapshot(self, rec: BackendRecord) -> BackendSnapshot:
        shared = self.breakers.load(rec.name)
        return BackendSnapshot(
            name=rec.name,
            kind=rec.kind,
            state=shared.state,
            consecutive_failures=shared.failures,
            fail_max=int(rec.settings.get("fail_max", 5)),
            last_error=shared.last_error,
            last_error_at=shared.last_error_at,
        )

    def breaker_states(self) -> dict[str, str]:
        """Every backend's breaker state as all processes share it ("local" is always closed)."""
        built = self.backends()
        shared = self.breakers.states()
        states = {"local": "closed"}
        # The names backends() read at the last store change: routing asks this on every request.
        for name in self._enabled:
            backend = built.get(name)
            states[name] = getattr(backend, "breaker_state", None) or shared.get(name, "closed")
        return states

    def reset_breaker(self, name: str) -> None:
        """Close the breaker, for every process on this database."""
        backend = self._cloud_backend(name)
        if backend is not None:
            backend.reset_breaker()
        else:
            self.breakers.save(name, state="closed", failures=0)

    def trip_breaker(self, name: str) -> None:
        """Open the breaker now, for every process on this database."""
        backend = self._cloud_backend(name)
        if backend is not None:
            backend.trip_breaker()
        else:
            self.breakers.save(name, state="open", opened_at=time.time())

    def _cloud_backend(self, name: str) -> Any:
        """The built backend, None if it is stored but not built (yet); KeyError if unknown."""
        if name == "local" or self.store.get_backend(name) is None:
            raise KeyError(f"no cloud backend named {name!r}")
        return self.backends().get(name)

    def set_cloud_routing(self, on: bool) -> None:
        """Flip the cloud routing switch for every process on this database."""
        self.store.set_cloud_routing(on)
        self.router.rules()  # publishes CloudRoutingChanged here at once

    def sync(self) -> None:
        """Publish what other processes changed (rules, the cloud switch, breakers) without waiting
        for a request; cheap enough for a UI timer (a PRAGMA or two when nothing changed)."""
        self.router.rules()
        for backend in self.backends().values():
            getattr(backend, "breaker_state", None)

    async def aclose(self) -> None:
        if self._key_fetch is not None:
            self._key_fetch.cancel()
        for _, b in self._cloud.values():
            await b.aclose()
        self._cloud = {}
        await self.local.aclose()
        self.store.close()
