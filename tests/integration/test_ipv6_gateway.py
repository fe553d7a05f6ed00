"""A dual-stack gateway run by `swand run` in the lab: routed IPv6 (NDP proxy per lease),
NAT66, IKE over an IPv6-only uplink, nothing left behind when an SA goes, and accept_ra.

The lab's internet has IPv6 (2001:db8::/32): the gateway has 2001:db8:2::1 in the
on-link /64 2001:db8:2::/64 of its "provider" router, which reaches a client address of
that /64 only when someone answers neighbour discovery for it; the web host on
2001:db8:113::10 (router namespace) answers each GET with the source address it saw.
The reachability tests use road warriors made by `swand client add --platform linux`
against `swand pki` credentials; the life-cycle test uses the lab's own client config,
whose connection neither restarts on DPD nor reconnects after a delete.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from swand.lab import INTERNET_HOST, INTERNET_HOST6, Host, Lab, configs, wait_for
from swand.lab.daemon import SwandProcess, swand_toml
from swand.lab.internet import fetch
from swand.lab.lab import GATEWAY_ADDRESS, GATEWAY_ADDRESS6

pytestmark = pytest.mark.lab

#: client addresses from the provider's on-link /64 (routed mode)
ROUTED_POOL6 = "2001:db8:2::1000/116"
#: a unique local pool (NAT66 mode)
ULA_POOL6 = "fd00:8::1000/116"
#: the IPv6 DNS server the gateway pushes
DNS6 = "2001:db8:113::53"


def gateway_toml(gw: Host, *, mode: str, backend: str = "auto", fw_mode: str = "auto",
                 interval: float = 2.0, metrics: str = "") -> str:
    return swand_toml(gw, firewall=True, metrics=metrics, interval=interval,
                      firewall_extra=f'backend = "{backend}"\nmode = "{fw_mode}"\n',
                      extra=f'[ipv6]\nmode = "{mode}"\n')


def start_gateway(lab: Lab, pool6: str, mode: str, **toml: object) -> SwandProcess:
    """swand loads the dual-stack gateway config (pool4 + pool6, local_ts 0/0 and ::/0)
    into charon and runs the firewall and, in routed mode, the NDP proxies."""
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf(gateway_id=lab.gateway_id, pool6=pool6,
                                               dns6=DNS6))
    swand = SwandProcess(gw, gateway_toml(gw, mode=mode, **toml))  # type: ignore[arg-type]
    swand.wait_for_event("config_reconciled", timeout=20)
    return swand


def proxies(gw: Host) -> set[str]:
    """swand's NDP proxy entries (protocol 250) on the gateway."""
    out = gw.run(["ip", "-6", "neigh", "show", "proxy"]).stdout
    return {ln.split()[0] for ln in out.splitlines() if "proto 250" in ln}


def v6_rules(gw: Host, vip6: str) -> list[str]:
    """swand's IPv6 forward rules naming `vip6`, in whichever backend holds them."""
    legacy = gw.run(["ip6tables-legacy", "-w", "-S", "SWAND-FWD"], check=False).stdout
    nft = gw.run(["nft", "list", "table", "inet", "swand"], check=False).stdout
    return [ln for ln in (legacy + nft).splitlines() if vip6 in ln]


def sysctl(host: Host, key: str) -> str:
    return host.run(["cat", f"/proc/sys/{key.replace('.', '/')}"]).stdout.strip()


def vip_of(client: Host, version: int) -> str:
    def probe() -> str | None:
        return next((v for v in client.virtual_ips() if (":" in v) == (version == 6)), None)
    return wait_for(probe, 10, message=f"an IPv{version} virtual IP on {client.name}")


def check_codes(gw: Host, toml: str) -> dict[str, str]:
    """`swand check --json` in the gateway's namespace: finding code -> severity."""
    path = gw.workdir / "check.toml"
    path.write_text(f'[swanctl]\ndir = "{gw.swanctl_dir}"\n[ipv6]\nmode = "routed"\n' + toml)
    proc = gw.run([sys.executable, "-m", "swand", "check", "-c", str(path), "--json"],
                  check=False)
    return {f["code"]: f["severity"] for f in json.loads(proc.stdout)["findings"]}


def swand_pki(lab: Lab) -> None:
    """The gateway's credentials from `swand pki` only (the lab CA's removed)."""
    from test_clients import CA_DN, wipe_lab_credentials

    from swand.cli import main

    gw = lab.gateway
    wipe_lab_credentials(gw.swanctl_dir)
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id,
                 "--san", GATEWAY_ADDRESS]) == 0


def swand_client(lab: Lab, host: Host, out: Path, gateway: str = GATEWAY_ADDRESS) -> None:
    """A road warrior made by `swand client add --platform linux` (a dual-stack gateway's
    profile asks for both virtual IPs), installed as docs/clients.md says: it connects
    on load (start_action = start)."""
    from test_clients import install_linux_client

    from swand.cli import main

    name = host.name
    (out / f"{name}.pw").write_text(f"{name}-secret-password\n")
    assert main(["client", "--swanctl-dir", str(lab.gateway.swanctl_dir), "add", name,
                 "--platform", "linux", "--out", str(out), "--gateway", gateway, "--encap",
                 "--password-file", str(out / f"{name}.pw")]) == 0
    assert "vips = 0.0.0.0, ::" in (out / f"{name}.swanctl.conf").read_text()
    install_linux_client(host, name, out)
    host.wait_for_sa(timeout=20)


@pytest.fixture
def v6_lab(make_lab: Callable[..., Lab], charon_version: str) -> Lab:
    lab = make_lab(clients=2, charon=charon_version, ipv6=True)
    lab.configure_clients(ipv6=True)
    lab.web_host()
    return lab


def test_routed_client_reaches_the_v6_web_host_with_its_leased_address(
    v6_lab: Lab, tmp_path: Path,
) -> None:
    lab = v6_lab
    gw, c1 = lab.gateway, lab.client(1)
    swand_pki(lab)
    with start_gateway(lab, ROUTED_POOL6, "routed", metrics="127.0.0.1:9817") as swand:
        swand_client(lab, c1, tmp_path)
        vip6, vip4 = vip_of(c1, 6), vip_of(c1, 4)
        wait_for(lambda: proxies(gw) == {vip6}, 5,
                 message=lambda: f"proxy for {vip6}: {proxies(gw)}\n{swand.tail()}")
        assert sysctl(gw, "net.ipv6.conf.eth0.proxy_ndp") == "1"
        assert sysctl(gw, "net.ipv6.conf.all.forwarding") == "1"
        web = lab.web_host()
        # the web host sees the client's own address: routed, not translated
        assert wait_for(lambda: fetch(c1, web.url(INTERNET_HOST6)), 10,
                        message=lambda: f"v6 fetch; {swand.tail()}") == vip6
        # and IPv4 still leaves masqueraded
        assert fetch(c1, web.url(INTERNET_HOST)) == GATEWAY_ADDRESS
        assert vip4.startswith("10.8.0.")
        # the IPv6 DNS server came with the addresses (INTERNAL_IP6_DNS in IKE_AUTH)
        assert re.search(r"IKE_AUTH response .*CPRP\([^)]*DNS6", c1.log()), c1.log_tail()
        # the router learnt the client address from the gateway's NDP proxy
        neigh = lab.router.run(["ip", "-6", "neigh", "show", vip6]).stdout
        assert "gw0" in neigh, neigh
        # metrics and status show the IPv6 lease like the IPv4 one
        def scrape() -> str:
            return gw.http_get("http://127.0.0.1:9817/metrics")
        wait_for(lambda: 'swand_virtual_ips{connection="rw",family="ipv6"} 1.0' in scrape(),
                 10, message=lambda: [ln for ln in scrape().splitlines() if "virtual" in ln])
        assert "swand_ndp_proxy_entries 1.0" in scrape()
        status = gw.run([sys.executable, "-m", "swand", "status", "--vici", gw.vici_uri,
                         "--state", ""]).stdout
        assert f"virtual IPv6: {vip6}" in status and vip4 in status, status
        # drift: someone deletes the entry; the periodic pass (interval 2 s) restores it
        gw.run(["ip", "-6", "neigh", "del", "proxy", vip6, "dev", "eth0"])
        t0 = time.monotonic()
        wait_for(lambda: proxies(gw) == {vip6}, 2 * 1.5 + 1, interval=0.05,
                 message=lambda: f"drift repair; {swand.tail()}")
        print(f"\nNDP proxy drift repaired after {time.monotonic() - t0:.2f} s",
              file=sys.stderr)

    # without the proxy entry the router cannot reach the client (swand stopped: nobody
    # repairs it); a new swand puts it back (drift repaired at start)
    gw.run(["ip", "-6", "neigh", "del", "proxy", vip6, "dev", "eth0"])
    lab.router.run(["ip", "-6", "neigh", "flush", "dev", "gw0"])
    assert fetch(c1, web.url(INTERNET_HOST6), timeout=3) is None
    with start_gateway(lab, ROUTED_POOL6, "routed") as swand:
        wait_for(lambda: proxies(gw) == {vip6}, 5, message=lambda: swand.tail())
        assert wait_for(lambda: fetch(c1, web.url(INTERNET_HOST6)), 10) == vip6
    # stopping swand leaves the entry (fail static); `swand flush` removes it
    assert proxies(gw) == {vip6}
    out = gw.run([sys.executable, "-m", "swand", "flush"]).stdout
    assert "ndp proxy: removed 1 entries" in out and proxies(gw) == set()


def test_nat66_client_reaches_the_v6_web_host_as_the_gateway(
    v6_lab: Lab, tmp_path: Path,
) -> None:
    lab = v6_lab
    gw, c1 = lab.gateway, lab.client(1)
    swand_pki(lab)
    with start_gateway(lab, ULA_POOL6, "nat66") as swand:
        swand_client(lab, c1, tmp_path)
        vip6 = vip_of(c1, 6)
        assert vip6.startswith("fd00:8::")
        web = lab.web_host()
        assert wait_for(lambda: fetch(c1, web.url(INTERNET_HOST6)), 10,
                        message=lambda: f"v6 fetch; {swand.tail()}") == GATEWAY_ADDRESS6
        assert proxies(gw) == set()  # NAT66 needs no proxy entry
        assert sysctl(gw, "net.ipv6.conf.eth0.proxy_ndp") == "0"


def test_ipv6_only_uplink_connects_over_ikev6(v6_lab: Lab, tmp_path: Path) -> None:
    lab = v6_lab
    gw, c1 = lab.gateway, lab.client(1)
    # an IPv6-only mobile network: no IPv4 on the uplink at all
    c1.run(["ip", "-4", "addr", "flush", "dev", "eth0"])
    swand_pki(lab)
    with start_gateway(lab, ROUTED_POOL6, "routed") as swand:
        swand_client(lab, c1, tmp_path, gateway=GATEWAY_ADDRESS6)
        sa = gw.wait_for_sa("rw")
        assert sa["local-host"] == GATEWAY_ADDRESS6 and ":" in sa["remote-host"]
        vip6 = vip_of(c1, 6)
        web = lab.web_host()
        assert wait_for(lambda: fetch(c1, web.url(INTERNET_HOST6)), 10,
                        message=lambda: f"v6 fetch; {swand.tail()}") == vip6
        # IPv4 rides the same IKEv6 tunnel
        assert fetch(c1, web.url(INTERNET_HOST)) == GATEWAY_ADDRESS


@pytest.mark.parametrize(("backend", "fw_mode"), [("legacy", "policy"),
                                                  ("nftables", "interface")])
def test_delete_dpd_and_charon_crash_leave_no_proxy_and_no_v6_rule(
    v6_lab: Lab, backend: str, fw_mode: str,
) -> None:
    lab = v6_lab
    gw, c1, c2 = lab.gateway, lab.client(1), lab.client(2)
    timings: dict[str, float] = {}

    def connected(client: Host) -> str:
        lab.connect(client)
        vip6 = vip_of(client, 6)
        wait_for(lambda: vip6 in proxies(gw) and len(v6_rules(gw, vip6)) == 2, 5,
                 message=lambda: f"proxy and rules for {vip6}: {proxies(gw)} "
                                 f"{v6_rules(gw, vip6)}\n{swand.tail()}")
        return vip6

    def gone(vip6: str, what: str) -> None:
        t0 = time.monotonic()
        wait_for(lambda: vip6 not in proxies(gw) and not v6_rules(gw, vip6), 2,
                 interval=0.02, message=lambda: f"{what}: left {proxies(gw)} "
                                                f"{v6_rules(gw, vip6)}\n{swand.tail()}")
        timings[what] = time.monotonic() - t0

    # an administrator's own proxy entry (no protocol mark) is never swand's to remove
    admin = "2001:db8:2::beef"
    gw.run(["ip", "-6", "neigh", "add", "proxy", admin, "dev", "eth0"])
    with start_gateway(lab, ROUTED_POOL6, "routed", backend=backend, fw_mode=fw_mode,
                       interval=30.0) as swand:
        # a plain delete by the client
        vip6 = connected(c1)
        c1.swanctl("--terminate", "--ike", "rw")
        gone(vip6, "delete")

        # DPD: the client dies silently; clocked from the moment charon clears the SA
        vip6 = connected(c2)
        c2.kill9()
        wait_for(lambda: not any(vip6 in sa.get("remote-vips", []) for sa in gw.list_sas()),
                 30, interval=0.05, message="DPD clearing client2's SA")
        gone(vip6, "dpd")

        # kill -9 of the gateway's charon: clocked from the restarted charon answering
        vip6 = connected(c1)
        gw.kill9()
        gw.start_charon()
        gone(vip6, "charon-crash")
        assert proxies(gw) == set()
    assert admin in gw.run(["ip", "-6", "neigh", "show", "proxy"]).stdout
    print(f"\nseconds until nothing left ({backend}/{fw_mode}, charon "
          f"{lab.charon_version}): {timings}", file=sys.stderr)


def test_forwarding_keeps_the_ra_default_route_with_accept_ra_2(v6_lab: Lab) -> None:
    """Without swand: switching IPv6 forwarding on purges the RA default route at once
    and, with accept_ra 1, no later RA installs it again (the outage). With swand (a v6
    pool): accept_ra 2 is written before forwarding, so the route survives the switch and
    every RA refreshes it."""
    lab = v6_lab
    gw = lab.gateway
    radvd = lab.radvd()

    def ra_default() -> str:
        out = gw.run(["ip", "-6", "route", "show", "default"]).stdout
        return out if re.search(r"proto ra", out) else ""

    gw.run(["ip", "-6", "route", "del", "default"])  # the lab's static one
    wait_for(ra_default, 15, message=lambda: f"an RA default route; radvd: "
                                             f"{radvd.log_path.read_text()}")
    # `swand check` sees the RA route: fine when swand fixes accept_ra, an error if not
    gw.write_swanctl_conf(configs.gateway_conf(gateway_id=lab.gateway_id, pool6=ROUTED_POOL6))
    assert "ipv6-accept-ra" not in check_codes(gw, "")
    assert check_codes(gw, "[sysctl]\naccept_ra = false\n")["ipv6-accept-ra"] == "error"
    # the classic outage: forwarding on with accept_ra 1
    gw.sysctl("net.ipv6.conf.all.forwarding", 1)
    time.sleep(5.0)  # more than one RA interval (MaxRtrAdvInterval 4): nothing comes back
    assert not ra_default()
    gw.sysctl("net.ipv6.conf.all.forwarding", 0)
    wait_for(ra_default, 15, message="the RA default route back without forwarding")

    with start_gateway(lab, ROUTED_POOL6, "routed") as swand:
        wait_for(lambda: sysctl(gw, "net.ipv6.conf.all.forwarding") == "1", 10,
                 message=lambda: swand.tail())
        assert sysctl(gw, "net.ipv6.conf.eth0.accept_ra") == "2"
        assert ra_default(), "the RA route must survive forwarding being switched on"
        gw.run(["ip", "-6", "route", "del", "default"])
        wait_for(ra_default, 10, message=lambda: f"RA default route with forwarding on; "
                                                 f"{swand.tail()}")
        assert swand.find("sysctl set", key="net.ipv6.conf.eth0.accept_ra", new="2")
    radvd.stop()
