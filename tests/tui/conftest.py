"""TUI test fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_time_zone() -> Iterator[None]:
    """The fixed scenes set TZ=UTC (their clock times must not depend on the machine): put it back."""
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()
