"""NdpProxyReconciler: one NDP proxy entry on the IPv6 egress per leased IPv6 address
(``[ipv6] mode = "routed"``), while its SA is up and not a moment longer.

The same shape as the firewall reconciler: watchers only `poke()` (SA events, charon
coming back, the egress moving); a `BoundedFrequencyRunner` runs passes with a minimum
interval, a retry backoff and a periodic full pass (``[firewall] interval``) that
repairs drift (an entry someone deleted, one someone left behind with swand's mark). A
pass reads the leases from ``list-sas``, computes the desired entries with the pure core
(`swand.core.leases`), reads swand's entries from the kernel and writes only the
difference.

Failure is static, as for the firewall: a pass that cannot read charon (it crashed)
changes nothing, and the first pass after charon is back -- when it holds no SAs --
removes every entry. `stop()` leaves the entries: clients stay reachable while swand
restarts, and the next start adopts them (they carry swand's protocol mark).

Composition (the daemon)::

    ndp = NdpProxyReconciler(cfg, lease_snapshot(ViciSession(uri)))
    await ndp.start()
    ndp.poke("sa-event")     # from the SA event watcher, charon-up, config changes
    await ndp.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from swand.config import SwandConfig
from swand.core.firewall import held_child_sas, ike_sas_settling
from swand.core.leases import (
    Lease,
    NdpProxy,
    desired_ndp_proxies,
    leases_from_vici,
    plan_objects,
)
from swand.log import get_logger
from swand.runtime.firewall import SETTLE_HOLD, effective_egress6
from swand.runtime.runner import BoundedFrequencyRunner, PassRequest
from swand.runtime.untrusted import report_unparsable

log = get_logger("swand.ndp")


@dataclass(frozen=True)
class LeaseSnapshot:
    leases: tuple[Lease, ...] = ()
    #: IKE_SAs whose virtual IPs could not be read (skipped; logged and counted once by
    #: `report_unparsable`)
    skipped: int = 0
    #: an IKE_SA is mid-rekey or deleting: a lease missing now may be moving
    settling: bool = False


LeaseSnapshotFn = Callable[[], Awaitable[LeaseSnapshot]]


def lease_snapshot(session: Any) -> LeaseSnapshotFn:
    """Leases from ``list-sas`` over a `swand.adapters.vici.ViciSession` (blocking, as
    the firewall's: `noblock` would skip an IKE_SA in an exchange and drop its entry)."""

    async def snapshot() -> LeaseSnapshot:
        events, _ = await session.streamed("list-sas", "list-sa")
        read = leases_from_vici(events, report_unparsable)
        return LeaseSnapshot(read.leases, read.skipped, ike_sas_settling(events))

    return snapshot


@dataclass(frozen=True)
class NdpReport:
    ok: bool
    egress6: str | None = None
    entries: int = 0
    added: int = 0
    removed: int = 0
    skipped: int = 0
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NdpProxyReconciler:
    """The single writer of swand's NDP proxy entries (see the module docstring)."""

    def __init__(
        self,
        cfg: SwandConfig,
        snapshot: LeaseSnapshotFn,
        *,
        table: Any = None,
        net_state: Callable[[], Awaitable[Any]] | None = None,
        min_interval: float = 0.2,
        interval: float | None = None,
        on_report: Callable[[NdpReport, PassRequest], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._snapshot = snapshot
        if table is None:
            from swand.adapters.ndp_proxy import NdpProxyTable

            table = NdpProxyTable()
        self._table = table
        self._net_state = net_state
        self._on_report = on_report
        self._egress6: str | None = None
        self._net_task: asyncio.Task[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._seen: dict[Lease, float] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        every = interval or cfg.firewall.interval
        self.runner = BoundedFrequencyRunner(
            "ndp-proxy", self._pass, min_interval=min_interval, max_interval=every,
            backoff_initial=0.25, backoff_max=min(5.0, every))
        self.last_report: NdpReport | None = None
        self.last_desired: frozenset[NdpProxy] = frozenset()

    async def start(self) -> None:
        if self._net_state is None:
            from swand.adapters.netlink import NetlinkWatcher

            watcher = NetlinkWatcher()
            watcher.add_callback(self._on_net)
            self._net_task = asyncio.create_task(watcher.run(), name="ndp-egress-watcher")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.ready.wait(), 5.0)
        self._task = asyncio.create_task(self.runner.run(), name="ndp-proxy-runner")
        self.poke("start", full=True)

    async def stop(self) -> None:
        """Stop reconciling; the entries stay (adopted by the next start)."""
        for task in (self._task, self._net_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._net_task = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        await self._table.close()

    def poke(self, reason: str = "poke", *, full: bool = False) -> None:
        self.runner.poke(reason, full=full)

    async def wait_idle(self) -> None:
        await self.runner.wait_idle()

    def _on_net(self, state: Any) -> None:
        egress6 = effective_egress6(self.cfg, state)
        if egress6 != self._egress6:
            self._egress6 = egress6
            self.poke("netlink")

    async def _pass(self, request: PassRequest) -> None:
        started = time.perf_counter()
        try:
            report = await self._reconcile(started)
        except Exception as exc:
            self.last_report = NdpReport(ok=False, egress6=self._egress6, error=str(exc),
                                         seconds=time.perf_counter() - started)
            if self._on_report is not None:
                self._on_report(self.last_report, request)
            raise
        self.last_report = report
        if self._on_report is not None:
            self._on_report(report, request)
        if report.added or report.removed:
            log.info("ndp proxies reconciled", reasons=sorted(request.reasons),
                     **{k: v for k, v in report.as_dict().items() if k not in ("ok", "error")})
        else:
            log.debug("ndp proxies unchanged", entries=report.entries)

    async def _reconcile(self, started: float) -> NdpReport:
        if self._net_state is not None:
            self._egress6 = effective_egress6(self.cfg, await self._net_state())
        snap = await self._snapshot()
        now = time.monotonic()
        seen = held_child_sas(snap.leases, self._seen, now, settling=snap.settling,
                              hold=SETTLE_HOLD)
        if len(seen) > len(snap.leases):
            self._poke_later(SETTLE_HOLD)
        desired = desired_ndp_proxies(seen, self._egress6)
        plan = plan_objects(desired, await self._table.read())
        applied = await self._table.apply(plan)
        self._seen = seen
        self.last_desired = desired
        return NdpReport(ok=True, egress6=self._egress6, entries=len(desired),
                         added=applied.added, removed=applied.removed,
                         skipped=applied.skipped, seconds=time.perf_counter() - started)

    def _poke_later(self, delay: float) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = asyncio.get_running_loop().call_later(
            delay, self.poke, "settling")
