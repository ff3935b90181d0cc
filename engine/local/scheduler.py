"""Which waiting request gets the next place in a model's batch: priority classes with aging.

At most `max_batch` sequences of a model decode together. More wait here, ordered by priority
class (high, normal, low), then arrival. Waiting ages a request: every `aging_s` seconds in the
queue count as one class up, so a low request is never starved by a steady stream of normal ones.

A high request (the person at the TUI or the CLI) never waits behind normal or low ones: when
the batch is full it is admitted anyway into a small overflow of `high_overflow(max_batch)`
places above `max_batch` that only high requests may use. Overflow was chosen over pausing a
running request because a paused sequence would have to give back its KV cache and be re-prefilled
or re-merged later; one or two extra rows in a decode step cost far less than that. Once admitted,
its prompt pauses the lower answers' decode steps until its first token (generation.py, _holders).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

PRIORITIES: tuple[str, ...] = ("high", "normal", "low")
RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
DEFAULT_AGING_S = 10.0

T = TypeVar("T")


def high_overflow(max_batch: int) -> int:
    """Places above max_batch that only high requests may take (1 for up to 7, 2 for 8, ...)."""
    return max(1, max_batch // 4)


@dataclass
class _Waiting(Generic[T]):
    item: T
    priority: str
    since: float
    seq: int


@dataclass
class AdmissionQueue(Generic[T]):
    max_batch: int = 8
    aging_s: float = DEFAULT_AGING_S
    _waiting: list[_Waiting[T]] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, item: T, priority: str, now: float) -> None:
        if priority not in RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        self._waiting.append(_Waiting(item, priority, now, next(self._counter)))

    def remove_if(self, drop: Callable[[T], bool]) -> list[T]:
        """Take out (and return) the waiting items for which `drop` is true."""
        gone = [w.item for w in self._waiting if drop(w.item)]
        if gone:
            self._waiting = [w for w in self._waiting if not drop(w.item)]
        return gone

    def items(self) -> list[T]:
        return [w.item for w in self._waiting]

    def in_order(self, now: float) -> list[T]:
        """The waiting items in the order they would be admitted (class with aging, then arrival)."""
        ranked = sorted(self._waiting, key=lambda w: (self.effective_rank(w.priority, now - w.since), w.seq))
        return [w.item for w in ranked]

    def effective_rank(self, priority: str, waited_s: float) -> float:
        return RANK[priority] - max(0.0, waited_s) / self.aging_s

    def pop_next(self, running: int, now: float) -> T | None:
        """The next item to admit given `running` sequences in the batch, or None."""
        if not self._waiting:
            return None
        if running < self.max_batch:
            best = min(self._waiting, key=lambda w: (self.effective_rank(w.priority, now - w.since), w.seq))
        elif running < self.max_batch + high_overflow(self.max_batch):
            highs = [w for w in self._waiting if w.priority == "high"]
            if not highs:
                return None
            best = min(highs, key=lambda w: w.seq)
        else:
            return None
        self._waiting.remove(best)
        return best.item
