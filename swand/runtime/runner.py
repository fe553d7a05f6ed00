"""A bounded-frequency runner: the single writer behind every reconciler.

Watchers (VICI events, RTNL events, SIGHUP, timers) never act themselves; they `poke()` a
runner, which runs its pass no more often than `min_interval`, at least every
`max_interval` (jittered, so a fleet of gateways does not resync in step), and after a
failure retries with exponential backoff, marking the next pass as full. This is the shape
of kube-proxy's BoundedFrequencyRunner.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from swand.clock import SYSTEM_CLOCK, Clock
from swand.core.backoff import Backoff
from swand.log import get_logger

log = get_logger("swand.runner")


@dataclass
class PassRequest:
    """What the next pass has been asked to do; requests merge until the pass runs."""

    reasons: set[str] = field(default_factory=set)
    full: bool = False

    def merge(self, reason: str, full: bool) -> None:
        self.reasons.add(reason)
        self.full = self.full or full


PassFunction = Callable[[PassRequest], Awaitable[None]]


class BoundedFrequencyRunner:
    """Runs `pass_fn` on demand, rate limited, periodically, with backoff on failure."""

    def __init__(
        self,
        name: str,
        pass_fn: PassFunction,
        *,
        min_interval: float = 0.2,
        max_interval: float = 10.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        jitter: float = 0.1,
        max_busy: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self.name = name
        #: the largest share of a core passes may use while pokes keep coming: a pass
        #: that used 0.2 s of CPU (20,000 legacy rules, each commit a whole table) is
        #: followed by 0.2 s without one, so a gateway churning 200 SAs a second spends
        #: half a core on its firewall instead of all of it, and its rules lag by one
        #: pass more. Counted in the process's CPU time over the pass (at most its wall
        #: time), not its wall time: in a reconnect storm a pass of 1,000 SAs takes
        #: 0.1-0.6 s waiting for a core among busy charons while using a fraction of
        #: that, and spacing by the wait would hold every rule back by as much again.
        #: A failed pass retries on the backoff's schedule instead.
        self.max_busy = max_busy
        self._cpu_time = cpu_time
        self._last_busy = 0.0
        self._pass_fn = pass_fn
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.jitter = jitter
        self.clock = clock
        self.backoff = Backoff(backoff_initial, backoff_max, jitter=jitter)
        self._pending: PassRequest | None = None
        self._wake = asyncio.Event()
        self._last_start = float("-inf")
        self.passes = 0
        self.failed_passes = 0
        self.last_success: float | None = None
        self._idle = asyncio.Event()

    def poke(self, reason: str, *, full: bool = False) -> None:
        """Ask for a pass soon. Safe to call from any coroutine; never blocks."""
        if self._pending is None:
            self._pending = PassRequest()
        self._pending.merge(reason, full)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Return once no pass is pending or running (for tests and start-up ordering)."""
        await self._idle.wait()

    def _periodic_delay(self) -> float:
        return self.max_interval * (1 + random.uniform(-self.jitter, self.jitter))

    async def run(self) -> None:
        """Loop forever; cancel the task to stop (a running pass is cancelled too)."""
        while True:
            # after a failure the retry is already pending: only success waits here
            if self._pending is None:
                self._idle.set()
                if not await self.clock.wait_any([self._wake], self._periodic_delay()):
                    self.poke("periodic")
            self._wake.clear()
            spacing = max(self.min_interval, self._last_busy / self.max_busy)
            wait = self._last_start + spacing - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)
            request, self._pending = self._pending or PassRequest({"periodic"}), None
            self._last_start = self.clock.monotonic()
            cpu_at_start = self._cpu_time()
            self.passes += 1
            try:
                await self._pass_fn(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one failed pass must never kill the daemon
                self.failed_passes += 1
                self._last_busy = 0.0  # a failure retries on the backoff's schedule
                retry_in = self.backoff.next_delay()
                log.error(
                    "pass failed", runner=self.name, reasons=sorted(request.reasons),
                    error=str(exc), error_type=type(exc).__name__,
                    retry_in=round(retry_in, 2),
                )
                # the next pass re-reads everything: a failure may have left us unsure
                if self._pending is None:
                    self._pending = PassRequest()
                self._pending.merge("retry", True)
                await self.clock.sleep(retry_in)
            else:
                self._last_busy = min(self.clock.monotonic() - self._last_start,
                                      self._cpu_time() - cpu_at_start)
                self.backoff.reset()
                self.last_success = self.clock.time()
