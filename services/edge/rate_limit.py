"""A per-connection token bucket: a frame costs its op count (PROTOCOL.md 1.5)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a charge larger than ``burst`` is clamped to it
    (so one huge frame drains the bucket rather than being refused outright)."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def try_take(self, cost: float) -> bool:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        cost = min(cost, self.burst)
        if cost > tokens:
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True

    @property
    def tokens(self) -> float:
        return self._tokens
