"""`swand run` against real charons in the lab: start, SIGHUP reloads, broken files,
charon restarts. The daemon is the real command line in the gateway's namespace."""

from __future__ import annotations

import re
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from swand.lab import Host, Lab, configs, wait_for
from swand.lab.daemon import SwandProcess, start_swand

pytestmark = pytest.mark.lab


def extra_conn(name: str, peer: str = "198.51.100.99", dpd: str = "30s") -> str:
    """A small PSK connection to an absent peer: something to add, change and remove."""
    return f"""
connections {{
    {name} {{
        remote_addrs = {peer}
        dpd_delay = {dpd}
        local {{
            auth = psk
        }}
        remote {{
            auth = psk
        }}
        children {{
            {name} {{
                remote_ts = 10.99.0.0/24
            }}
        }}
    }}
}}
"""


def conn_names(lab: Lab) -> set[str]:
    return set(lab.gateway.list_conns())


def ike_unique_ids(lab: Lab) -> set[str]:
    return {sa["uniqueid"] for sa in lab.gateway.list_sas()}


def test_gateway_configured_only_by_swand(versioned_lab: Lab):
    lab = versioned_lab
    lab.gateway.write_swanctl_conf(configs.gateway_conf())
    with start_swand(lab.gateway) as swand:
        assert conn_names(lab) == {"rw"}
        lab.configure_clients()
        vip = lab.connect(lab.client(1))
        assert vip.startswith("10.8.0.")
        assert swand.find("config_reconciled")[0]["ok"] is True


def test_sighup_adds_changes_removes_while_unrelated_sa_stays_up(lab: Lab):
    gw = lab.gateway
    base = configs.gateway_conf()
    gw.write_swanctl_conf(base + extra_conn("old") + extra_conn("chg"))
    with start_swand(gw) as swand:
        lab.configure_clients()
        lab.connect(lab.client(1))
        before = ike_unique_ids(lab)
        assert conn_names(lab) == {"rw", "old", "chg"}

        gw.write_swanctl_conf(base + extra_conn("chg", dpd="10s") + extra_conn("new"))
        swand.sighup()
        done = swand.wait_for_event("config_reconciled", after=0,
                                    predicate=lambda e: "sighup" in e["reasons"])
        assert done["ok"] is True
        assert conn_names(lab) == {"rw", "chg", "new"}
        assert gw.list_conns()["chg"]["dpd_delay"] == "10"
        assert ike_unique_ids(lab) == before, "the road warrior's SA was disturbed"

        # an unchanged reload loads nothing at all
        swand.sighup()
        again = swand.wait_for_event("config_reconciled", after=1,
                                     predicate=lambda e: "sighup" in e["reasons"])
        assert again["changed"] == 0 and "load" not in again, again
        assert ike_unique_ids(lab) == before


def test_broken_file_on_sighup_keeps_everything(lab: Lab):
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw) as swand:
        lab.configure_clients()
        lab.connect(lab.client(1))
        before = ike_unique_ids(lab)
        gw.write_swanctl_conf("connections {\n  rw {\n    version = 2\n")  # unbalanced
        swand.sighup()
        err = swand.wait_for_event("config_error")
        assert "swanctl.conf:" in err["detail"]
        time.sleep(0.5)
        assert conn_names(lab) == {"rw"}
        assert ike_unique_ids(lab) == before
        assert gw.list_sas(), "SA lost after a broken reload"


def test_charon_killed_and_restarted_gets_config_back_within_2s(versioned_lab: Lab):
    gw = versioned_lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw) as swand:
        gw.kill9()
        swand.wait_for_event("charon_unreachable", timeout=5)
        gw.start_charon()  # returns once the VICI socket answers
        back = time.monotonic()
        wait_for(lambda: "rw" in gw.list_conns(), 5, interval=0.05)
        assert time.monotonic() - back < 2.0
        assert swand.proc.poll() is None


def vici_connections_of(host: Host, pid: int) -> int:
    """How many connections process `pid` holds to `host`'s charon VICI socket, from
    `ss -x` in the host's namespace: charon's accepted ends (local address: the socket's
    path) whose peer is a socket of `pid`."""
    out = host.run(["ss", "-x", "-a", "-p", "-n", "-H"]).stdout
    path = str(host.vici_socket)
    ours: set[str] = set()
    charon_peers: list[str] = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[0] != "u_str" or fields[1] != "ESTAB":
            continue
        local, local_inode, peer_inode = fields[4], fields[5], fields[7]
        if f"pid={pid}," in line:
            ours.add(local_inode)
        if local == path:
            charon_peers.append(peer_inode)
    return sum(1 for inode in charon_peers if inode in ours)


def test_a_running_daemon_holds_three_vici_connections_and_logs_a_restart_once(lab: Lab):
    """`swand run` with loader, events, metrics, firewall and keepalive: one `Charon`
    owner holds the VICI connections (events, queries, commands; there were six) and
    is the one place that notices a restart (there were four, logging it twice)."""
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf() + extra_conn("keep"))
    keep = '[keepalive]\nconns = ["keep"]\n'
    with start_swand(gw, firewall=True, metrics="127.0.0.1:9818", extra=keep) as swand:
        swand.wait_for_event("firewall reconciled")
        gw.http_get("http://127.0.0.1:9818/metrics")
        pid = swand_pid(swand)
        wait_for(lambda: vici_connections_of(gw, pid) == 3, 5, interval=0.1,
                 message=lambda: f"{vici_connections_of(gw, pid)} VICI connections")
        time.sleep(1.5)  # a metrics poll, a firewall pass, a keepalive attempt later
        held = vici_connections_of(gw, pid)
        assert held <= 3, f"{held} VICI connections"

        gw.kill9()
        swand.wait_for_event("charon_unreachable", timeout=5)
        gw.start_charon()
        swand.wait_for_event("charon_up", predicate=lambda e: e.get("restarted") is True,
                             timeout=10)
        wait_for(lambda: "rw" in gw.list_conns(), 10, interval=0.1)
        time.sleep(1.5)  # anything that would notice the restart late, would by now
        assert len(swand.find("charon_restarted")) == 1, swand.tail(40)
        assert vici_connections_of(gw, pid) <= 3
        metrics = gw.http_get("http://127.0.0.1:9818/metrics")
        assert "swand_charon_restarts_total 1.0" in metrics
        print(f"\nswand run holds {held} VICI connections")


def test_a_config_load_does_not_wait_behind_an_initiate_to_an_absent_peer(lab: Lab):
    """Keepalive and the loader share the write connection, and charon serves one
    connection's commands in order. Proven by order, not time: the SIGHUP's load is
    logged before keepalive's pending initiate fails (a blocking initiate is answered
    first and the load waits behind it, up to 15 s)."""
    gw = lab.gateway
    base = configs.gateway_conf() + extra_conn("keep")
    gw.write_swanctl_conf(base)
    with start_swand(gw, extra='[keepalive]\nconns = ["keep"]\n') as swand:
        swand.wait_for_event("keepalive_initiate")
        gw.write_swanctl_conf(base + extra_conn("new"))
        swand.sighup()
        swand.wait_for_event("config_reconciled", timeout=30,
                             predicate=lambda e: "sighup" in e["reasons"])
        swand.wait_for_event("keepalive_initiate_failed", timeout=30)
        events = swand.events()
        failed = next(i for i, e in enumerate(events)
                      if e.get("event") == "keepalive_initiate_failed")
        loaded = next(i for i, e in enumerate(events) if e.get("event") == "config_reconciled"
                      and "sighup" in e.get("reasons", ()))
        assert loaded < failed, swand.tail(30)
        assert "new" in conn_names(lab)
        asked = next(e for e in events if e.get("event") == "reload_requested")
        print(f"\nSIGHUP to loaded: {stamp(events[loaded]) - stamp(asked):.3f} s, initiate "
              f"pending until {stamp(events[failed]) - stamp(asked):.3f} s")


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def swand_pid(swand: SwandProcess) -> int:
    """The pid of this test's `swand run` python process. Not `pgrep -f`: that sees
    every namespace's processes and picked another lab's daemon on a busy machine.
    (`setpriv` and `ip netns exec` exec the command, so the Popen pid is python's.)"""
    pid = swand.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"swand" in cmdline and b"run" in cmdline, cmdline
    return pid


def test_objects_unloaded_by_someone_else_are_repaired_within_one_interval(lab: Lab):
    """Debian's strongswan.service runs `swanctl --load-all` on start and reload: with a
    different file it unloads swand's connections; the periodic check puts them back."""
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, interval=2.0) as swand:
        other = Path(gw.workdir) / "other-swanctl"
        (other / "conf.d").mkdir(parents=True)
        (other / "swanctl.conf").write_text("connections {\n}\n")
        gw.swanctl("--load-all", "--file", str(other / "swanctl.conf"))
        assert "rw" not in gw.list_conns()
        gone = time.monotonic()
        wait_for(lambda: "rw" in gw.list_conns(), 4.0, interval=0.1)
        assert time.monotonic() - gone <= 2.0 + 0.5  # one interval (+ jitter)
        assert swand.find("config_reconciled", ok=True)


class NotifySocket:
    """The receiving end of sd_notify, as systemd would hold it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait_for(self, key: str, after: int = 0, timeout: float = 10.0) -> dict[str, str]:
        def probe() -> dict[str, str] | None:
            found = [m for m in self.drain() if key in m]
            return found[after] if len(found) > after else None
        return wait_for(probe, timeout, message=f"sd_notify {key} (got {self.messages})")


def test_sd_notify_ready_reloading_watchdog_stopping(lab: Lab):
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    notify = NotifySocket(Path(gw.workdir) / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    swand = start_swand(gw, wait_ready=False, env=env)
    try:
        ready = notify.wait_for("READY")
        # READY only after the first complete load
        assert "rw" in gw.list_conns()
        assert "config ok" in ready.get("STATUS", "")
        notify.wait_for("WATCHDOG", after=1, timeout=5)  # pinged every 0.5 s
        swand.sighup()
        reloading = notify.wait_for("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY", after=1)
        keys = [k for m in notify.messages for k in m if k in ("READY", "RELOADING")]
        assert keys == ["READY", "RELOADING", "READY"], keys
    finally:
        assert swand.stop() == 0
    notify.wait_for("STOPPING")
    notify.sock.close()


def swand_rules(lab: Lab, chain: str | None = None) -> str:
    """swand's nftables table, or one chain of it."""
    if chain is None:
        return lab.gateway.run(["nft", "list", "table", "inet", "swand"]).stdout
    return lab.gateway.run(["nft", "list", "chain", "inet", "swand", chain]).stdout


def test_dpd_clear_is_classified_counted_and_its_forward_rules_removed(versioned_lab: Lab):
    """kill -9 of a road warrior's charon: the gateway's swand logs a `dpd` down within
    the DPD timeout + 1 s, and the per-SA forward rules of that peer are gone soon after,
    while the NAT rules stay."""
    lab = versioned_lab
    gw, client = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(configs.gateway_conf(dpd_delay="2s"))
    with start_swand(gw, firewall=True, metrics="127.0.0.1:9817") as swand:
        lab.configure_clients([client])
        vip = lab.connect(client)
        wait_for(lambda: vip in swand_rules(lab, "forward"), 5,
                 message="per-SA rules for " + vip)
        client.kill9()
        killed = time.monotonic()
        down = swand.wait_for_event("sa_down", timeout=10)
        # 2 s DPD delay + retransmits 1.0 * 1.2^n for n = 0..2 (5.64 s) + 1 s
        assert time.monotonic() - killed <= 2 + 5.64 + 1
        assert down["reason"] == "dpd" and down["vips"] == [vip]
        cleared = time.monotonic()
        wait_for(lambda: vip not in swand_rules(lab, "forward"), 3, interval=0.1,
                 message=lambda: f"{vip} gone from\n{swand_rules(lab)}\n{swand.tail(8)}")
        assert time.monotonic() - cleared <= 2.0
        assert "ip saddr 10.8.0.128/25 oifname \"eth0\" masquerade" in swand_rules(lab, "nat")
        metrics = gw.http_get("http://127.0.0.1:9817/metrics")
        assert 'swand_sa_downs_total{reason="dpd"} 1.0' in metrics


def test_a_single_port_selector_breaks_no_other_clients_rules(versioned_lab: Lab):
    """Issue 12 item 5: a client with `local_ts = dynamic[tcp/8080]` makes charon print
    `10.8.0.x/32[tcp/http-alt]` (a service name with a dash; the 6.0 chroot has no
    /etc/protocols nor /etc/services: `[6/8080]`, item 4's shape). Before, every pass
    failed from then on: the next client got no forward rules, a client that left kept
    them, and `swand_firewall_reconciles_total{result="failure"}` climbed. Now the port
    client gets its port-scoped rules and everybody else is served as usual."""
    lab = versioned_lab
    gw, porty, other = lab.gateway, lab.client(1), lab.client(2)
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, firewall=True, metrics="127.0.0.1:9817", interval=1.0) as swand:
        assert porty.ike_id is not None
        porty.write_swanctl_conf(configs.client_conf(
            client_id=porty.ike_id, cert=f"{porty.name}.pem", gateway_id=lab.gateway_id,
        ).replace("start_action = none", "start_action = none\n"
                  "                local_ts = dynamic[6/8080]"))  # 6: the chroot's swanctl
        porty.swanctl("--load-all")
        lab.configure_clients([other])
        port_vip = lab.connect(porty)
        remote_ts = gw.list_sas()[0]["child-sas"]
        printed = [ts for child in remote_ts.values() for ts in child["remote-ts"]]
        print(f"charon printed the port client's selector as {printed}")
        assert printed and printed[0].startswith(port_vip), printed
        wait_for(lambda: port_vip in swand_rules(lab, "forward"), 5,
                 message=lambda: f"rules for {port_vip} ({printed})\n{swand.tail(8)}")
        assert "8080" in swand_rules(lab, "forward")
        other_vip = lab.connect(other)
        wait_for(lambda: other_vip in swand_rules(lab, "forward"), 5,
                 message=lambda: f"rules for {other_vip}\n{swand.tail(8)}")
        other.swanctl("--terminate", "--ike", "rw")
        wait_for(lambda: other_vip not in swand_rules(lab, "forward"), 5,
                 message=lambda: f"{other_vip} gone\n{swand.tail(8)}")
        swand.wait_for_event("firewall unchanged", timeout=5)  # a periodic pass, too
        metrics = gw.http_get("http://127.0.0.1:9817/metrics")
        assert 'swand_firewall_reconciles_total{result="failure"}' not in metrics, metrics
        assert 'swand_unparsable_sas_total{component="firewall"} 0.0' in metrics
        assert not swand.find("sa_unparsable")


def test_firewall_drift_is_repaired_logged_and_counted(lab: Lab):
    """Someone deletes swand's table: the next periodic pass puts it back, says so in the
    log and counts it in /metrics; `swand status` shows the gateway meanwhile."""
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, firewall=True, metrics="127.0.0.1:9817", interval=1.0) as swand:
        swand.wait_for_event("firewall unchanged")  # settled: start-up passes are done
        assert "masquerade" in swand_rules(lab, "nat")
        gw.run(["nft", "delete", "table", "inet", "swand"])
        swand.wait_for_event("firewall_drift_repaired", timeout=5)
        assert "masquerade" in swand_rules(lab, "nat")
        metrics = gw.http_get("http://127.0.0.1:9817/metrics")
        assert "swand_firewall_drift_repairs_total 1.0" in metrics
        assert 'swand_firewall_reconciles_total{result="success"}' in metrics
        spent = re.search(r"^swand_firewall_pass_seconds_total (\S+)$", metrics, re.M)
        assert spent and float(spent.group(1)) > 0, metrics
        status = gw.run([sys.executable, "-m", "swand", "status", "--vici", gw.vici_uri,
                         "-c", str(swand.config_path)]).stdout
        assert "rw" in status
