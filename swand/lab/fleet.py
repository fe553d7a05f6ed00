"""A fleet lab: two gateways, an internal router running FRR (BGP), an internal host.

Built on top of a started `Lab` (whose gateway is gateway A), additively::

    client1 (t520), client2 (bulk) ── router ("internet") ──┬── gateway  (A) 192.0.2.1
                                                             └── gatewayb (B) 203.0.113.1
    gateway eth1 10.0.0.1, gatewayb eth1 10.0.0.2 ── br0 inner 10.0.0.254
    inner ih 10.0.9.254 ── internal 10.0.9.10

Each gateway runs charon, `swand run` with ``[routes]`` (the test starts it) and FRR
(zebra + bgpd, AS 65001, ``redistribute kernel`` of the virtual-IP prefix: the example
etc/frr/frr.conf, with faster timers); the inner router runs zebra + bgpd in AS 65000
(etc/frr/internal-router.conf) accepting any gateway of
10.0.0.0/24 (``bgp listen range``) and announcing 10.0.9.0/24. Both gateways share one
AS, so a route one gateway announced never comes back to the other through the inner
router (AS-path loop check): each gateway routes only its own leases into its tunnels.

FRR runs without watchfrr: zebra and bgpd in the foreground per namespace, each with its
own config, pid, zserv socket and vty folder under the host's lab folder, started with
`Host.popen` so the lab kills them on teardown (and its leftovers check sees any).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swand.lab.util import LabError, sh, wait_for

if TYPE_CHECKING:
    from swand.lab.lab import Host, Lab

FRR_DIR = Path("/usr/lib/frr")
GATEWAY_B_ADDRESS = "203.0.113.1"
ROUTER_GATEWAY_B_SIDE = "203.0.113.254"
INNER_LAN = "10.0.0.254"
GATEWAY_LAN = {"gateway": "10.0.0.1", "gatewayb": "10.0.0.2"}
#: the internal network the clients' tunnels reach: the gateways' LAN and the host's net
#: (libipsec wants a local address of the gateway inside local_ts as the route source)
INTERNAL = "10.0.0.0/16"
INTERNAL_NET = "10.0.9.0/24"
INNER_INTERNAL = "10.0.9.254"
INTERNAL_HOST = "10.0.9.10"
#: the pinned client's address, the same on every gateway
PINNED = "10.8.0.1"


#: the FRR examples the lab runs (etc/frr/ in the source tree)
ETC_FRR = Path(__file__).resolve().parents[2] / "etc" / "frr"


def _example(name: str, replacements: dict[str, str]) -> str:
    """An etc/frr example with the lab's changes: faster timers, a log file."""
    path = ETC_FRR / name
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError(f"the fleet lab runs {path}: {exc.strerror}") from None
    replacements = {"timers 3 9": "timers 1 3", "timers connect 5": "timers connect 1",
                    "log syslog informational": "log file {log}", **replacements}
    for old, new in replacements.items():
        if old not in text:
            raise LabError(f"{path} no longer contains {old!r}: update swand.lab.fleet")
        text = text.replace(old, new)
    return text


def gateway_bgpd_conf(name: str, router_id: str) -> str:
    """etc/frr/frr.conf for one gateway: announce swand's host routes to the inner
    router."""
    return _example("frr.conf", {"hostname vpn-a": f"hostname {name}",
                                 "bgp router-id 10.0.0.1": f"bgp router-id {router_id}"})


def inner_bgpd_conf() -> str:
    return _example("internal-router.conf", {})


class Frr:
    """zebra + bgpd in one lab namespace, with paths of their own."""

    def __init__(self, host: Host, bgpd_conf: str) -> None:
        self.host = host
        self.dir = host.workdir / "frr"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zserv = self.dir / "zserv.api"
        (self.dir / "zebra.conf").write_text(
            f"hostname {host.name}\nlog file {self.dir / 'zebra.log'}\n")
        (self.dir / "bgpd.conf").write_text(bgpd_conf.replace("{log}",
                                                              str(self.dir / "bgpd.log")))

    def _argv(self, daemon: str) -> list[str]:
        return [str(FRR_DIR / daemon), "-f", str(self.dir / f"{daemon}.conf"),
                "-i", str(self.dir / f"{daemon}.pid"), "-z", str(self.zserv),
                "--vty_socket", str(self.dir), "-P", "0",
                # root, but FRR insists the user be in its vty group: getgrouplist()
                # counts the group given here, so root needs no change to /etc/group
                "-u", "root", "-g", "frrvty"]

    def start(self) -> None:
        """zebra, then bgpd; each is up once its vty socket exists."""
        if not (FRR_DIR / "bgpd").exists():
            raise LabError("FRR is not installed (apt-get install frr; dev.sh does)")
        for daemon in ("zebra", "bgpd"):
            out_path = self.dir / f"{daemon}.out"
            with out_path.open("ab") as out:
                proc = self.host.popen(self._argv(daemon), stdout=out, stderr=out)

            def up(proc: Any = proc, daemon: str = daemon, out_path: Path = out_path) -> bool:
                if proc.poll() is not None:
                    raise LabError(f"{daemon} in {self.host.name} exited: "
                                   f"{out_path.read_text(errors='replace')[-2000:]}")
                return (self.dir / f"{daemon}.vty").exists()

            wait_for(up, 15.0, message=f"{daemon} in {self.host.name}")

    def vtysh(self, *commands: str) -> str:
        argv = [shutil.which("vtysh") or "/usr/bin/vtysh", "--vty_socket", str(self.dir)]
        for c in commands:
            argv += ["-c", c]
        return self.host.run(argv, timeout=15.0).stdout

    def established_peers(self) -> int:
        data = json.loads(self.vtysh("show bgp ipv4 unicast summary json") or "{}")
        peers = (data.get("peers") or {}) if isinstance(data, dict) else {}
        return sum(1 for p in peers.values() if p.get("state") == "Established")


class Fleet:
    """Gateway B, the inner router and the internal host around a started `Lab`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.frr: dict[str, Frr] = {}
        self.gateway_b: Host
        self.inner: Host
        self.internal: Host

    @property
    def gateways(self) -> list[Host]:
        return [self.lab.gateway, self.gateway_b]

    def up(self) -> Fleet:
        lab = self.lab
        if lab.ca is None:
            raise LabError("the fleet needs a started lab")
        self.gateway_b = lab.add_host("gatewayb", start=False)
        self.gateway_b.address = GATEWAY_B_ADDRESS
        cert = lab.ca.issue("gatewayb", dns=(lab.gateway_id,), ips=(GATEWAY_B_ADDRESS,),
                            server=True, common_name=lab.gateway_id)
        self.gateway_b.cert = cert
        cert.install(self.gateway_b.swanctl_dir, lab.ca)
        # add_host's own charon files are named after the host; the gateway conf
        # names its cert gateway.pem on both gateways
        (self.gateway_b.swanctl_dir / "x509" / "gatewayb.pem").rename(
            self.gateway_b.swanctl_dir / "x509" / "gateway.pem")
        (self.gateway_b.swanctl_dir / "private" / "gatewayb.pem").rename(
            self.gateway_b.swanctl_dir / "private" / "gateway.pem")
        self.inner = lab.add_host("inner", start=False)
        self.inner.charon = None
        self.internal = lab.add_host("internal", start=False)
        self.internal.charon = None
        self.inner.address, self.internal.address = INNER_LAN, INTERNAL_HOST
        self._build_network()
        self.gateway_b.start_charon()
        for gw in self.gateways:
            self.frr[gw.name] = Frr(gw, gateway_bgpd_conf(gw.name, GATEWAY_LAN[gw.name]))
        self.frr["inner"] = Frr(self.inner, inner_bgpd_conf())
        for frr in self.frr.values():
            frr.start()
        wait_for(lambda: self.frr["inner"].established_peers() == 2, 30.0,
                 message=lambda: "BGP sessions of the inner router: "
                 + self.frr["inner"].vtysh("show bgp summary"))
        return self

    def _build_network(self) -> None:
        lab, a, b = self.lab, self.lab.gateway, self.gateway_b
        r, inner, internal = lab.router.netns, self.inner.netns, self.internal.netns
        ip = ["ip", "-n"]
        cmds = [
            [*ip, r, "link", "add", "gwb", "type", "veth", "peer", "name", "eth0", "netns",
             b.netns],
            [*ip, r, "addr", "add", f"{ROUTER_GATEWAY_B_SIDE}/24", "dev", "gwb"],
            [*ip, r, "link", "set", "gwb", "up"],
            [*ip, b.netns, "addr", "add", f"{GATEWAY_B_ADDRESS}/24", "dev", "eth0"],
            [*ip, b.netns, "link", "set", "eth0", "up"],
            [*ip, b.netns, "route", "add", "default", "via", ROUTER_GATEWAY_B_SIDE],
            [*ip, inner, "link", "set", "lo", "up"],
            [*ip, inner, "link", "add", "br0", "type", "bridge"],
            [*ip, inner, "addr", "add", f"{INNER_LAN}/24", "dev", "br0"],
            [*ip, inner, "link", "set", "br0", "up"],
            [*ip, inner, "link", "add", "ih", "type", "veth", "peer", "name", "eth0",
             "netns", internal],
            [*ip, inner, "addr", "add", f"{INNER_INTERNAL}/24", "dev", "ih"],
            [*ip, inner, "link", "set", "ih", "up"],
            [*ip, internal, "addr", "add", f"{INTERNAL_HOST}/24", "dev", "eth0"],
            [*ip, internal, "link", "set", "eth0", "up"],
            [*ip, internal, "route", "add", "default", "via", INNER_INTERNAL],
        ]
        for gw, port in ((a, "ia"), (b, "ib")):
            cmds += [
                [*ip, inner, "link", "add", port, "type", "veth", "peer", "name", "eth1",
                 "netns", gw.netns],
                [*ip, inner, "link", "set", port, "master", "br0", "up"],
                [*ip, gw.netns, "addr", "add", f"{GATEWAY_LAN[gw.name]}/24", "dev", "eth1"],
                [*ip, gw.netns, "link", "set", "eth1", "up"],
            ]
        for cmd in cmds:
            sh(cmd)
        for host in (a, b, self.inner):
            host.sysctl("net.ipv4.ip_forward", 1)

    # --- what the tests look at ------------------------------------------------------

    def inner_routes(self) -> dict[str, str]:
        """The inner router's BGP routes into the virtual-IP prefix: address -> the
        gateway's name ("gateway" or "gatewayb") whose LAN address is the next hop."""
        by_address = {v: k for k, v in GATEWAY_LAN.items()}
        out = self.inner.run(["ip", "-j", "route", "show", "proto", "bgp"]).stdout
        routes: dict[str, str] = {}
        for r in json.loads(out or "[]"):
            dst = str(r.get("dst", ""))
            if dst.startswith("10.8."):
                routes[dst.split("/")[0]] = by_address.get(str(r.get("gateway")), "?")
        return routes
