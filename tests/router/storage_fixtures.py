"""Shared by the storage tests: a store whose writer finds the disk full, a lock held by another process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from router.store import RequestRecord, Store, StoreFullError

ROOT = Path(__file__).resolve().parents[2]


class FullDiskStore(Store):
    """A real store whose writer thread finds the disk full: its connection's PRAGMA
    max_page_count is pinned to the file's size once the room left has been used up
    (by request-log rows marked front_end="filler")."""

    @classmethod
    def attach(cls, path: str | Path, **kw: Any) -> Store:
        store = super().attach(path, **kw)
        store.db.execute(f"PRAGMA max_page_count = {store.db.execute('PRAGMA page_count').fetchone()[0]}")
        with contextlib.suppress(StoreFullError):
            for _ in range(100000):
                store.log_request(RequestRecord("filler", "canonical", "m", request_id="r" * 12))
        return store


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process inside a write transaction for `seconds` (then it commits and prints "released")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.router.storage_child", "hold", str(db), str(seconds)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "in-tx", proc.stderr.read()
    return proc
