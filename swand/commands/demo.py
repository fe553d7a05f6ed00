"""`swand demo`: the reference gateway in a self-contained lab.

Builds the lab (router + "internet host", gateway, road warriors, one charon each, all in
network namespaces), puts the shipped `etc/swanctl/swanctl.conf` on the gateway with lab
certificates, starts `swand run` there as the only thing configuring it, brings a road
warrior and the pinned home server ("t520") up, shows who is connected with which
virtual IP and whether traffic reaches the internet host through the tunnel, and tears
everything down on Ctrl-C (or after --duration seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from swand.lab import INTERNET_HOST, Lab, LabError, configs, wait_for
from swand.lab.daemon import start_swand

#: the reference setup's gateway id and the home server's certificate name
DEMO_GATEWAY_ID = "vpn.example.org"
HOME_SERVER = "t520"

#: kernel-libipsec (the lab's kernel has no ESP) needs UDP encapsulation on both ends;
#: sections merge, so this conf.d file adds it to the shipped connections unchanged
LAB_OVERRIDES = """# written by `swand demo`: the lab's kernel has no ESP, charon uses
# kernel-libipsec, which needs UDP encapsulation; faster DPD so clears show quickly
connections {
    roadwarriors {
        encap = yes
        dpd_delay = 5s
    }
    t520 {
        encap = yes
        dpd_delay = 5s
    }
}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop after this many seconds instead of waiting for Ctrl-C")
    parser.add_argument("--charon", choices=("5.9", "6.0"), default="5.9",
                        help="charon version to run in the lab (6.0: Debian trixie chroot)")
    parser.add_argument("--metrics", default="127.0.0.1:9817", metavar="HOST:PORT",
                        help="where the gateway's swand serves /metrics (inside the "
                        "gateway namespace)")


def find_etc() -> Path:
    """The shipped etc/ folder: next to the package in a checkout, or /usr/share/swand."""
    for candidate in (Path(__file__).resolve().parents[2] / "etc",
                      Path("/usr/share/swand/etc")):
        if (candidate / "swanctl" / "swanctl.conf").is_file():
            return candidate
    raise SystemExit("swand demo: cannot find etc/swanctl/swanctl.conf (run from a checkout)")


def install_gateway_config(etc: Path, swanctl_dir: Path) -> None:
    text = (etc / "swanctl" / "swanctl.conf").read_text()
    (swanctl_dir / "swanctl.conf").write_text(text)
    (swanctl_dir / "conf.d").mkdir(exist_ok=True)
    (swanctl_dir / "conf.d" / "lab.conf").write_text(LAB_OVERRIDES)


def connected_table(sas: list[dict[str, Any]]) -> list[str]:
    """One line per IKE SA on the gateway: connection, remote id, address, virtual IP."""
    lines = [f"  {'connection':<14} {'remote id':<32} {'remote address':<16} virtual IP"]
    for sa in sorted(sas, key=lambda s: s.get("name", "")):
        vips = ", ".join(sa.get("remote-vips", []) or []) or "-"
        lines.append(f"  {sa.get('name', ''):<14} {sa.get('remote-id', ''):<32} "
                     f"{sa.get('remote-host', ''):<16} {vips}")
    return lines


def run(args: argparse.Namespace) -> int:
    """The demo; a lab that cannot be built (a charon plugin missing, ...) is one line."""
    try:
        return _demo(args)
    except LabError as exc:
        print(f"swand demo: {exc}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("swand demo: needs root (network namespaces, charon)", file=sys.stderr)
        return 2

    etc = find_etc()
    say = print
    say(f"swand demo: building the lab (charon {args.charon}) ...")
    with Lab(clients=2, charon=args.charon, gateway_id=DEMO_GATEWAY_ID) as lab:
        gw, roadwarrior, home = lab.gateway, lab.client(1), lab.client(2)
        install_gateway_config(etc, Path(gw.swanctl_dir))
        say(f"  gateway {gw.address} ({DEMO_GATEWAY_ID}) in namespace {gw.netns}")
        swand = start_swand(gw, firewall=True, metrics=args.metrics, interval=5.0)
        say(f"  swand run is configuring it: log {swand.log_path}")

        # the road warrior: any certificate of the lab CA, an address from rw_pool
        lab.configure_clients([roadwarrior])
        # the home server: a certificate whose DN pins it to 10.8.0.1
        assert lab.ca is not None  # made by Lab.up()
        t520 = lab.ca.issue(HOME_SERVER, common_name=HOME_SERVER)
        t520.install(Path(home.swanctl_dir), lab.ca)
        home.write_swanctl_conf(configs.client_conf(
            client_id=f'"C=CH, O=swand lab, CN={HOME_SERVER}"', cert=f"{HOME_SERVER}.pem",
            gateway_id=DEMO_GATEWAY_ID, conn="home", child="home"))
        home.swanctl("--load-all")

        rw_vip = lab.connect(roadwarrior)
        home_vip = lab.connect(home, child="home")
        say(f"  road warrior {roadwarrior.address} got {rw_vip}; "
            f"home server {home.address} got {home_vip}")
        try:
            reached = wait_for(lambda: roadwarrior.ping(INTERNET_HOST), 10,
                               message="ping through the tunnel")
        except TimeoutError:
            reached = False
        say(f"  road warrior -> internet host {INTERNET_HOST} through the tunnel and "
            f"the gateway's NAT: {'ok' if reached else 'FAILED (see ' + str(swand.log_path) + ')'}")
        say("connected (as the gateway's charon reports it):")
        for line in connected_table(gw.list_sas()):
            say(line)
        say(f"metrics: ip netns exec {gw.netns} curl -s http://{args.metrics}/metrics")
        say(f"status:  ip netns exec {gw.netns} swand status --vici {gw.vici_uri}")
        say("Ctrl-C to stop and clean up." if args.duration is None else
            f"stopping in {args.duration:.0f} s.")
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                swand.check_alive()
                time.sleep(0.5)
        except KeyboardInterrupt:
            say("")
        finally:
            say("swand demo: stopping swand and tearing the lab down ...")
            swand.stop()
    say("swand demo: done, nothing left behind.")
    return 0
