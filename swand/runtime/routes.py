"""RouteReconciler: one kernel route per leased virtual IP (``[routes]``), kept true.

Shaped like the firewall's reconciler (the plumbing is `LeaseReconciler`'s): every pass
takes the leases and charon's plugins (libipsec or kernel ESP) -- the daemon's from the
event watcher's SA table and its last resync (`table_lease_inputs`; `vici_lease_snapshot`
reads ``list-sas`` and ``stats``) --, the egress from RTNL, computes the desired routes
with the pure core (`swand.core.routes`) and lets the adapter make the owned routes (our
table, our protocol number) match — writing nothing when they already do. Watchers only
`poke()` (SA events, charon up/down); a periodic full pass (``[routes] interval``)
repairs drift: a route someone deleted comes back, a route with our protocol number that
no lease explains goes.

Unlike firewall rules, routes do *not* fail static when charon is gone: a gateway whose
charon died holds no SA, and a route left behind would keep attracting the fleet's
traffic for its clients (now on another gateway) into a black hole. When the daemon's
charon watch says charon is down (`charon_up() is False`), the pass withdraws every
owned route. A pass that merely cannot read charon (a timeout under load) changes
nothing and retries. ``stop()`` leaves the routes: charon and its SAs outlive a swand
restart, and the next start adopts what it finds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from swand.clock import SYSTEM_CLOCK, Clock
from swand.config import SwandConfig
from swand.core.firewall import (
    DEFAULT_TUNNEL_INTERFACE,
    ike_sas_settling,
    resolve_mode,
)
from swand.core.leases import Lease, leases_from_vici
from swand.core.routes import KernelRoute, desired_routes, next_hops, plan_routes
from swand.log import get_logger
from swand.runtime.firewall import SETTLE_HOLD as SETTLE_HOLD  # tests hold by it
from swand.runtime.lease_reconciler import LeaseReconciler
from swand.runtime.runner import PassRequest
from swand.runtime.sa_table import (
    PerSa,
    SaSource,
    SaTableNotReady,
    charon_plugins,
    live_sas,
    readable_leases,
)
from swand.runtime.untrusted import report_unparsable

log = get_logger("swand.routes")

@dataclass(frozen=True)
class LeaseInputs:
    """What charon says right now: the inputs of the desired routes."""

    leases: tuple[Lease, ...] = ()
    plugins: tuple[str, ...] = ()
    settling: bool = False
    skipped: int = 0


SnapshotFn = Callable[[], Awaitable[LeaseInputs]]


def vici_lease_snapshot(session: Any) -> SnapshotFn:
    """A snapshot callable over a `swand.adapters.vici.ViciSession`."""

    async def snapshot() -> LeaseInputs:
        # blocking list-sas, as the firewall's: `noblock` skips SAs in an exchange
        events, _ = await session.streamed("list-sas", "list-sa")
        stats = await session.request("stats")
        leases = leases_from_vici(events, report_unparsable, need_child_sa=True,
                                  component="routes")
        return LeaseInputs(leases.leases, tuple(str(p) for p in stats.get("plugins") or ()),
                             ike_sas_settling(events), leases.skipped)

    return snapshot


def table_lease_inputs(source: SaSource, *, clock: Clock = SYSTEM_CLOCK,
                       charon_down: Callable[[], bool] | None = None) -> SnapshotFn:
    """The daemon's snapshot: leases of the IKE_SAs with a CHILD_SA carrying traffic,
    from the event watcher's SA table (`swand.runtime.sa_table`: no ``list-sas``, each
    IKE_SA read once per change; no settle hold needed), and the plugins of its last
    resync. Waits for the watcher's first resync, fails the pass without it, at once
    when `charon_down()` (the pass then withdraws the routes)."""
    leases = PerSa(readable_leases(need_child_sa=True, component="routes"))

    async def snapshot() -> LeaseInputs:
        live = await live_sas(source, clock, give_up=charon_down)
        return LeaseInputs(leases(live), charon_plugins(source), skipped=leases.skipped)

    return snapshot


@dataclass(frozen=True)
class RoutesReport:
    """One pass: what it saw and what it changed."""

    ok: bool
    routes: int = 0
    leases: int = 0
    added: int = 0
    removed: int = 0
    skipped: int = 0
    charon_down: bool = False
    #: leased addresses whose route someone else's route (another protocol) blocks
    conflicts: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    changed_routes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


class RouteReconciler(LeaseReconciler[RoutesReport]):
    """The single writer of swand's routes (see the module docstring)."""

    def __init__(
        self,
        cfg: SwandConfig,
        snapshot: SnapshotFn,
        *,
        routes: Any = None,
        net_state: Callable[[], Awaitable[Any]] | None = None,
        charon_up: Callable[[], bool | None] | None = None,
        min_interval: float = 0.1,
        on_report: Callable[[RoutesReport, PassRequest], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if routes is None:
            from swand.adapters.routes import NetlinkRoutes  # pyroute2: only when used

            routes = NetlinkRoutes()
        super().__init__("routes", adapter=routes, net_state=net_state,
                         min_interval=min_interval, interval=cfg.routes.interval,
                         on_report=on_report, clock=clock)
        self.cfg = cfg
        self._snapshot = snapshot
        self._routes = routes
        self._charon_up = charon_up
        self._net: Any = None
        self._conflicts_logged: tuple[str, ...] = ()

    def _net_changed(self, state: Any) -> bool:
        if self._net is not None and (state.egress, state.default_routes) == (
                self._net.egress, self._net.default_routes):
            return False
        self._net = state
        return True

    def _failure(self, error: str, seconds: float) -> RoutesReport:
        return RoutesReport(ok=False, error=error, seconds=seconds)

    def _log_report(self, report: RoutesReport, request: PassRequest) -> None:
        if report.changed:
            log.info("routes_reconciled", reasons=sorted(request.reasons),
                     routes=report.routes, added=report.added, removed=report.removed,
                     charon_down=report.charon_down, changed=list(report.changed_routes[:20]),
                     seconds=round(report.seconds, 4))
        else:
            log.debug("routes unchanged", routes=report.routes)

    async def _read(self) -> tuple[LeaseInputs | None, bool]:
        """(the snapshot, False), or (None, True) when charon is known to be down."""
        from swand.adapters.vici import ViciError

        if self._charon_up is not None and self._charon_up() is False:
            return None, True
        try:
            return await self._snapshot(), False
        except (ViciError, SaTableNotReady):
            if self._charon_up is not None and self._charon_up() is False:
                return None, True
            raise

    async def _reconcile(self, started: float) -> RoutesReport:
        s = self.cfg.routes
        snap, charon_down = await self._read()
        observed = await self._routes.read_owned(s.table, s.protocol)
        desired: frozenset[KernelRoute] = frozenset()
        leases: tuple[Lease, ...] = ()
        if snap is not None:
            if self._net_state is not None:
                self._net = await self._net_state()
            # an IKE rekey briefly lists no CHILD_SA: keep the route, as the firewall
            # keeps forward rules (`held_child_sas`), instead of a fleet-wide withdraw
            seen = self._hold(snap.leases, settling=snap.settling)
            self._seen = seen
            leases = tuple(seen)
            mode = resolve_mode(self.cfg.firewall.mode, snap.plugins)
            net = self._net
            hops = next_hops(mode, s.device, getattr(net, "egress", None),
                             getattr(net, "default_routes", ()), DEFAULT_TUNNEL_INTERFACE)
            desired = desired_routes(leases, hops, table=s.table, protocol=s.protocol,
                                     metric=s.metric)
        else:
            self._seen = {}
        add, remove = plan_routes(desired, observed)
        changes = await self._routes.apply(add, remove)
        conflicts = tuple(sorted(r.dst for r in changes.conflicts))
        if conflicts != self._conflicts_logged:
            self._conflicts_logged = conflicts
            if conflicts:
                log.warning("routes_conflict", routes=list(conflicts[:20]), count=len(conflicts),
                            effect="a route of another protocol exists for these leased "
                            "addresses in the table; it stays and swand adds none")
        return RoutesReport(
            ok=True, routes=len(desired), leases=len(leases), added=changes.added,
            removed=changes.removed, skipped=snap.skipped if snap else 0,
            charon_down=charon_down, conflicts=conflicts,
            seconds=time.perf_counter() - started,
            changed_routes=tuple([f"-{r.dst}" for r in remove] + [f"+{r.dst}" for r in add]),
        )
