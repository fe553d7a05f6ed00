"""Exponential backoff: the one rule every retry loop in swand follows.

`initial` seconds, doubling after each failure up to `cap`, each delay multiplied by a
random factor in ``1 ± jitter`` so a fleet of gateways (or the watchers of one daemon)
do not retry in step after a shared outage. `reset()` after a success. Pure: the caller
sleeps (on its injected clock, or `time.sleep` on a worker thread).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for consecutive failures: ``next_delay()`` per failure, ``reset()`` after a
    success. `rand(a, b)` picks the jitter factor (injectable for tests)."""

    initial: float
    cap: float
    jitter: float = 0.0
    rand: Callable[[float, float], float] = field(default=random.uniform, repr=False)
    #: failures since the last reset (the next delay is initial * 2**failures)
    failures: int = 0

    def __post_init__(self) -> None:
        if not self.initial > 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff needs 0 < initial and 0 <= jitter < 1: {self}")

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        # min() first: 2**failures must not overflow a float after a long outage
        delay = min(self.cap, self.initial * 2.0 ** min(self.failures, 64))
        self.failures += 1
        if self.jitter:
            delay *= self.rand(1.0 - self.jitter, 1.0 + self.jitter)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits `initial` again."""
        self.failures = 0
