"""LeaseReconciler: the plumbing shared by the reconcilers that keep one kernel object per
leased address (the NDP proxy entries of `swand.runtime.ndp`, the routes of
`swand.runtime.routes`).

Both have the firewall's shape: watchers only `poke()`; a `BoundedFrequencyRunner` runs
passes with a minimum interval, a retry backoff and a periodic full pass that repairs
drift; a lease that vanishes from a ``list-sas`` snapshot while its IKE_SA settles
(rekey, delete) is held for `SETTLE_HOLD` and a pass is poked when the hold ends (the
event table's snapshots never settle: `swand.runtime.sa_table`); `stop()` leaves the kernel objects
for the next start to adopt. That part is written once here. A subclass says only what
differs: how a pass reads and writes (`_reconcile`, over its adapter and the pure core's
desired-state function), which RTNL changes matter (`_net_changed`), what a failed pass
reports (`_failure`) and what it logs (`_log_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from swand.clock import SYSTEM_CLOCK, Clock, TimerHandle
from swand.core.firewall import held_child_sas
from swand.core.leases import Lease
from swand.runtime.firewall import SETTLE_HOLD
from swand.runtime.runner import BoundedFrequencyRunner, PassRequest

ReportT = TypeVar("ReportT")


class LeaseReconciler(Generic[ReportT]):
    """Runner, start/stop, poke, settle hold and report delivery for a per-lease writer."""

    def __init__(
        self,
        name: str,
        *,
        adapter: Any,
        net_state: Callable[[], Awaitable[Any]] | None,
        min_interval: float,
        interval: float,
        on_report: Callable[[ReportT, PassRequest], None] | None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self._adapter = adapter
        self._net_state = net_state
        self._on_report = on_report
        self._clock = clock
        #: leases with a kernel object, and when `list-sas` last listed each
        self._seen: dict[Lease, float] = {}
        self._settle_timer: TimerHandle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.runner = BoundedFrequencyRunner(
            name, self._pass, min_interval=min_interval, max_interval=interval,
            backoff_initial=0.25, backoff_max=min(5.0, interval), clock=clock)
        self.last_report: ReportT | None = None

    # -- what a subclass says ----------------------------------------------------------

    async def _reconcile(self, started: float) -> ReportT:
        raise NotImplementedError

    def _net_changed(self, state: Any) -> bool:
        """Remember the RTNL `state`; True when it changes what a pass would write."""
        raise NotImplementedError

    def _failure(self, error: str, seconds: float) -> ReportT:
        raise NotImplementedError

    def _log_report(self, report: ReportT, request: PassRequest) -> None:
        raise NotImplementedError

    # -- the shared plumbing -----------------------------------------------------------

    async def start(self) -> None:
        if self._net_state is None:
            from swand.adapters.netlink import NetlinkWatcher  # pyroute2: only when used

            watcher = NetlinkWatcher()
            watcher.add_callback(self._on_net)
            self._tasks.append(asyncio.create_task(watcher.run(), name=f"{self.name}-netlink"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.ready.wait(), 5.0)
        self._tasks.append(asyncio.create_task(self.runner.run(), name=f"{self.name}-runner"))
        self.poke("start", full=True)

    async def stop(self) -> None:
        """Stop reconciling; the kernel objects stay (adopted by the next start)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        await self._adapter.close()

    def poke(self, reason: str = "poke", *, full: bool = False) -> None:
        self.runner.poke(reason, full=full)

    async def wait_idle(self) -> None:
        await self.runner.wait_idle()

    async def run_once(self) -> ReportT:
        """One pass now (tests, one-shot use); raises on failure, changing nothing."""
        await self._pass(PassRequest({"once"}, True))
        assert self.last_report is not None
        return self.last_report

    def _on_net(self, state: Any) -> None:
        if self._net_changed(state):
            self.poke("netlink")

    async def _pass(self, request: PassRequest) -> None:
        started = time.perf_counter()
        try:
            report = await self._reconcile(started)
        except Exception as exc:
            report = self._failure(str(exc), time.perf_counter() - started)
            self._deliver(report, request)
            raise
        self._deliver(report, request)
        self._log_report(report, request)

    def _deliver(self, report: ReportT, request: PassRequest) -> None:
        self.last_report = report
        if self._on_report is not None:
            self._on_report(report, request)

    def _hold(self, leases: Iterable[Lease], *, settling: bool) -> dict[Lease, float]:
        """The leases to keep: those listed now, plus those an IKE_SA's settling hides
        (for `SETTLE_HOLD`; a pass is poked when the hold ends). The caller stores the
        result in `_seen` once its pass has written it."""
        listed = tuple(leases)
        seen = held_child_sas(listed, self._seen, self._clock.monotonic(), settling=settling,
                              hold=SETTLE_HOLD)
        if len(seen) > len(listed):
            self._poke_later(SETTLE_HOLD, "settling")
        return seen

    def _poke_later(self, delay: float, reason: str) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = self._clock.call_later(delay, lambda: self.poke(reason))
