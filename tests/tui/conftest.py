"""TUI test fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_time_zone() -> Iterator[None]:
    """tui.screenshots.fixed_app() pins TZ=UTC so clock text is stable; later tests get the machine's zone back."""
    before = os.environ.get("TZ")
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()
