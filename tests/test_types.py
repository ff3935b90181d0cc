"""engine/types.py helpers shared by every backend."""

from __future__ import annotations

import pytest

from engine.types import percentile

HUNDRED = [float(n) for n in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose


@pytest.mark.parametrize(
    "values,q,expected",
    [
        ([], 0.5, None),
        ([7.0], 0.99, 7.0),
        (HUNDRED, 0.50, 50.0),
        (HUNDRED, 0.95, 95.0),
        (HUNDRED, 0.99, 99.0),
        (HUNDRED, 1.0, 100.0),
        (HUNDRED, 0.0, 1.0),
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.76, 4.0),
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
