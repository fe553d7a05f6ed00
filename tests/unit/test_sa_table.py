"""The per-SA reconcilers read the event watcher's SA table (`swand.runtime.sa_table`):
a storm of SA events ends in exactly the SA set's forward rules with no ``list-sas`` but
the watcher's own resync, a pass before that resync changes nothing, an SA change costs
no charon round trip and no work per unchanged SA. Wired as `swand run` wires it
(`swand.runtime.wiring`), with fake charon session, backend and sysctls, on a FakeClock."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from swand.adapters.netlink import NetState
from swand.clock import FakeClock
from swand.config import RoutesSettings, SwandConfig
from swand.core.events import (
    SA_SET_CHANGED,
    ChildSa,
    ChildUp,
    IkeDown,
    IkeSa,
    IkeUp,
    PeerTable,
    SaSetChanged,
)
from swand.core.leases import Lease
from swand.runtime.charon import Charon
from swand.runtime.firewall import FirewallReconciler
from swand.runtime.routes import table_lease_inputs
from swand.runtime.sa_table import GIVE_UP_CHECK, READY_WAIT, PerSa
from swand.runtime.wiring import firewall_reconciler, route_reconciler, wire
from tests.unit.test_firewall_runtime import FakeBackend, FakeSysctl
from tests.unit.test_routes_runtime import FakeRoutes, route

NET = NetState("eth0", {"lo": ("127.0.0.1/8",), "eth0": ("192.0.2.1/24",)})
POOLS = {"pool4": {"base": "10.8.0.0", "size": "65534"}}
VIP = re.compile(r"10\.8\.\d+\.\d+")


def vip(i: int) -> str:
    return f"10.8.{i // 250}.{i % 250 + 1}"


def client(i: int) -> tuple[IkeSa, ChildSa]:
    """Client `i`'s IKE_SA (as its ike-updown up carries it: no CHILD_SA yet) and the
    CHILD_SA its child-updown up adds."""
    sa = IkeSa("rw", str(i + 1), state="ESTABLISHED", remote_id=f"c{i}.lab",
               remote_vips=(vip(i),))
    child = ChildSa("rw", str(100_000 + i), state="INSTALLED", reqid=str(i + 1),
                    local_ts=("0.0.0.0/0",), remote_ts=(f"{vip(i)}/32",))
    return sa, child


def list_sa(sa: IkeSa, child: ChildSa) -> dict[str, Any]:
    """`sa` with `child` as one ``list-sa`` event."""
    return {sa.conn: {
        "uniqueid": sa.uniqueid, "state": sa.state, "remote-id": sa.remote_id,
        "remote-vips": list(sa.remote_vips),
        "child-sas": {child.name: {
            "name": child.name, "uniqueid": child.uniqueid, "state": child.state,
            "reqid": child.reqid, "local-ts": list(child.local_ts),
            "remote-ts": list(child.remote_ts)}}}}


class FakeSession:
    """charon's query connection: counts what is asked."""

    def __init__(self, listed: list[dict[str, Any]] | None = None) -> None:
        self.listed = listed or []
        self.calls: list[str] = []

    async def request(self, command: str, message: Mapping[str, Any] | None = None,
                      **_: Any) -> dict[str, Any]:
        self.calls.append(command)
        return {"get-pools": POOLS, "stats": {"plugins": ["kernel-netlink", "vici"]},
                "version": {"daemon": "charon"}}[command]

    async def streamed(self, command: str, event: str, message: Any = None,
                       **_: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.calls.append(command)
        return list(self.listed), {}

    async def close(self) -> None:
        pass


def daemon(session: FakeSession, clock: FakeClock
           ) -> tuple[Charon, FirewallReconciler, FakeBackend]:
    """The firewall as `swand run` builds and wires it, over `session`."""
    charon = Charon("unix:///nonexistent/charon.vici")
    charon.queries = charon.events._session = session  # type: ignore[assignment]
    backend = FakeBackend([])

    async def net_state() -> NetState:
        return NET

    fw = firewall_reconciler(SwandConfig(), charon, backend=backend,
                             sysctl=FakeSysctl([]), net_state=net_state, min_interval=0.2,
                             interval=10.0, clock=clock)
    wire(charon, firewall=fw)
    return charon, fw, backend


def forwarded(backend: FakeBackend) -> list[str]:
    """The client addresses of the last applied forward rules, one per rule."""
    chain = backend.applied[-1].tables[("ipv4", "filter")].chains["SWAND-FWD"]
    return [m for rule in chain for m in VIP.findall(rule.spec) if m != "10.8.0.0"]


async def settle(fw: FirewallReconciler, clock: FakeClock) -> None:
    await clock.advance(0.2)  # the runner's minimum interval
    await asyncio.wait_for(fw.wait_idle(), 10)


def test_a_storm_of_1000_clients_ends_in_exactly_their_forward_rules_without_list_sas(
) -> None:
    clock = FakeClock()
    session = FakeSession()
    charon, fw, backend = daemon(session, clock)
    clients = [client(i) for i in range(1000)]

    async def scenario() -> None:
        await fw.start()
        await charon.events._resync()  # the watcher reaches charon: no SA yet
        await settle(fw, clock)
        assert forwarded(backend) == []
        for sa, child in clients:  # every client connects at once
            await charon.events._apply(IkeUp(sa))
            await charon.events._apply(ChildUp(sa, child))
        await settle(fw, clock)
        assert sorted(forwarded(backend)) == sorted(v for i in range(1000)
                                                    for v in (vip(i), vip(i)))
        # half of them leave, 100 others come: the rules follow the table again
        for sa, _ in clients[:500]:
            await charon.events._apply(IkeDown(dataclasses.replace(sa, state="DELETING")))
        for sa, child in (client(i) for i in range(1000, 1100)):
            await charon.events._apply(IkeUp(sa))
            await charon.events._apply(ChildUp(sa, child))
        await settle(fw, clock)
        want = [vip(i) for i in range(500, 1100)]
        assert sorted(forwarded(backend)) == sorted(want + want)
        assert fw.last_report is not None and fw.last_report.sas == 600
        await fw.stop()

    asyncio.run(scenario())
    # list-sas only in the watcher's resync; pools on the start pass, not per SA change
    assert session.calls.count("list-sas") == 1
    assert session.calls.count("get-pools") == 1
    assert fw.runner.passes == 3


def test_a_pass_before_the_first_resync_changes_nothing_and_fails_after_the_wait() -> None:
    """At swand's start the table is empty because nothing was read yet, not because no
    SA exists: acting on it would delete every adopted forward rule."""
    clock = FakeClock()
    adopted = client(7)
    charon, fw, backend = daemon(FakeSession([list_sa(*adopted)]), clock)

    async def scenario() -> None:
        await fw.start()  # the start pass waits for the watcher's first resync
        await clock.advance(READY_WAIT / 2)
        assert backend.applied == [] and fw.last_report is None
        await clock.advance(READY_WAIT / 2)  # charon still not reached: the pass fails
        assert backend.applied == []
        assert fw.last_report is not None and not fw.last_report.ok
        assert "not read yet" in (fw.last_report.error or "")
        await charon.events._resync()  # charon answers, the SA it lists is known
        await clock.advance(1.0)  # the retry (backoff 0.5 s +- 10 %)
        await asyncio.wait_for(fw.wait_idle(), 10)
        assert forwarded(backend) == [vip(7), vip(7)]
        await fw.stop()

    asyncio.run(scenario())


def test_the_start_pass_goes_on_the_moment_the_table_is_read() -> None:
    clock = FakeClock()
    charon, fw, backend = daemon(FakeSession([list_sa(*client(3))]), clock)

    async def scenario() -> None:
        await fw.start()
        await clock.run_loop()
        assert backend.applied == []
        await charon.events._resync()
        for _ in range(1000):  # no clock advance: no retry delay (the rules are computed
            if backend.applied:  # on a thread, hence the real-time poll)
                break
            await asyncio.sleep(0.005)
        assert forwarded(backend) == [vip(3), vip(3)]
        assert fw.last_report is not None and fw.last_report.ok
        await fw.stop()

    asyncio.run(scenario())


def test_an_sa_change_pass_reuses_the_pools_every_other_pass_rereads_them() -> None:
    clock = FakeClock()
    session = FakeSession()
    charon, fw, _ = daemon(session, clock)
    sa, child = client(1)

    async def scenario() -> None:
        await fw.start()
        await charon.events._resync()
        await settle(fw, clock)
        await charon.events._apply(IkeUp(sa))
        await charon.events._apply(ChildUp(sa, child))
        await settle(fw, clock)
        assert session.calls.count("get-pools") == 1
        fw.poke("charon-up")
        await settle(fw, clock)
        assert session.calls.count("get-pools") == 2
        await clock.advance(11.0)  # the periodic pass
        await asyncio.wait_for(fw.wait_idle(), 10)
        assert session.calls.count("get-pools") == 3
        await fw.stop()

    asyncio.run(scenario())
    assert "stats" in session.calls and session.calls.count("stats") == 1  # the resync's


def test_per_sa_work_follows_the_changes_not_the_table() -> None:
    table = PeerTable()
    derive = PerSa(lambda sa: (sa.uniqueid,) if sa.remote_vips else None)
    for i in range(1000):
        table.apply(IkeUp(client(i)[0]))
    assert len(derive(table.live)) == 1000 and derive.derived == 1000
    sa, child = client(5)
    table.apply(ChildUp(sa, child))  # one SA changed (a new object in the table)
    table.apply(IkeDown(dataclasses.replace(client(6)[0], state="DELETING")))
    table.apply(IkeUp(IkeSa("rw", "5000", state="ESTABLISHED")))  # no vip: skipped
    assert len(derive(table.live)) == 999 and derive.derived == 1002
    assert derive.skipped == 1


def test_sa_set_changed_carries_nothing_whatever_the_table_holds() -> None:
    """It used to carry a sorted copy of every live SA: O(n log n) per event."""
    assert dataclasses.fields(SaSetChanged) == ()
    table = PeerTable()
    for size in (1, 10_000):
        while len(table.live) < size:
            actions = table.apply(IkeUp(client(len(table.live))[0]))
        assert actions[-1] is SA_SET_CHANGED


def test_routes_read_leases_with_traffic_from_the_table() -> None:
    clock = FakeClock()
    charon = Charon("unix:///nonexistent/charon.vici")
    charon.queries = charon.events._session = FakeSession()  # type: ignore[assignment]
    snapshot = table_lease_inputs(charon.events, clock=clock)
    with_child, without = client(1), client(2)
    bad = IkeSa("rw", "9", state="ESTABLISHED", remote_vips=("not an address",))

    async def scenario() -> Any:
        await charon.events._resync()
        for sa, child in (with_child, (bad, with_child[1])):
            await charon.events._apply(IkeUp(sa))
            await charon.events._apply(ChildUp(sa, child))
        await charon.events._apply(IkeUp(without[0]))  # no CHILD_SA: no route
        return await snapshot()

    inputs = asyncio.run(scenario())
    assert inputs.leases == (Lease(vip(1), "rw", "2"),) and inputs.skipped == 1
    assert inputs.plugins == ("kernel-netlink", "vici") and not inputs.settling


def test_routes_of_a_swand_started_while_charon_is_down_go_at_once() -> None:
    """Routes do not fail static (a dead charon's routes black-hole the fleet's traffic):
    a pass waiting for the first resync stops waiting as soon as charon is known down,
    and withdraws them, instead of after `READY_WAIT`."""
    clock = FakeClock()
    charon = Charon("unix:///nonexistent/charon.vici")
    left = route("10.8.0.1")
    fake = FakeRoutes({left})

    async def net_state() -> NetState:
        return NET

    cfg = dataclasses.replace(SwandConfig(), routes=RoutesSettings(enabled=True))
    rec = route_reconciler(cfg, charon, routes=fake, net_state=net_state, clock=clock)

    async def scenario() -> None:
        await rec.start()
        await clock.advance(1.0)
        assert fake.owned == {left}  # not read yet: nothing changes
        charon._lost("connection refused")  # the watcher cannot reach charon
        await clock.advance(GIVE_UP_CHECK)
        await clock.advance(1.0)  # the retry
        assert fake.owned == set()
        assert rec.last_report is not None and rec.last_report.charon_down
        await rec.stop()

    asyncio.run(scenario())


def test_a_client_with_an_unreadable_selector_costs_only_its_own_rules() -> None:
    """Selectors are the client's choice: from the table as from list-sas, one that
    cannot be read leaves that CHILD_SA out, never the others' rules."""
    clock = FakeClock()
    charon, fw, backend = daemon(FakeSession(), clock)
    good, bad = client(1), client(2)
    broken = dataclasses.replace(bad[1], remote_ts=("10.8.0.3/33",))

    async def scenario() -> None:
        await fw.start()
        await charon.events._resync()
        for sa, child in (good, (bad[0], broken)):
            await charon.events._apply(IkeUp(sa))
            await charon.events._apply(ChildUp(sa, child))
        await settle(fw, clock)
        await fw.stop()

    asyncio.run(scenario())
    assert forwarded(backend) == [vip(1), vip(1)]
    assert fw.last_report is not None and fw.last_report.ok
