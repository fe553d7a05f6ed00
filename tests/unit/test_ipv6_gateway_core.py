"""The dual-stack gateway's pure parts: `[ipv6]` settings, IPv6 sysctls (forwarding,
accept_ra, proxy_ndp), IPv6 MSS, per-SA IPv6 forward rules, routed pools in validation,
leases -> NDP proxy entries, and the NDP proxy reconciler over fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from swand.adapters.netlink import NetState
from swand.config import ConfigError, FirewallSettings, SwandConfig, SysctlSettings, parse_config
from swand.core.firewall import (
    ChildSA,
    FirewallInputs,
    Pool,
    desired_firewall,
    mss_for,
    render_save,
    validate,
)
from swand.core.leases import (
    KERNEL_PROTOCOL,
    Lease,
    NdpProxy,
    desired_ndp_proxies,
    desired_per_lease,
    leases_from_vici,
    plan_objects,
)
from swand.core.sysctl import IPV6_FORWARDING, desired_sysctls
from swand.runtime.firewall import effective_egress6
from swand.runtime.ndp import LeaseSnapshot, NdpProxyReconciler
from swand.runtime.runner import PassRequest

POOL4 = Pool.from_addrs("pool4", "10.8.0.128/25")
POOL6 = Pool.from_addrs("pool6", "2001:db8:2::1000/116")

# --- settings ---------------------------------------------------------------------------


def test_ipv6_mode_defaults_to_none() -> None:
    cfg = parse_config({})
    assert cfg.ipv6.mode == "none" and cfg.ipv6.egress == "auto"
    assert cfg.sysctl.accept_ra is True


def test_nat66_spellings_agree() -> None:
    assert parse_config({"ipv6": {"mode": "nat66"}}).firewall.nat66 is True
    assert parse_config({"firewall": {"nat66": True}}).ipv6.mode == "nat66"
    routed = parse_config({"ipv6": {"mode": "routed"}})
    assert routed.ipv6.mode == "routed" and routed.firewall.nat66 is False


def test_routed_and_nat66_together_is_an_error_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=r"gw\.toml: \[ipv6\] mode = \"routed\" "
                       r"contradicts \[firewall\] nat66 = true"):
        parse_config({"ipv6": {"mode": "routed"}, "firewall": {"nat66": True}}, "gw.toml")


def test_unknown_ipv6_mode_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\[ipv6\] mode must be one of none, routed, nat66"):
        parse_config({"ipv6": {"mode": "bridged"}}, "gw.toml")


# --- sysctls ----------------------------------------------------------------------------


def test_ipv6_forwarding_only_with_an_ipv6_pool() -> None:
    assert IPV6_FORWARDING not in desired_sysctls(SysctlSettings(), (POOL4,))
    assert desired_sysctls(SysctlSettings(), (POOL4, POOL6))[IPV6_FORWARDING] == "1"


def test_accept_ra_1_becomes_2_before_forwarding_is_written() -> None:
    want = desired_sysctls(SysctlSettings(), (POOL6,), egress6="eth0", egress6_accept_ra="1")
    keys = list(want)
    assert want["net/ipv6/conf/eth0/accept_ra"] == "2"
    assert keys.index("net/ipv6/conf/eth0/accept_ra") < keys.index(IPV6_FORWARDING)


@pytest.mark.parametrize(("current", "setting", "pools"), [
    ("0", True, (POOL6,)),      # the administrator said never: left alone
    ("2", True, (POOL6,)),      # already right: nothing to write
    ("1", False, (POOL6,)),     # [sysctl] accept_ra = false
    ("1", True, (POOL4,)),      # no IPv6 pool: no IPv6 forwarding, RAs still work
    (None, True, (POOL6,)),     # no such interface
])
def test_accept_ra_left_alone(current: str | None, setting: bool, pools: tuple[Pool, ...]
                              ) -> None:
    want = desired_sysctls(SysctlSettings(accept_ra=setting), pools, egress6="eth0",
                           egress6_accept_ra=current)
    assert "net/ipv6/conf/eth0/accept_ra" not in want


def test_proxy_ndp_in_routed_mode_with_an_ipv6_pool() -> None:
    want = desired_sysctls(SysctlSettings(), (POOL6,), egress6="eth0", proxy_ndp=True)
    assert want["net/ipv6/conf/eth0/proxy_ndp"] == "1"
    assert "net/ipv6/conf/eth0/proxy_ndp" not in desired_sysctls(
        SysctlSettings(), (POOL4,), egress6="eth0", proxy_ndp=True)


def test_effective_egress6() -> None:
    cfg = SwandConfig()
    assert effective_egress6(cfg, NetState("eth0", egress6="eth1")) == "eth1"
    assert effective_egress6(cfg, NetState("eth0")) == "eth0"
    named = dataclasses.replace(cfg, ipv6=dataclasses.replace(cfg.ipv6, egress="wan6"))
    assert effective_egress6(named, NetState("eth0", egress6="eth1")) == "wan6"


# --- firewall ---------------------------------------------------------------------------


def test_ipv6_mss_is_20_bytes_smaller() -> None:
    assert mss_for(1360, "ipv4") == 1360 and mss_for(1360, "ipv6") == 1340
    d = desired_firewall(FirewallInputs(FirewallSettings(), "policy", "eth0", (POOL4, POOL6)))
    assert "--mss 1341:1536 -m comment" in render_save(d, "ipv6")
    assert "--set-mss 1340" in render_save(d, "ipv6")
    assert "--set-mss 1360" in render_save(d, "ipv4")


@pytest.mark.parametrize("mode", ["policy", "interface"])
def test_an_ipv6_child_gets_ipv6_forward_rules(mode: str) -> None:
    sa = ChildSA("rw", "rw", 7, ("0.0.0.0/0", "::/0"),
                 ("10.8.0.129/32", "2001:db8:2::1001/128"))
    d = desired_firewall(FirewallInputs(FirewallSettings(), mode, "eth0", (POOL4, POOL6),
                                        (sa,)))  # type: ignore[arg-type]
    v6 = [ln for ln in render_save(d, "ipv6").splitlines() if ln.startswith("-A SWAND-FWD")]
    assert len(v6) == 2
    assert "-s 2001:db8:2::1001/128" in v6[0] and "-d 2001:db8:2::1001/128" in v6[1]
    if mode == "policy":
        assert all("--reqid 7 --proto esp" in ln for ln in v6)
    else:
        assert "-i ipsec0" in v6[0] and "-o ipsec0" in v6[1]
    assert "2001:db8" not in render_save(d, "ipv4")


@pytest.mark.parametrize("mode", ["policy", "interface"])
def test_an_ipv6_child_gets_ipv6_forward_rules_in_nftables(mode: str) -> None:
    from swand.core.nftables import render_nft

    sa = ChildSA("rw", "rw", 7, ("0.0.0.0/0", "::/0"),
                 ("10.8.0.129/32", "2001:db8:2::1001/128"))
    d = desired_firewall(FirewallInputs(FirewallSettings(), mode, "eth0", (POOL4, POOL6),
                                        (sa,)))  # type: ignore[arg-type]
    forward = render_nft(d).split("chain forward {")[1].split("}")[0]
    v6 = [ln for ln in forward.splitlines() if "2001:db8:2::1001" in ln]
    assert len(v6) == 2 and all("ip6 " in ln for ln in v6), forward
    assert ("reqid 7" in forward) is (mode == "policy")


def test_nat66_masquerades_the_ipv6_pool_only_in_nat66_mode() -> None:
    ula = Pool.from_addrs("pool6", "fd00:8::1000/116")
    d = desired_firewall(FirewallInputs(FirewallSettings(nat66=True), "interface", "eth0",
                                        (POOL4, ula)))
    assert "-s fd00:8::1000/116 -o eth0 -m comment" in render_save(d, "ipv6")
    plain = desired_firewall(FirewallInputs(FirewallSettings(), "interface", "eth0",
                                            (POOL4, ula)))
    assert "MASQUERADE" not in render_save(plain, "ipv6")


def test_routed_pool_inside_the_egress_prefix_is_fine_unless_it_holds_its_address() -> None:
    ifaces = {"eth0": ("192.0.2.1/24", "2001:db8:2::1/64")}
    s = FirewallSettings()
    assert validate(s, pools=(POOL6,), egress="eth0", interfaces=ifaces, routed6=True) == []
    assert "overlaps the egress subnet" in str(
        validate(s, pools=(POOL6,), egress="eth0", interfaces=ifaces)[0])
    own = Pool.from_addrs("pool6", "2001:db8:2::/120")
    problems = validate(s, pools=(own,), egress="eth0", interfaces=ifaces, routed6=True)
    assert "contains 2001:db8:2::1, an address of eth0" in str(problems[0])


# --- leases and NDP proxy entries -------------------------------------------------------


def _sa(state: str, *vips: object, uid: str = "1") -> dict[str, object]:
    return {"rw": {"state": state, "uniqueid": uid, "remote-vips": list(vips)}}


def test_leases_from_list_sas_skip_and_report_what_cannot_be_read() -> None:
    skipped: list[object] = []
    read = leases_from_vici([
        _sa("ESTABLISHED", b"10.8.0.129", b"2001:db8:2:0::1001"),
        _sa("DELETING", "2001:db8:2::1002", uid="2"),
        _sa("ESTABLISHED", "not-an-ip", "2001:db8:2::1003", uid="3"),
        {"rw": "garbage"},
        _sa("ESTABLISHED", "2001:db8:2::1004", uid="4"),
    ], skipped.append)
    assert [lease.address for lease in read.leases] == [
        "10.8.0.129", "2001:db8:2::1001", "2001:db8:2::1004"]
    assert read.skipped == 2
    first = skipped[0]
    assert first.component == "ndp" and first.sa == "rw #3"  # type: ignore[attr-defined]
    assert "not-an-ip" in first.error  # type: ignore[attr-defined]


def test_one_proxy_per_ipv6_lease_on_the_egress() -> None:
    leases = leases_from_vici([_sa("ESTABLISHED", "10.8.0.129", "2001:db8:2::1001")]).leases
    assert desired_ndp_proxies(leases, "eth0") == {NdpProxy("eth0", "2001:db8:2::1001")}
    assert desired_ndp_proxies(leases, None) == frozenset()
    # the general shape: any builder, e.g. one route per lease of either family
    routes = desired_per_lease(leases, lambda lease: [(lease.address, "ipsec0")])
    assert len(routes) == 2


def test_plan_adds_and_removes_only_the_difference() -> None:
    a, b, c = (NdpProxy("eth0", f"2001:db8:2::100{i}") for i in range(3))
    p = plan_objects(frozenset({a, b}), [b, c])
    assert p.add == (a,) and p.remove == (c,)
    assert plan_objects(frozenset({a}), [a]).empty
    assert KERNEL_PROTOCOL == 250


class _Table:
    """swand's proxy entries as the kernel would hold them."""

    def __init__(self) -> None:
        self.entries: set[NdpProxy] = set()
        self.writes = 0

    async def read(self) -> frozenset[NdpProxy]:
        return frozenset(self.entries)

    async def apply(self, plan: object) -> object:
        from swand.adapters.ndp_proxy import NdpApplied

        self.entries -= set(plan.remove)  # type: ignore[attr-defined]
        self.entries |= set(plan.add)  # type: ignore[attr-defined]
        self.writes += len(plan.add) + len(plan.remove)  # type: ignore[attr-defined]
        return NdpApplied(len(plan.add), len(plan.remove))  # type: ignore[attr-defined]

    async def close(self) -> None:
        pass


def test_reconciler_follows_leases_and_fails_static_while_charon_is_away() -> None:
    lease = Lease("2001:db8:2::1001", "rw", "1")
    state: dict[str, object] = {"snap": LeaseSnapshot((lease,))}
    table = _Table()
    table.entries.add(NdpProxy("eth0", "2001:db8:2::dead"))  # left behind: drift

    async def snapshot() -> LeaseSnapshot:
        snap = state["snap"]
        if isinstance(snap, Exception):
            raise snap
        assert isinstance(snap, LeaseSnapshot)
        return snap

    async def net_state() -> NetState:
        return NetState("eth0", egress6="eth0")

    async def run() -> None:
        ndp = NdpProxyReconciler(SwandConfig(), snapshot, table=table, net_state=net_state)
        await ndp._pass(_request())
        assert table.entries == {NdpProxy("eth0", "2001:db8:2::1001")}
        await ndp._pass(_request())
        assert table.writes == 2  # an unchanged pass writes nothing
        state["snap"] = ConnectionRefusedError("charon gone")
        with pytest.raises(ConnectionRefusedError):
            await ndp._pass(_request())
        assert table.entries == {NdpProxy("eth0", "2001:db8:2::1001")}
        assert ndp.last_report is not None and not ndp.last_report.ok
        state["snap"] = LeaseSnapshot(())  # charon back, empty
        await ndp._pass(_request())
        assert table.entries == set()
        await ndp.stop()

    asyncio.run(run())


def test_reconciler_holds_a_lease_while_its_ike_sa_settles() -> None:
    lease = Lease("2001:db8:2::1001", "rw", "1")
    snaps = [LeaseSnapshot((lease,)), LeaseSnapshot((), settling=True)]
    table = _Table()

    async def snapshot() -> LeaseSnapshot:
        return snaps.pop(0)

    async def net_state() -> NetState:
        return NetState("eth0")

    async def run() -> None:
        ndp = NdpProxyReconciler(SwandConfig(), snapshot, table=table, net_state=net_state)
        await ndp._pass(_request())
        await ndp._pass(_request())
        assert table.entries == {NdpProxy("eth0", "2001:db8:2::1001")}
        await ndp.stop()

    asyncio.run(run())


def _request() -> PassRequest:
    return PassRequest({"test"})


def test_netstate_reads_the_ipv6_egress_and_whether_an_ra_made_its_route() -> None:
    """`_dump` over recorded-shape RTNL messages: the IPv4 egress as before, the IPv6
    default route's interface (lowest metric; never libipsec's ipsec0) and its origin."""
    import socket

    from swand.adapters import netlink

    class Msg(dict):  # type: ignore[type-arg]
        def get(self, key: str, default: object = None) -> object:
            return super().get(key, default)

    def route(family: int, oif: int, metric: int, proto: int) -> Msg:
        return Msg(family=family, dst_len=0, table=254, type=1, oif=oif, priority=metric,
                   proto=proto, gateway="fe80::1" if family == socket.AF_INET6 else "192.0.2.254")

    class FakeIpr:
        async def link(self, _cmd: str) -> object:
            return _aiter([Msg(index=i, ifname=n) for i, n in
                           ((1, "lo"), (2, "eth0"), (3, "eth1"), (4, "ipsec0"))])

        async def addr(self, _cmd: str) -> object:
            return _aiter([])

        async def route(self, _cmd: str) -> object:
            return _aiter([route(socket.AF_INET, 2, 0, 4),
                           route(socket.AF_INET6, 4, 1, 3),      # ipsec0: never the egress
                           route(socket.AF_INET6, 3, 1024, 9),   # learnt from an RA
                           route(socket.AF_INET6, 2, 2048, 3)])

    state = asyncio.run(netlink._dump(FakeIpr()))
    assert state.egress == "eth0"
    assert state.egress6 == "eth1" and state.egress6_from_ra


async def _aiter(items: list[object]) -> AsyncIterator[object]:
    for item in items:
        yield item
