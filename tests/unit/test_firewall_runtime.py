"""FirewallReconciler with fake charon, backend, sysctls and netlink: ordering, fail-static
behaviour, mode and egress resolution, periodic repair. No root, no kernel."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from swand.adapters.firewall_backend import ApplyReport
from swand.adapters.netlink import NetState
from swand.adapters.sysctl import SysctlChange
from swand.clock import FakeClock
from swand.config import FirewallSettings, SwandConfig
from swand.core.firewall import ChildSA, DesiredFirewall, Pool
from swand.runtime.firewall import FirewallPassError, FirewallReconciler, FirewallSnapshot

POOLS = (Pool.from_addrs("pool4", "10.8.0.128/25"),)
SA = ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",))
NET = NetState("eth0", {"lo": ("127.0.0.1/8",), "eth0": ("192.0.2.1/24",)})


class FakeBackend:
    name = "fake"

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.applied: list[DesiredFirewall] = []

    async def apply(self, desired: DesiredFirewall) -> ApplyReport:
        self.journal.append("rules")
        changed = not self.applied or self.applied[-1].tags() != desired.tags()
        self.applied.append(desired)
        return ApplyReport("fake", changed_tables=("ipv4/filter",) if changed else ())

    async def flush(self) -> ApplyReport:
        return await self.apply(DesiredFirewall({}))

    async def close(self) -> None:
        self.journal.append("closed")


class FakeSysctl:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.values: dict[str, str] = {}

    def read(self, key: str) -> str | None:
        return self.values.get(key)

    def apply(self, want: Mapping[str, str]) -> list[SysctlChange]:
        self.journal.append("sysctl")
        changes = [SysctlChange(k, self.values.get(k), v) for k, v in want.items()
                   if self.values.get(k) != v]
        self.values.update(want)
        return changes


def make(snapshots: list[Any], *, net: NetState = NET, interval: float = 10.0,
         clock: FakeClock | None = None, **firewall: Any
         ) -> tuple[FirewallReconciler, FakeBackend, FakeSysctl, list[str]]:
    journal: list[str] = []
    cfg = dataclasses.replace(SwandConfig(), firewall=FirewallSettings(**firewall),
                              source="test.toml")

    async def snapshot(refresh: bool = True) -> FirewallSnapshot:
        item = snapshots[0] if len(snapshots) == 1 else snapshots.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def net_state() -> NetState:
        return net

    backend, sysctl = FakeBackend(journal), FakeSysctl(journal)
    fw = FirewallReconciler(cfg, snapshot, backend=backend, sysctl=sysctl, net_state=net_state,
                            min_interval=0.01, interval=interval, clock=clock or FakeClock())
    return fw, backend, sysctl, journal


def test_one_pass_writes_rules_before_forwarding() -> None:
    fw, backend, _, journal = make([FirewallSnapshot(POOLS, (SA,), ("kernel-libipsec",))])
    report = asyncio.run(fw.run_once())
    assert journal == ["rules", "sysctl"]  # NAT exists before ip_forward is switched on
    assert report.ok and report.mode == "interface" and report.egress == "eth0"
    assert report.sas == 1 and report.changed_tables == ("ipv4/filter",)
    assert set(report.sysctls_changed) == {"net.ipv4.ip_forward", "net.ipv4.ip_no_pmtu_disc"}
    assert "-o eth0 -j MASQUERADE" in backend.applied[0].tables[("ipv4", "nat")].chains[
        "SWAND-NAT"][1].spec


def test_mode_auto_is_policy_without_libipsec() -> None:
    fw, *_ = make([FirewallSnapshot(POOLS, (SA,), ("kernel-netlink", "vici"))])
    assert asyncio.run(fw.run_once()).mode == "policy"


def test_charon_unreachable_changes_nothing() -> None:
    fw, backend, _, journal = make([ConnectionError("vici: no socket")])
    with pytest.raises(ConnectionError):
        asyncio.run(fw.run_once())
    assert journal == [] and not backend.applied
    assert fw.last_report is not None and not fw.last_report.ok
    assert "no socket" in (fw.last_report.error or "")


@pytest.mark.parametrize(("net", "egress", "message"), [
    (NetState(None, NET.interfaces), "auto", "no default route"),
    (NET, "eth9", "interface 'eth9' does not exist"),
])
def test_bad_egress_keeps_the_last_good_rules(net: NetState, egress: str, message: str
                                              ) -> None:
    fw, _, _, journal = make([FirewallSnapshot(POOLS, (SA,))], net=net, egress=egress)
    with pytest.raises(FirewallPassError, match=message) as info:
        asyncio.run(fw.run_once())
    assert "test.toml" in str(info.value) and "last good rules stay" in str(info.value)
    assert journal == []


def test_pool_overlapping_the_egress_subnet_is_refused() -> None:
    bad = (Pool.from_addrs("bad", "192.0.2.128/25"),)
    fw, _, _, journal = make([FirewallSnapshot(bad, ())])
    with pytest.raises(FirewallPassError, match=r"overlaps the egress subnet 192\.0\.2\.0/24"):
        asyncio.run(fw.run_once())
    assert journal == []


def test_disabled_touches_nothing() -> None:
    fw, _, _, journal = make([FirewallSnapshot(POOLS, (SA,))], enabled=False)
    assert asyncio.run(fw.run_once()).ok
    assert journal == []


def test_runner_follows_pokes_and_repeats_periodically() -> None:
    snapshots: list[Any] = [FirewallSnapshot(POOLS, ())]
    clock = FakeClock()
    fw, backend, _, journal = make(snapshots, interval=10.0, clock=clock)

    async def scenario() -> None:
        await fw.start()
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert len(backend.applied) == 1
        snapshots[0] = FirewallSnapshot(POOLS, (SA,))
        await clock.advance(0.01)  # the runner's minimum interval
        fw.poke("child-updown")
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert "SWAND-FWD" in str(backend.applied[-1].tables[("ipv4", "filter")].chains)
        assert fw.last_report is not None and fw.last_report.sas == 1
        for passes in (3, 4):  # periodic passes (the drift check): 10 s +- 10 %
            await clock.advance(11.0)
            await asyncio.wait_for(fw.wait_idle(), 5)
            assert len(backend.applied) == passes
        await fw.stop()

    asyncio.run(scenario())
    assert journal[-1] == "closed"


def test_an_sa_pass_leaves_the_sysctls_to_the_others() -> None:
    """A pass for SA changes only writes rules: the sysctls follow the pools and the
    egress, which it does not re-read (a storm's passes save a thread hop each). The
    periodic pass, like any other, sets them and repairs drift."""
    snapshots: list[Any] = [FirewallSnapshot(POOLS, ())]
    clock = FakeClock()
    fw, _, sysctl, journal = make(snapshots, interval=10.0, clock=clock)

    async def scenario() -> None:
        await fw.start()
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert journal == ["rules", "sysctl"]
        sysctl.values["net/ipv4/ip_forward"] = "0"  # switched off behind our back
        snapshots[0] = FirewallSnapshot(POOLS, (SA,))
        for reason in ("sa-change", "settling"):
            await clock.advance(0.01)
            fw.poke(reason)
            await asyncio.wait_for(fw.wait_idle(), 5)
        assert journal[2:] == ["rules", "rules"]
        assert fw.last_report is not None and fw.last_report.sas == 1
        await clock.advance(11.0)  # the periodic pass
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert journal[4:] == ["rules", "sysctl"]
        assert sysctl.values["net/ipv4/ip_forward"] == "1"
        await clock.advance(0.01)
        fw.poke("netlink")  # the egress may have changed: its sysctls too
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert journal[6:] == ["rules", "sysctl"]
        await fw.stop()

    asyncio.run(scenario())


def test_a_netlink_state_pokes_only_when_egress_or_interfaces_change() -> None:
    """The watcher's state also carries keepalive's part (global addresses, default
    routes): a change there alone is no reason for a firewall pass."""
    fw, *_ = make([FirewallSnapshot(POOLS, (SA,), ())])
    pokes: list[str] = []
    fw.poke = lambda reason="poke", *, full=False: pokes.append(reason)  # type: ignore[method-assign]
    fw._on_net(NET)
    fw._on_net(dataclasses.replace(NET, default_routes=frozenset({("eth0", "192.0.2.254")})))
    assert pokes == ["netlink"]
    fw._on_net(NetState("eth1", {**NET.interfaces, "eth1": ("198.51.100.2/24",)}))
    assert pokes == ["netlink", "netlink"] and fw._egress.name == "eth1"
