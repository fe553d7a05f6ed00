"""CHILD_SAs moving between IKE_SAs keep their forward rules (charon 5.9 and 6.0).

The payloads are what both versions' `list-sas` showed in the lab while an IKE rekey ran:
the old IKE_SA DELETING without children, the new one not yet listed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from swand.adapters.firewall_backend import ApplyReport
from swand.adapters.netlink import NetState
from swand.adapters.sysctl import SysctlChange
from swand.clock import FakeClock
from swand.config import SwandConfig
from swand.core.firewall import (
    ChildSA,
    DesiredFirewall,
    Pool,
    held_child_sas,
    ike_sas_settling,
)
from swand.runtime.firewall import SETTLE_HOLD, FirewallReconciler, FirewallSnapshot

SA1 = ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",))
SA2 = ChildSA("rw", "rw", 2, ("0.0.0.0/0",), ("10.8.0.130/32",))
POOLS = (Pool.from_addrs("pool4", "10.8.0.128/25"),)


def test_an_ike_sa_mid_rekey_or_deleting_is_settling() -> None:
    assert ike_sas_settling([{"rw": {"state": "DELETING", "child-sas": {}}}])
    assert ike_sas_settling([{"rw": {"state": "ESTABLISHED"}}, {"rw": {"state": "REKEYED"}}])
    assert not ike_sas_settling([{"rw": {"state": "ESTABLISHED", "child-sas": {}}}])
    assert not ike_sas_settling([])


def test_a_missing_child_sa_is_held_only_while_settling_and_within_hold() -> None:
    seen = held_child_sas([SA1, SA2], {}, 10.0, settling=False, hold=0.5)
    assert seen == {SA1: 10.0, SA2: 10.0}
    # the rekey window: SA1's IKE_SA is being replaced, SA1 not listed
    seen = held_child_sas([SA2], seen, 10.1, settling=True, hold=0.5)
    assert seen == {SA1: 10.0, SA2: 10.1}
    # settled: listed again under the new IKE_SA, nothing held
    assert held_child_sas([SA1, SA2], seen, 10.3, settling=False, hold=0.5) == {
        SA1: 10.3, SA2: 10.3}
    # really gone: dropped as soon as nothing settles, or after `hold` even if something does
    assert held_child_sas([SA2], seen, 10.2, settling=False, hold=0.5) == {SA2: 10.2}
    assert held_child_sas([SA2], seen, 10.6, settling=True, hold=0.5) == {SA2: 10.6}



class _Backend:
    """Records what each pass asked for (a stand-in for iptables/nftables)."""

    name = "fake"

    def __init__(self) -> None:
        self.applied: list[DesiredFirewall] = []

    async def apply(self, desired: DesiredFirewall) -> ApplyReport:
        self.applied.append(desired)
        return ApplyReport("fake")

    async def flush(self) -> ApplyReport:
        return ApplyReport("fake")

    async def close(self) -> None:
        pass


class _Sysctl:
    def read(self, key: str) -> str | None:
        return None

    def apply(self, want: Mapping[str, str]) -> list[SysctlChange]:
        return []


def test_the_reconciler_keeps_a_moving_sa_and_drops_it_after_the_hold() -> None:
    """Pass 1 lists SA1; pass 2 (poked by a rekey) sees SA1's IKE_SA settling without
    SA1: rules kept, and the reconciler re-reads by itself after SETTLE_HOLD; SA1 still
    missing and nothing settling then: its rules go."""
    snapshots = [FirewallSnapshot(POOLS, (SA1,))]
    backend = _Backend()

    async def snapshot(refresh: bool = True) -> FirewallSnapshot:
        return snapshots[0]

    async def net_state() -> NetState:
        return NetState("eth0", {"eth0": ("192.0.2.1/24",)})

    clock = FakeClock()
    fw = FirewallReconciler(SwandConfig(), snapshot, backend=backend, sysctl=_Sysctl(),
                            net_state=net_state, min_interval=0.01, interval=60.0,
                            clock=clock)

    def forward_rules() -> str:
        return str(backend.applied[-1].tables[("ipv4", "filter")].chains)

    async def scenario() -> None:
        await fw.start()
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert "10.8.0.129" in forward_rules()
        snapshots[0] = FirewallSnapshot(POOLS, (), settling=True)
        await clock.advance(0.01)  # the runner's minimum interval
        fw.poke("ike-rekey")
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert "10.8.0.129" in forward_rules()  # held
        passes = len(backend.applied)
        snapshots[0] = FirewallSnapshot(POOLS, ())
        await clock.advance(SETTLE_HOLD - 0.01)
        assert len(backend.applied) == passes
        await clock.advance(0.01)  # no poke: the reconciler's own re-read
        await asyncio.wait_for(fw.wait_idle(), 5)
        assert len(backend.applied) == passes + 1
        assert "10.8.0.129" not in forward_rules()
        await fw.stop()

    asyncio.run(scenario())
