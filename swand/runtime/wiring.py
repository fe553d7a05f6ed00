"""How the parts of `swand run` hear about charon: the one wiring of the `Charon`
owner's publications to its subscribers.

`swand run` (swand.app) and the lab tests call the same functions, so a test of the
firewall's reaction to an SA event proves the path the daemon takes:

    charon = Charon(uri, metrics=registry)
    firewall = firewall_reconciler(cfg, charon, config_pools=...)
    ndp, routes = ndp_reconciler(cfg, charon), route_reconciler(cfg, charon)
    wire(charon, firewall=firewall, ndp=ndp, routes=routes, poller=poller,
         config_runner=runner)
    await charon.run()

- the firewall is poked by every change of the set of live SAs (`SaSetChanged`: an IKE_SA
  or a CHILD_SA came or went, a CHILD_SA rekey changed its selectors, an SA moved) and
  by charon coming back; its periodic pass only repairs drift; so is the NDP proxy
  reconciler (routed IPv6: one entry per leased address) and the routes reconciler
  (`[routes]`: a kernel route per leased virtual IP; also poked when charon goes away).
  All three read the SAs from the event watcher's table (`charon.events`, see
  `swand.runtime.sa_table`), never with a ``list-sas`` of their own: a pass costs no
  charon round trip, and only the IKE_SAs that changed are read again;
- the metrics poller gets each decoded SA event (the traffic accumulator's final
  counters), `charon_lost` and `charon_restarted`, and a poll after charon is back; it
  reads the SA set between polls from the watcher's peer table (`use_live_sas`), told
  by every `SaSetChanged` (`sa_set_changed`): an SA event costs no `list-sas`;
- the configuration runner is asked for a full pass when charon is back after an outage;
- keepalive (`Keepalive(..., charon.events, session=charon.commands)`) gets every action
  (re-initiate after a down, holds, the outcome of its initiates) and each time charon is
  reached, first or again (a connection still down is tried at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from swand.clock import SYSTEM_CLOCK
from swand.config import SwandConfig
from swand.core.events import Action, SaSetChanged
from swand.runtime.charon import Charon, CharonUp

if TYPE_CHECKING:
    from swand.core.firewall import Pool
    from swand.runtime.firewall import FirewallReconciler, FirewallReport
    from swand.runtime.keepalive import Keepalive
    from swand.runtime.metrics import MetricsPoller
    from swand.runtime.ndp import NdpProxyReconciler, NdpReport
    from swand.runtime.routes import RouteReconciler, RoutesReport
    from swand.runtime.runner import BoundedFrequencyRunner, PassRequest


def firewall_reconciler(
    cfg: SwandConfig, charon: Charon, *,
    config_pools: Callable[[], tuple[Pool, ...]] | None = None,
    on_report: Callable[[FirewallReport, PassRequest], None] | None = None,
    **options: Any,
) -> FirewallReconciler:
    """The firewall reconciler reading the SAs from the event watcher's table and the
    pools over the owner's query session."""
    from swand.runtime.firewall import FirewallReconciler, table_snapshot

    clock = options.get("clock", SYSTEM_CLOCK)
    return FirewallReconciler(
        cfg, snapshot=table_snapshot(charon.events, charon.queries,
                                     config_pools=config_pools, clock=clock),
        on_report=on_report, **options)


def ndp_reconciler(
    cfg: SwandConfig, charon: Charon, *,
    on_report: Callable[[NdpReport, PassRequest], None] | None = None, **options: Any,
) -> NdpProxyReconciler:
    """The NDP proxy reconciler reading the leases from the event watcher's table."""
    from swand.runtime.ndp import NdpProxyReconciler, table_lease_snapshot

    clock = options.get("clock", SYSTEM_CLOCK)
    return NdpProxyReconciler(cfg, table_lease_snapshot(charon.events, clock=clock),
                              on_report=on_report, **options)


def route_reconciler(
    cfg: SwandConfig, charon: Charon, *,
    on_report: Callable[[RoutesReport, PassRequest], None] | None = None, **options: Any,
) -> RouteReconciler:
    """The routes reconciler reading the leases from the event watcher's table; it
    withdraws every route while the owner says charon is down."""
    from swand.runtime.routes import RouteReconciler, table_lease_inputs

    clock = options.get("clock", SYSTEM_CLOCK)
    return RouteReconciler(
        cfg, table_lease_inputs(charon.events, clock=clock,
                                charon_down=lambda: charon.up is False),
        charon_up=lambda: charon.up, on_report=on_report, **options)


def wire(
    charon: Charon, *,
    firewall: FirewallReconciler | None = None,
    ndp: NdpProxyReconciler | None = None,
    routes: RouteReconciler | None = None,
    poller: MetricsPoller | None = None,
    config_runner: BoundedFrequencyRunner | None = None,
    keepalive: Keepalive | None = None,
) -> None:
    """Subscribe the parts that exist to what `charon` publishes (see the module doc)."""
    #: the reconcilers whose input is the set of live SAs (each reads the table itself)
    per_sa = [r for r in (firewall, ndp, routes) if r is not None]

    def on_action(action: Action) -> None:
        if keepalive is not None:
            keepalive.on_action(action)
        if isinstance(action, SaSetChanged):
            for reconciler in per_sa:
                reconciler.poke("sa-change")
            if poller is not None:
                poller.sa_set_changed()

    async def on_up(up: CharonUp) -> None:
        if poller is not None and up.restarted:
            poller.charon_restarted()
        if keepalive is not None:
            keepalive.on_resync(up.restarted)
        if up.first:
            return  # the start passes are already queued; nothing was lost
        if config_runner is not None:
            config_runner.poke("charon-up", full=True)
        if poller is not None:
            poller.poke()
        for reconciler in per_sa:
            reconciler.poke("charon-up")

    def on_down(_error: str) -> None:
        if poller is not None:
            poller.charon_lost()
        if routes is not None:
            routes.poke("charon-down")

    charon.on_action(on_action)
    charon.on_up(on_up)
    charon.on_down(on_down)
    if poller is not None:
        charon.on_sa_event(poller.on_sa_event)
        events = charon.events
        poller.use_live_sas(lambda: events.table.current().values())
