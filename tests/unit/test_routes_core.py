"""[routes]: leases from list-sas, desired routes, the plan, settings (pure core)."""

from __future__ import annotations

import pytest

from swand.config import ConfigError, parse_config
from swand.core.leases import Lease, leases_from_vici
from swand.core.routes import (
    KernelRoute,
    NextHops,
    RoutesInputError,
    desired_routes,
    next_hops,
    plan_routes,
)


def ike(vips: list[str], state: str = "ESTABLISHED", child_state: str = "INSTALLED",
        uid: str = "1") -> dict[str, object]:
    return {"state": state, "uniqueid": uid, "remote-host": "198.51.100.11",
            "remote-vips": vips,
            "child-sas": {"rw-1": {"name": "rw", "state": child_state, "reqid": "1"}}}


def test_leases_need_an_active_child_and_a_live_ike_sa() -> None:
    events = [
        {"rw": ike(["10.8.0.1"], uid="1")},
        {"rw": ike(["10.8.0.2", "fd00:8::2"], uid="2")},
        {"rw": ike(["10.8.0.3"], state="DELETING", uid="3")},
        {"rw": ike(["10.8.0.4"], child_state="CREATED", uid="4")},
        {"rw": {**ike(["10.8.0.5"], uid="5"), "child-sas": {}}},
    ]
    snap = leases_from_vici(events, need_child_sa=True)
    assert [lease.address for lease in snap.leases] == ["10.8.0.1", "10.8.0.2", "fd00:8::2"]
    assert snap.leases[0] == Lease("10.8.0.1", "rw", "1")
    assert snap.skipped == 0
    # without need_child_sa (NDP proxies) the IKE_SA alone counts
    assert len(leases_from_vici(events).leases) == 5


def test_an_unreadable_sa_is_skipped_and_counted_not_fatal() -> None:
    events = [
        {"rw": ike(["10.8.0.1"], uid="1")},
        {"rw": ike(["not-an-address"], uid="2")},
        {"rw": {**ike(["10.8.0.9"], uid="3"), "child-sas": "junk"}},
        {"rw": "junk"},
        {"rw": ike([b"10.8.0.7"], uid="4")},  # bytes as the raw codec gives them
    ]
    snap = leases_from_vici(events, need_child_sa=True)
    assert [lease.address for lease in snap.leases] == ["10.8.0.1", "10.8.0.7"]
    assert snap.skipped == 3


HOPS = NextHops(("eth0", "192.0.2.254"), ("eth0", "2001:db8:2::fe"))


def test_one_host_route_per_leased_address_both_families() -> None:
    leases = [Lease("10.8.0.1", "rw", "1"), Lease("fd00:8::1", "rw", "1"),
              Lease("10.8.0.1", "rw", "2")]  # make-before-break: one route, not two
    routes = desired_routes(leases, HOPS, table=254, protocol=157)
    assert routes == {
        KernelRoute("10.8.0.1/32", 254, 157, 0, "eth0", "192.0.2.254"),
        KernelRoute("fd00:8::1/128", 254, 157, 1024, "eth0", "2001:db8:2::fe"),
    }


def test_no_device_means_no_routes_and_a_clear_error() -> None:
    with pytest.raises(RoutesInputError, match=r"10\.8\.0\.1.*no default route"):
        desired_routes([Lease("10.8.0.1", "rw", "1")], NextHops(None, None), table=254,
                       protocol=157)
    assert desired_routes([], NextHops(None, None), table=254, protocol=157) == frozenset()


def test_next_hops_per_mode() -> None:
    defaults = {("eth0", "192.0.2.254"), ("eth0", "2001:db8:2::fe"), ("eth1", "10.0.0.1")}
    assert next_hops("interface", "auto", "eth0", defaults) == NextHops(
        ("ipsec0", ""), ("ipsec0", ""))
    assert next_hops("policy", "auto", "eth0", defaults) == HOPS
    assert next_hops("policy", "eth1", "eth0", defaults) == NextHops(
        ("eth1", "10.0.0.1"), ("eth1", ""))
    assert next_hops("policy", "auto", None, defaults) == NextHops(None, None)


def test_plan_adds_missing_removes_unexplained_replaces_changed() -> None:
    a = KernelRoute("10.8.0.1/32", 254, 157, 0, "ipsec0")
    b = KernelRoute("10.8.0.2/32", 254, 157, 0, "ipsec0")
    b_old = KernelRoute("10.8.0.2/32", 254, 157, 0, "eth0", "192.0.2.254")
    stale = KernelRoute("10.8.0.9/32", 254, 157, 0, "ipsec0")
    assert plan_routes({a, b}, {a, b}) == ((), ())
    add, remove = plan_routes({a, b}, {b_old, stale})
    assert add == (a, b)
    assert set(remove) == {b_old, stale}


@pytest.mark.parametrize("body, message", [
    ("protocol = 4", r"\[routes\] protocol 4 is the static"),
    ("protocol = 186", r"protocol 186 is the frr"),
    ("protocol = 12", r"protocol 12 is the bird"),
    ("protocol = 300", r"protocol must be 5..255"),
    ("table = 220", r"\[routes\] table 220 is the charon's table"),
    ("table = 0", r"table must be 1.."),
    ("metric = -1", r"metric must be"),
    ('device = ""', r"device must be"),
    ('tabel = 5', r"unknown key 'tabel' in \[routes\]"),
])
def test_bad_routes_settings_are_refused_naming_file_and_key(body: str, message: str
                                                             ) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=rf"^/etc/swand/swand.toml: .*{message}"):
        parse_config(tomllib.loads(f"[routes]\n{body}\n"), "/etc/swand/swand.toml")


def test_routes_defaults_and_fleet() -> None:
    import tomllib

    cfg = parse_config(tomllib.loads(
        '[routes]\nenabled = true\ntable = 100\n[fleet]\ngateway = "gw-a"\n'
        'peers = ["/etc/swand/fleet/b.conf"]\n'))
    assert (cfg.routes.enabled, cfg.routes.table, cfg.routes.protocol) == (True, 100, 157)
    assert cfg.fleet.gateway == "gw-a"
    assert cfg.fleet.peers == ("/etc/swand/fleet/b.conf",)
