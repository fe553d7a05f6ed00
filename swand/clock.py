"""The clock, injected wherever swand decides something by time.

The runner (rate limit, periodic pass, retry), keepalive (grace periods, backoff, the
network settle), the firewall's settle hold and the watchers' backoff read time and wait
only through a `Clock`. The daemon uses `SystemClock` (the monotonic clock and the
event loop's timers); unit tests pass a `FakeClock` and move time with `advance()`, so
"still settling 20 ms into a 50 ms settle" is a fact of the test, not a race with the
machine's load, and no unit test sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time as swand's asyncio code sees it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (reported timestamps only)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    async def wait_any(self, events: Sequence[asyncio.Event], timeout: float | None) -> bool:
        """Wait until one of `events` is set (True) or `timeout` passes (False)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Call `callback` (on the event loop) after `delay` seconds."""
        ...


class SystemClock:
    """Real time: `time.monotonic`, `time.time` and the running event loop's timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_any(self, events: Sequence[asyncio.Event], timeout: float | None) -> bool:
        if any(e.is_set() for e in events):
            return True
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return bool(done)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)


SYSTEM_CLOCK = SystemClock()


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FakeClock:
    """A clock that moves only when a test says so (`advance`); for unit tests.

    Timers and sleeps fire in time order while `advance` passes their deadline, and the
    event loop runs what they woke before time moves on. Work on other threads (a
    firewall backend, `asyncio.to_thread`) is not waited for: wait on a condition."""

    #: rounds of the event loop `advance` lets run after each timer (a woken task, the
    #: task it wakes, ...); plenty for swand's chains of events
    LOOP_ROUNDS = 50

    def __init__(self, start: float = 1000.0, epoch: float = 1_800_000_000.0) -> None:
        self._now = start
        self._epoch = epoch - start
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._epoch

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        timer = _Timer(self._now + max(delay, 0.0), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, lambda: _resolve(done))
        try:
            await done
        finally:
            timer.cancel()

    async def wait_any(self, events: Sequence[asyncio.Event], timeout: float | None) -> bool:
        if any(e.is_set() for e in events):
            return True
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        timed_out = asyncio.get_running_loop().create_future()
        timer = None if timeout is None else self.call_later(
            timeout, lambda: _resolve(timed_out))
        try:
            await asyncio.wait([*waiters, timed_out], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            timed_out.cancel()
            if timer is not None:
                timer.cancel()
        return any(e.is_set() for e in events)

    def pending(self) -> list[float]:
        """Deadlines of the timers not yet fired (soonest first), relative to now."""
        return sorted(t.when - self._now for t in self._timers if not t.cancelled)

    async def run_loop(self) -> None:
        """Let the event loop run what is ready, without moving time."""
        for _ in range(self.LOOP_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing each timer due on the way at its own
        time and letting the loop run after it."""
        target = self._now + seconds
        await self.run_loop()
        while self._timers and self._timers[0].when <= target:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            timer.callback()
            await self.run_loop()
        self._now = target
        await self.run_loop()
