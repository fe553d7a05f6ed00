"""RouteReconciler with a fake charon, routes adapter and netlink: what a pass writes,
charon down vs merely unreadable, the rekey hold, drift. No root, no kernel."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from swand.adapters.netlink import NetState
from swand.adapters.routes import RouteChanges
from swand.adapters.vici import ViciConnectionError
from swand.clock import FakeClock
from swand.config import RoutesSettings, SwandConfig
from swand.core.leases import Lease
from swand.core.routes import KernelRoute
from swand.runtime.routes import SETTLE_HOLD, LeaseInputs, RouteReconciler

NET = NetState("eth0", {"eth0": ("192.0.2.1/24",)},
               default_routes=frozenset({("eth0", "192.0.2.254")}))
LIBIPSEC = ("kernel-libipsec", "vici")
A = Lease("10.8.0.1", "t520", "1")
B = Lease("10.8.0.130", "rw", "2")


def route(address: str, oif: str = "ipsec0", gateway: str = "") -> KernelRoute:
    return KernelRoute(f"{address}/32", 254, 157, 0, oif, gateway)


class FakeRoutes:
    """The kernel's routes of our table and protocol, as a set."""

    def __init__(self, owned: set[KernelRoute] | None = None) -> None:
        self.owned = set(owned or ())
        self.writes = 0

    async def read_owned(self, table: int, protocol: int) -> set[KernelRoute]:
        return set(self.owned)

    async def apply(self, add: tuple[KernelRoute, ...], remove: tuple[KernelRoute, ...]
                    ) -> RouteChanges:
        self.writes += bool(add or remove)
        self.owned -= set(remove)
        self.owned |= set(add)
        return RouteChanges(len(add), len(remove))

    async def close(self) -> None:
        pass


def make(snapshots: list[Any], *, owned: set[KernelRoute] | None = None,
         charon_up: bool | None = True, **routes: Any
         ) -> tuple[RouteReconciler, FakeRoutes, FakeClock, dict[str, bool | None]]:
    cfg = dataclasses.replace(SwandConfig(), routes=RoutesSettings(enabled=True, **routes))
    state: dict[str, bool | None] = {"up": charon_up}

    async def snapshot() -> LeaseInputs:
        item = snapshots[0] if len(snapshots) == 1 else snapshots.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def net_state() -> NetState:
        return NET

    fake, clock = FakeRoutes(owned), FakeClock(start=100.0)
    rec = RouteReconciler(cfg, snapshot, routes=fake, net_state=net_state,
                          charon_up=lambda: state["up"], clock=clock)
    return rec, fake, clock, state


def run(rec: RouteReconciler) -> Any:
    return asyncio.run(rec.run_once())


def test_a_route_per_lease_into_the_tunnel_then_nothing_to_do() -> None:
    rec, fake, _, _ = make([LeaseInputs((A, B), LIBIPSEC)])
    report = run(rec)
    assert fake.owned == {route(A.address), route(B.address)}
    assert (report.added, report.removed, report.routes) == (2, 0, 2)
    again = run(rec)
    assert (again.added, again.removed) == (0, 0) and fake.writes == 1


def test_kernel_esp_routes_via_the_egress_gateway() -> None:
    rec, fake, _, _ = make([LeaseInputs((A,), ("kernel-netlink",))])
    run(rec)
    assert fake.owned == {route(A.address, "eth0", "192.0.2.254")}


def test_stray_and_changed_routes_are_repaired() -> None:
    stray = route("10.8.0.99")
    wrong = route(A.address, "eth0", "192.0.2.254")
    rec, fake, _, _ = make([LeaseInputs((A,), LIBIPSEC)], owned={stray, wrong})
    report = run(rec)
    assert fake.owned == {route(A.address)}
    assert (report.added, report.removed) == (1, 2)


def test_charon_down_withdraws_everything() -> None:
    rec, fake, _, state = make([ViciConnectionError("unix:///run/charon.vici: refused")],
                               owned={route(A.address)})
    state["up"] = False
    report = run(rec)
    assert fake.owned == set() and report.charon_down and report.ok


def test_charon_unreadable_but_not_known_down_changes_nothing() -> None:
    rec, fake, _, _ = make([ViciConnectionError("timed out")], owned={route(A.address)})
    with pytest.raises(ViciConnectionError):
        run(rec)
    assert fake.owned == {route(A.address)} and fake.writes == 0
    assert rec.last_report is not None and not rec.last_report.ok


def test_a_rekey_does_not_withdraw_but_a_delete_does() -> None:
    settling_without_a = LeaseInputs((B,), LIBIPSEC, settling=True)
    rec, fake, clock, _ = make([LeaseInputs((A, B), LIBIPSEC), settling_without_a,
                                settling_without_a, LeaseInputs((B,), LIBIPSEC)])
    run(rec)
    asyncio.run(clock.advance(SETTLE_HOLD / 2))
    run(rec)  # IKE_SA mid-rekey: A's CHILD_SA briefly unlisted, its route stays
    assert route(A.address) in fake.owned
    asyncio.run(clock.advance(SETTLE_HOLD))
    run(rec)  # held too long: gone
    assert fake.owned == {route(B.address)}
    run(rec)
    assert fake.owned == {route(B.address)}
