"""`swand check` for a dual-stack gateway (`checks.check_ipv6`): each finding from a
minimal configuration that triggers it, and the same configuration fixed."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from swand.core import checks
from swand.core.checks import CheckInput, SystemFacts
from swand.core.settings import parse_text

CONF = """
connections {
    rw {
        pools = pool4, pool6
        children {
            rw {
                local_ts = %(ts)s
            }
        }
    }
}
pools {
    pool4 {
        addrs = 10.8.0.128/25
    }
    pool6 {
        addrs = %(pool6)s
    }
}
"""
ROUTED = "2001:db8:2::1000/116"
EGRESS = SystemFacts(
    ipv6_forwarding=True, egress6="eth0",
    egress6_addresses=(ipaddress.ip_interface("2001:db8:2::1/64"),
                       ipaddress.ip_interface("fe80::1/64")),
    egress6_accept_ra="2", egress6_from_ra=False,
)


def inp(ts: str = "0.0.0.0/0, ::/0", pool6: str = ROUTED, mode: str = "routed",
        **kw: bool) -> CheckInput:
    tree = parse_text(CONF % {"ts": ts, "pool6": pool6}, "swanctl.conf")
    return CheckInput(tree=tree, conf_file="swanctl.conf", ipv6_mode=mode, **kw)


def codes(found: list[checks.Finding]) -> dict[str, str]:
    return {f.code: f.severity for f in found}


def test_clean_dual_stack_gateway() -> None:
    assert checks.check_ipv6(inp(), EGRESS) == []
    assert checks.check_ipv6(inp(pool6="fd00:8::1000/116", mode="nat66"), EGRESS) == []
    # no IPv6 pool: nothing to say
    no_v6 = parse_text((CONF % {"ts": "0.0.0.0/0", "pool6": "10.9.0.0/24"}), "s.conf")
    assert checks.check_ipv6(CheckInput(tree=no_v6, conf_file="s.conf"), EGRESS) == []


def test_v6_pool_without_any_v6_selector_is_an_error_at_its_line() -> None:
    found = checks.check_ipv6(inp(ts="0.0.0.0/0"), EGRESS)
    assert codes(found) == {"ipv6-no-selector": "error"}
    assert found[0].line == 7 and "local_ts = 0.0.0.0/0, ::/0" in found[0].fix
    assert codes(checks.check_ipv6(inp(ts="0.0.0.0/0, 2001:db8:9::/48"), EGRESS)) == {
        "ipv6-split-selector": "warning"}


def test_routed_pool_must_be_on_the_egress_link() -> None:
    found = checks.check_ipv6(inp(pool6="2001:db8:7::1000/116"), EGRESS)
    assert codes(found) == {"ipv6-routed-off-link": "error"}
    assert "on-link: 2001:db8:2::/64" in found[0].message
    # mode none: a prefix the provider routes to the gateway needs no NDP
    assert checks.check_ipv6(inp(pool6="2001:db8:7::1000/116", mode="none"), EGRESS) == []


def test_routed_without_kernel_writes() -> None:
    found = checks.check_ipv6(inp(writes_kernel=False), EGRESS)
    assert codes(found) == {"ipv6-routed-no-kernel": "warning"}


def test_ula_pool_without_nat66() -> None:
    assert codes(checks.check_ipv6(inp(pool6="fd00:8::1000/116", mode="none"), EGRESS)) == {
        "ipv6-ula-unrouted": "warning"}


def test_forwarding_off_and_swand_not_setting_it() -> None:
    off = replace(EGRESS, ipv6_forwarding=False)
    assert checks.check_ipv6(inp(), off) == []  # swand sets it
    assert codes(checks.check_ipv6(inp(sets_forwarding=False), off)) == {
        "ipv6-forwarding": "warning"}


@pytest.mark.parametrize(("accept_ra", "sets", "finding"), [
    ("1", True, False),    # swand turns 1 into 2 before forwarding
    ("1", False, True),    # [sysctl] accept_ra = false: the route will go
    ("0", True, True),     # 0 is the administrator's; swand leaves it: the route will go
    ("2", False, False),
])
def test_accept_ra_that_drops_the_ra_default_route(accept_ra: str, sets: bool,
                                                   finding: bool) -> None:
    facts = replace(EGRESS, egress6_from_ra=True, egress6_accept_ra=accept_ra)
    found = checks.check_ipv6(inp(sets_accept_ra=sets), facts)
    assert (codes(found) == {"ipv6-accept-ra": "error"}) is finding, found
    static = replace(facts, egress6_from_ra=False)
    assert checks.check_ipv6(inp(sets_accept_ra=sets), static) == []


def test_routed_pool_on_the_egress_link_is_no_subnet_warning() -> None:
    facts = replace(EGRESS, addresses=EGRESS.egress6_addresses)
    assert checks.check_pools(inp(), facts) == []
    assert codes(checks.check_pools(inp(mode="none"), facts)) == {
        "pool-gateway-subnet": "warning"}
    own = replace(facts, addresses=(ipaddress.ip_interface("2001:db8:2::1001/64"),),
                  egress6_addresses=(ipaddress.ip_interface("2001:db8:2::1001/64"),))
    assert codes(checks.check_pools(inp(), own)) == {"pool-gateway-address": "error"}
