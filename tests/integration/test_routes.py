"""[routes] with `swand run` and real charons: a kernel route per leased virtual IP,
added when the CHILD_SA is up, removed when it goes (delete, DPD, charon crash), drift
repaired, nothing left behind after kill -9 of swand and charon."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from swand.lab import Lab, configs, wait_for
from swand.lab.daemon import start_swand

pytestmark = pytest.mark.lab

PROTO = 157


def routes_toml(table: int = 254, device: str = "auto", interval: float = 1.0) -> str:
    return (f"[routes]\nenabled = true\ntable = {table}\nprotocol = {PROTO}\n"
            f'interval = {interval}\ndevice = "{device}"\n[fleet]\ngateway = "gw-a"\n')


def owned_routes(lab: Lab, table: int = 254) -> dict[str, dict[str, object]]:
    """swand's routes in the gateway: destination -> `ip -j route` entry."""
    proc = lab.gateway.run(["ip", "-j", "route", "show", "table", str(table), "proto",
                            str(PROTO)], check=False)
    if proc.returncode != 0 and "table does not exist" in proc.stderr:
        return {}
    return {r["dst"]: r for r in json.loads(proc.stdout or "[]")}


def wait_routes(lab: Lab, want: set[str], timeout: float = 5.0, table: int = 254
                ) -> dict[str, dict[str, object]]:
    def probe() -> tuple[dict[str, dict[str, object]]] | None:
        routes = owned_routes(lab, table)
        return (routes,) if set(routes) == want else None  # truthy even when empty

    return wait_for(probe, timeout, message=lambda: f"routes {sorted(want)}, have "
                    f"{sorted(owned_routes(lab, table))}")[0]


def reconnect(lab: Lab) -> str:
    """client1 again, after its gateway's charon died (the client still has the SA)."""
    lab.client(1).swanctl("--terminate", "--ike", "rw", "--force", "--timeout", "2",
                          check=False)
    return lab.connect(lab.client(1))


@pytest.fixture
def gw(rw_lab: Lab) -> Lab:
    return rw_lab


def test_route_follows_the_sa_up_and_down(gw: Lab) -> None:
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(), firewall=False) as swand:
        assert owned_routes(lab) == {}
        vip = lab.connect(lab.client(1))
        routes = wait_routes(lab, {vip})
        # libipsec (the lab's charons): into the TUN device
        assert routes[vip]["dev"] == "ipsec0"
        vip2 = lab.connect(lab.client(2))
        wait_routes(lab, {vip, vip2})
        lab.client(1).swanctl("--terminate", "--ike", "rw")
        t0 = time.monotonic()
        wait_routes(lab, {vip2}, timeout=2.0)
        gone_after = time.monotonic() - t0
        swand.wait_for_event("routes_reconciled", predicate=lambda e: e["removed"] == 1)
        assert gone_after < 2.0


def test_kernel_esp_routes_via_the_egress_and_its_gateway(gw: Lab) -> None:
    """As with kernel ESP (the XFRM policy catches the packet after routing): the route
    goes where the outer packets go, the device and its default gateway (checked with
    `ip route`: this kernel has no ESP; `auto` picks the egress in the unit tests)."""
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(table=100, device="eth0"),
                     firewall=False):
        vip = lab.connect(lab.client(1))
        route = wait_routes(lab, {vip}, table=100)[vip]
        assert (route["dev"], route["gateway"]) == ("eth0", "192.0.2.254")


def test_drift_is_repaired(gw: Lab) -> None:
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(interval=1.0), firewall=False) as swand:
        vip = lab.connect(lab.client(1))
        wait_routes(lab, {vip})
        # someone deletes ours, someone adds one with our protocol number
        lab.gateway.run(["ip", "route", "del", f"{vip}/32", "proto", str(PROTO)])
        lab.gateway.run(["ip", "route", "add", "10.8.0.250/32", "dev", "eth0", "proto",
                         str(PROTO)])
        # a foreign route (another protocol) is never touched
        lab.gateway.run(["ip", "route", "add", "10.8.0.251/32", "dev", "eth0", "proto",
                         "static"])
        wait_routes(lab, {vip}, timeout=5.0)
        swand.wait_for_event("routes_drift_repaired")
        assert "10.8.0.251" in lab.gateway.run(["ip", "route", "show", "proto",
                                                "static"]).stdout


def test_charon_crash_withdraws_every_route(gw: Lab) -> None:
    """Routes through eth0 (as with kernel ESP): with libipsec's ipsec0 the kernel
    drops them itself when the dead charon's TUN device goes."""
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False):
        vips = {lab.connect(c) for c in lab.clients}
        wait_routes(lab, vips)
        lab.gateway.kill9()
        t0 = time.monotonic()
        wait_routes(lab, set(), timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        # charon back (empty): nothing comes back by itself
        lab.gateway.start_charon()
        lab.gateway.swanctl("--load-all")
        time.sleep(1.5)
        assert owned_routes(lab) == {}
        vip = reconnect(lab)
        wait_routes(lab, {vip})


def test_kill9_of_swand_and_charon_leaves_nothing_behind(gw: Lab) -> None:
    lab = gw
    swand = start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False)
    vips = {lab.connect(c) for c in lab.clients}
    wait_routes(lab, vips)
    swand.proc.send_signal(signal.SIGKILL)
    swand.proc.wait()
    lab.gateway.kill9()
    assert set(owned_routes(lab)) == vips  # what a crash leaves
    lab.gateway.start_charon()
    lab.gateway.write_swanctl_conf(configs.gateway_conf())
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False):
        wait_routes(lab, set(), timeout=5.0)
        vip = reconnect(lab)
        wait_routes(lab, {vip})


def test_swand_restart_adopts_routes_without_churn(gw: Lab) -> None:
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False) as first:
        vip = lab.connect(lab.client(1))
        wait_routes(lab, {vip})
    before = len(first.find("routes_reconciled"))  # the log file is shared
    assert set(owned_routes(lab)) == {vip}  # a clean stop leaves them: the SA is up
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False) as again:
        time.sleep(1.5)  # passes run: start, sa events, periodic (interval 1 s)
        assert set(owned_routes(lab)) == {vip}
        assert len(again.find("routes_reconciled")) == before


def test_flush_removes_only_swands_routes(gw: Lab) -> None:
    lab = gw
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False) as swand:
        vip = lab.connect(lab.client(1))
        wait_routes(lab, {vip})
    lab.gateway.run(["ip", "route", "add", "10.8.0.251/32", "dev", "eth0", "proto",
                     "static"])
    out = lab.gateway.run([sys.executable, "-m", "swand", "flush", "-c",
                           str(swand.config_path)]).stdout
    assert "routes: removed 1 from table 254" in out
    assert owned_routes(lab) == {}
    assert "10.8.0.251" in lab.gateway.run(["ip", "route", "show", "proto", "static"]).stdout


def test_dual_stack_client_gets_a_route_per_family(make_lab: Callable[..., Lab],
                                                   charon_version: str) -> None:
    """A /32 and a /128; the IPv6 one with the kernel's metric 1024, so the next passes
    see no difference (no churn)."""
    lab = make_lab(charon=charon_version, ipv6=True)
    lab.configure_gateway_with_swanctl(pool6="fd00:8::1000/116")
    lab.configure_clients(ipv6=True)
    with start_swand(lab.gateway, extra=routes_toml(device="eth0"), firewall=False) as swand:
        c1 = lab.client(1)
        lab.connect(c1)
        vips = wait_for(lambda: len(c1.virtual_ips()) == 2 and c1.virtual_ips(), 10,
                        message="two virtual IPs")
        v4 = next(v for v in vips if ":" not in v)
        v6 = next(v for v in vips if ":" in v)

        def both() -> dict[str, Any] | None:
            out = lab.gateway.run(["ip", "-6", "-j", "route", "show", "proto",
                                   str(PROTO)]).stdout
            six = {r["dst"]: r for r in json.loads(out or "[]")}
            return six if v6 in six and v4 in owned_routes(lab) else None

        six = wait_for(both, 5.0, message="a /32 and a /128")
        assert six[v6]["dev"] == "eth0" and six[v6]["gateway"] == "2001:db8:2::fe"
        assert six[v6]["metric"] == 1024
        changes = len(swand.find("routes_reconciled"))
        time.sleep(2.5)  # two periodic passes (interval 1 s)
        assert len(swand.find("routes_reconciled")) == changes


def test_someone_elses_route_for_a_leased_address_stays(gw: Lab) -> None:
    """An administrator's route for the address (another protocol): swand leaves it,
    says so once, and keeps every other route (no failed pass)."""
    lab = gw
    lab.gateway.run(["ip", "route", "add", "10.8.0.129/32", "dev", "eth0", "proto",
                     "static"])
    with start_swand(lab.gateway, extra=routes_toml(), firewall=False) as swand:
        vips = {lab.connect(c) for c in lab.clients}
        assert "10.8.0.129" in vips
        wait_routes(lab, vips - {"10.8.0.129"})
        event = swand.wait_for_event("routes_conflict")
        assert event["routes"] == ["10.8.0.129/32"]
        time.sleep(1.5)  # periodic passes (interval 1 s) meet the conflict again
        assert len(swand.find("routes_conflict")) == 1
        assert not [e for e in swand.find("pass failed") if e.get("runner") == "routes"]
    assert "10.8.0.129 dev eth0 proto static" in lab.gateway.run(
        ["ip", "route", "show", "10.8.0.129"]).stdout
