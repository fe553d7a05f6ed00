"""NdpProxyReconciler: one NDP proxy entry on the IPv6 egress per leased IPv6 address
(``[ipv6] mode = "routed"``), while its SA is up and not a moment longer.

The same shape as the firewall reconciler (the plumbing is `LeaseReconciler`'s):
watchers only `poke()` (SA events, charon coming back, the egress moving); a runner runs
passes with a minimum interval, a retry backoff and a periodic full pass
(``[firewall] interval``) that repairs drift (an entry someone deleted, one someone
left behind with swand's mark). A pass reads the leases (the daemon's from the event
watcher's SA table, `table_lease_snapshot`; `lease_snapshot` reads ``list-sas``), computes
the desired entries with the pure core (`swand.core.leases`), reads swand's entries from
the kernel and writes only the difference.

Failure is static, as for the firewall: a pass that cannot read charon (it crashed)
changes nothing, and the first pass after charon is back -- when it holds no SAs --
removes every entry. `stop()` leaves the entries: clients stay reachable while swand
restarts, and the next start adopts them (they carry swand's protocol mark).

Composition (the daemon)::

    ndp = NdpProxyReconciler(cfg, table_lease_snapshot(charon.events))
    await ndp.start()
    ndp.poke("sa-event")     # from the SA event watcher, charon-up, config changes
    await ndp.stop()
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from swand.clock import SYSTEM_CLOCK, Clock
from swand.config import SwandConfig
from swand.core.firewall import ike_sas_settling
from swand.core.leases import (
    Lease,
    NdpProxy,
    desired_ndp_proxies,
    leases_from_vici,
    plan_objects,
)
from swand.log import get_logger
from swand.runtime.firewall import effective_egress6
from swand.runtime.lease_reconciler import LeaseReconciler
from swand.runtime.runner import PassRequest
from swand.runtime.sa_table import PerSa, SaSource, live_sas, readable_leases
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


def table_lease_snapshot(source: SaSource, *, clock: Clock = SYSTEM_CLOCK
                         ) -> LeaseSnapshotFn:
    """The daemon's leases: from the event watcher's SA table (`swand.runtime.sa_table`:
    no ``list-sas``, each IKE_SA read once per change; no settle hold needed). Waits for
    the watcher's first resync, fails the pass without it."""
    leases = PerSa(readable_leases(need_child_sa=False, component="ndp"))

    async def snapshot() -> LeaseSnapshot:
        live = await live_sas(source, clock)
        return LeaseSnapshot(leases(live), leases.skipped)

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


class NdpProxyReconciler(LeaseReconciler[NdpReport]):
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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if table is None:
            from swand.adapters.ndp_proxy import NdpProxyTable  # pyroute2: only when used

            table = NdpProxyTable()
        super().__init__("ndp-proxy", adapter=table, net_state=net_state,
                         min_interval=min_interval,
                         interval=interval or cfg.firewall.interval, on_report=on_report,
                         clock=clock)
        self.cfg = cfg
        self._snapshot = snapshot
        self._table = table
        self._egress6: str | None = None
        self.last_desired: frozenset[NdpProxy] = frozenset()

    def _net_changed(self, state: Any) -> bool:
        egress6 = effective_egress6(self.cfg, state)
        if egress6 == self._egress6:
            return False
        self._egress6 = egress6
        return True

    def _failure(self, error: str, seconds: float) -> NdpReport:
        return NdpReport(ok=False, egress6=self._egress6, error=error, seconds=seconds)

    def _log_report(self, report: NdpReport, request: PassRequest) -> None:
        if report.added or report.removed:
            log.info("ndp proxies reconciled", reasons=sorted(request.reasons),
                     **{k: v for k, v in report.as_dict().items() if k not in ("ok", "error")})
        else:
            log.debug("ndp proxies unchanged", entries=report.entries)

    async def _reconcile(self, started: float) -> NdpReport:
        if self._net_state is not None:
            self._egress6 = effective_egress6(self.cfg, await self._net_state())
        snap = await self._snapshot()
        seen = self._hold(snap.leases, settling=snap.settling)
        desired = desired_ndp_proxies(seen, self._egress6)
        plan = plan_objects(desired, await self._table.read())
        applied = await self._table.apply(plan)
        self._seen = seen
        self.last_desired = desired
        return NdpReport(ok=True, egress6=self._egress6, entries=len(desired),
                         added=applied.added, removed=applied.removed,
                         skipped=applied.skipped, seconds=time.perf_counter() - started)
