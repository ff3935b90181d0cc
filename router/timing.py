"""Time to first token and decode speed, measured here for every backend alike (local engine,
cloud services, any OpenAI-compatible server): from when the router took the request to the first
text, and tokens per second between the first and the last text."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from engine.types import Usage


class AnswerTimer:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.started = clock()
        self.first: float | None = None
        self.last: float | None = None
        self.pieces = 0

    def text(self) -> None:
        now = self._clock()
        if self.first is None:
            self.first = now
        self.last = now
        self.pieces += 1

    def usage(self, reported: Usage | None) -> Usage | None:
        """The backend's token counts (text pieces when it gave none) with the timings measured here."""
        if reported is None and self.first is None:
            return None
        usage = reported or Usage(completion_tokens=self.pieces)
        tokens = usage.completion_tokens or self.pieces
        ttft = None if self.first is None else self.first - self.started
        span = (self.last or 0.0) - (self.first or 0.0)
        # The first token's time is TTFT; the speed is of the tokens after it.
        tps = (tokens - 1) / span if tokens > 1 and span > 0 else None
        return replace(usage, ttft_s=ttft, tokens_per_s=tps)
