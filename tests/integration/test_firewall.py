"""The firewall reconciler against real charons, real iptables-legacy and real traffic, in
lab namespaces only.

swand's firewall code runs *inside the gateway namespace* as a subprocess
(``ip netns exec <gw> python tests/integration/test_firewall.py agent ...``): network
namespaces are per thread, and the host's tables, sysctls and routes must never be
touched. The agent is what the daemon composes, with the daemon's own functions: a
`Charon` session owner, the firewall reconciler over its query session, wired by
`swand.runtime.wiring.wire` (so the firewall reacts to exactly what it reacts to in
`swand run`); ``--once`` is ``swand apply``'s firewall step.

The lab's charons run kernel-libipsec (this kernel has no ESP), so real traffic only
matches interface-mode rules; policy-mode rules are checked exactly with
``iptables-legacy -S``, and both modes are checked for the per-SA rule life cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

AGENT = Path(__file__).resolve()
TAG = re.compile(r'-m comment --comment "?swand:[0-9a-f]{12}"? ')


# --- the agent (runs inside the gateway namespace) ------------------------------------


async def _agent(args: argparse.Namespace) -> int:
    from swand.adapters.vici import ViciSession
    from swand.config import ConfigError, load_config
    from swand.log import configure_logging
    from swand.runtime.charon import Charon
    from swand.runtime.firewall import apply_firewall_once
    from swand.runtime.wiring import firewall_reconciler, wire

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 2
    configure_logging("json", "debug", stream=sys.stdout)
    if args.once:
        session = ViciSession(cfg.charon.vici)
        try:
            report = await apply_firewall_once(cfg, session)
        except Exception as exc:
            print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
            return 1
        finally:
            await session.close()
        print(json.dumps(report.as_dict()), flush=True)
        return 0
    charon = Charon(cfg.charon.vici)
    fw = firewall_reconciler(cfg, charon)
    wire(charon, firewall=fw)
    await fw.start()
    events = asyncio.create_task(charon.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(json.dumps({"event": "agent started"}), flush=True)
    await stop.wait()
    events.cancel()
    await fw.stop()
    await charon.close()
    print(json.dumps({"event": "agent stopped"}), flush=True)
    return 0


def agent_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--once", action="store_true")
    return asyncio.run(_agent(parser.parse_args(argv)))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "agent":
    sys.exit(agent_main(sys.argv[2:]))


# --- test helpers (run on the host, act in namespaces) --------------------------------

from swand.core.firewall import CHAIN_FWD, CHAIN_MSS, CHAIN_NAT  # noqa: E402
from swand.lab import INTERNET_HOST, VERSIONS, Host, Lab, configs, wait_for  # noqa: E402

pytestmark = pytest.mark.lab


BACKENDS = ["legacy", "nftables"]


def write_config(lab: Lab, name: str = "swand.toml", **firewall: Any) -> Path:
    lines = ["[charon]", f'vici = "{lab.gateway.vici_uri}"', "[firewall]"]
    for key, value in {"interval": 10.0, **firewall}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = lab.gateway.workdir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def apply_once(lab: Lab, config: Path) -> dict[str, Any]:
    proc = lab.gateway.run([sys.executable, str(AGENT), "agent", "--config", str(config),
                            "--once"], check=False, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": proc.stderr}
    return result


class Agent:
    """The reconciler running in the gateway namespace until stop()."""

    def __init__(self, lab: Lab, config: Path) -> None:
        self.lab = lab
        n = len(list(lab.gateway.workdir.glob("agent-*.log")))
        self.log_path = lab.gateway.workdir / f"agent-{n}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = lab.gateway.popen(
            [sys.executable, str(AGENT), "agent", "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: "agent started" in self.log(), 20,
                 message=lambda: f"agent start; log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def rules(host: Host, table: str = "filter", family: str = "ipv4") -> list[str]:
    tool = "iptables-legacy" if family == "ipv4" else "ip6tables-legacy"
    return host.run([tool, "-w", "-t", table, "-S"]).stdout.splitlines()


def ours(host: Host, table: str, family: str = "ipv4") -> list[str]:
    """swand's legacy rules with their tags removed (to compare with literal lines)."""
    return [TAG.sub("", ln) for ln in rules(host, table, family)
            if "SWAND-" in ln or "swand:" in ln]


def nft_table(host: Host) -> str:
    return host.run(["nft", "list", "table", "inet", "swand"], check=False).stdout


def sysctl(host: Host, key: str) -> str:
    return host.run(["cat", f"/proc/sys/{key.replace('.', '/')}"]).stdout.strip()


def _mentions(line: str, vip: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(vip)}(?![\d.])", line) is not None


class Kernel:
    """What one backend shows, and how an administrator (or an accident) changes it."""

    def __init__(self, host: Host, backend: str) -> None:
        self.host = host
        self.backend = backend

    def fwd_rules_for(self, vip: str) -> list[str]:
        if self.backend == "legacy":
            return [ln for ln in rules(self.host)
                    if ln.startswith(f"-A {CHAIN_FWD}") and _mentions(ln, vip)]
        section = nft_table(self.host).split("chain forward {")[-1]
        return [ln for ln in section.splitlines() if "swand:" in ln and _mentions(ln, vip)]

    def has_nat(self) -> bool:
        if self.backend == "legacy":
            return any(ln.startswith(f"-A {CHAIN_NAT}") for ln in rules(self.host, "nat"))
        return "masquerade" in nft_table(self.host)

    def snapshot(self) -> str:
        """The whole ruleset of this backend (ours and the admin's), without counters."""
        if self.backend == "legacy":
            out = self.host.run(["iptables-legacy-save"]).stdout
            return "\n".join(re.sub(r"\[\d+:\d+\]", "", ln) for ln in out.splitlines()
                             if not ln.startswith("#"))
        # table by table in name order: `list ruleset` orders tables by creation, and a
        # repaired table is a newer one
        names = sorted(ln.strip() for ln in
                       self.host.run(["nft", "list", "tables"]).stdout.splitlines())
        return "".join(self.host.run(["nft", "list", *name.split()]).stdout for name in names)

    def nat_count_loop(self) -> str:
        """A shell loop printing how many masquerade rules swand has, as fast as it can."""
        if self.backend == "legacy":
            probe = "iptables-legacy -w -t nat -S SWAND-NAT 2>/dev/null | grep -c MASQUERADE"
        else:
            probe = "nft list chain inet swand nat 2>/dev/null | grep -c masquerade"
        return f"while :; do {probe} || echo 0; done"

    def admin_rules(self) -> list[list[str]]:
        if self.backend == "legacy":
            return [
                ["iptables-legacy", "-A", "FORWARD", "-s", "192.0.2.99/32", "-j", "DROP"],
                ["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "172.16.0.0/12",
                 "-o", "eth0", "-j", "MASQUERADE"],
            ]
        return [
            ["nft", "add", "table", "inet", "admin"],
            ["nft", "add", "chain", "inet", "admin", "admin_forward",
             "{ type filter hook forward priority 10; policy accept; }"],
            ["nft", "add", "rule", "inet", "admin", "admin_forward", "ip", "saddr", "192.0.2.99",
             "drop"],
        ]

    def drifts(self) -> list[list[str]]:
        if self.backend == "legacy":
            jump = next(ln for ln in rules(self.host, "nat") if ln.startswith("-A POSTROUTING")
                        and CHAIN_NAT in ln)
            return [
                ["iptables-legacy", "-t", "nat", "-F", CHAIN_NAT],
                ["iptables-legacy", "-t", "mangle", "-F", CHAIN_MSS],
                ["iptables-legacy", "-F", CHAIN_FWD],
                ["iptables-legacy", "-t", "nat",
                 *[p.strip('"') for p in jump.replace("-A ", "-D ", 1).split()]],
                ["iptables-legacy", "-I", CHAIN_FWD, "2", "-s", "10.99.0.0/16", "-j",
                 "ACCEPT"],
            ]
        return [
            ["nft", "flush", "chain", "inet", "swand", "nat"],
            ["nft", "flush", "table", "inet", "swand"],
            ["nft", "delete", "table", "inet", "swand"],
            ["nft", "insert", "rule", "inet", "swand", "forward", "ip", "saddr",
             "10.99.0.0/16", "accept"],
            ["nft", "add", "chain", "inet", "swand", "junk"],
            ["nft", "add", "set", "inet", "swand", "junkset", "{ type ipv4_addr; }"],
        ]


def _fresh_gateway(make_lab: Callable[..., Lab], charon: str) -> Lab:
    lab = make_lab(clients=2, charon=charon)
    lab.configure_gateway_with_swanctl()
    lab.configure_clients()
    assert sysctl(lab.gateway, "net.ipv4.ip_forward") == "0"
    return lab


@pytest.fixture
def gw_lab(make_lab: Callable[..., Lab]) -> Lab:
    """Gateway loaded by swanctl (pool 10.8.0.128/25), clients configured, and the kernel
    state of a fresh machine: no forwarding, no NAT, no rules. Charon 5.9 only: for the
    tests where what charon reports does not matter (drift of our own chains, restart
    adoption, route following, coexistence), a second version would only cost CI time."""
    return _fresh_gateway(make_lab, "5.9")


@pytest.fixture
def versioned_gw_lab(make_lab: Callable[..., Lab], charon_version: str) -> Lab:
    """`gw_lab` for each charon version (`SWAND_LAB_VERSIONS`): for the tests whose rules
    derive from what charon reports (`get-pools`, `list-sas`, `stats`) or that depend on
    how it behaves (DPD, kill -9 and restart)."""
    return _fresh_gateway(make_lab, charon_version)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- tests ---------------------------------------------------------------------------


def test_road_warrior_reaches_the_internet_only_after_swand(
    versioned_gw_lab: Lab, backend: str
) -> None:
    """Interface mode (auto: charon runs kernel-libipsec), real traffic, MSS measured."""
    lab = versioned_gw_lab
    gw, c1 = lab.gateway, lab.client(1)
    kernel = Kernel(gw, backend)
    vip = lab.connect(c1)
    assert not c1.ping(INTERNET_HOST, timeout=1)
    assert not kernel.has_nat()

    report = apply_once(lab, write_config(lab, backend=backend))
    assert report["ok"], report
    assert report["backend"] == backend
    assert report["mode"] == "interface" and report["egress"] == "eth0"
    assert set(report["sysctls_changed"]) == {"net.ipv4.ip_forward", "net.ipv4.ip_no_pmtu_disc"}
    assert sysctl(gw, "net.ipv4.ip_forward") == "1"
    assert sysctl(gw, "net.ipv4.ip_no_pmtu_disc") == "1"
    assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping through swand's NAT")
    assert kernel.fwd_rules_for(vip)

    # MSS: the client's tunnel MTU is 1500, so its SYN says 1460; the far host sees 1360
    c1.run(["ip", "link", "set", "ipsec0", "mtu", "1500"])
    with lab.router.tcpdump("gw0", "tcp[tcpflags] & tcp-syn != 0 and dst port 9") as cap:
        c1.run([sys.executable, "-c", "import socket; s = socket.socket(); s.settimeout(3); "
                f"s.connect_ex(('{INTERNET_HOST}', 9))"], check=False)
        line = cap.wait_for("Flags [S]")
    assert "mss 1360" in line, line

    # a second apply with nothing changed writes nothing
    again = apply_once(lab, write_config(lab, backend=backend))
    assert again["ok"] and again["changed_tables"] == [] and again["sysctls_changed"] == []


def test_policy_mode_rules_exactly(versioned_gw_lab: Lab, backend: str) -> None:
    from swand.config import FirewallSettings
    from swand.core.firewall import ChildSA, FirewallInputs, Pool, desired_firewall
    from swand.core.nftables import render_nft

    lab = versioned_gw_lab
    gw = lab.gateway
    admin = Kernel(gw, backend).admin_rules()
    for cmd in admin:  # an administrator's rules, there before swand
        gw.run(cmd)
    gw.run(["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.77.0/24",
            "-j", "MASQUERADE"])
    vip = lab.connect(lab.client(1))
    reqid = next(c["reqid"] for sa in gw.list_sas() for c in sa["child-sas"].values())
    report = apply_once(lab, write_config(lab, mode="policy", backend=backend))
    assert report["ok"] and report["mode"] == "policy", report

    if backend == "nftables":
        # `nft list table inet swand` is exactly the pure rendering of the same inputs
        inputs = FirewallInputs(
            FirewallSettings(), "policy", "eth0", (Pool.from_addrs("pool4", "10.8.0.128/25"),),
            (ChildSA("rw", "rw", int(reqid), ("0.0.0.0/0",), (f"{vip}/32",)),))
        assert nft_table(gw) == render_nft(desired_firewall(inputs))
        assert "ipsec in reqid" in nft_table(gw)
        assert rules(gw, "nat")[-1] == "-A POSTROUTING -s 192.168.77.0/24 -j MASQUERADE"
        assert not any("swand" in ln for ln in rules(gw, "nat"))
    else:
        assert ours(gw, "nat") == [
            f"-N {CHAIN_NAT}",
            f"-A POSTROUTING -j {CHAIN_NAT}",
            f"-A {CHAIN_NAT} -s 10.8.0.128/25 -o eth0 -m policy --dir out --pol ipsec "
            "-j ACCEPT",
            f"-A {CHAIN_NAT} -s 10.8.0.128/25 -o eth0 -j MASQUERADE",
        ]
        # the jump is first, the administrator's rule is still there after it
        nat = rules(gw, "nat")
        assert nat.index("-A POSTROUTING -s 192.168.77.0/24 -j MASQUERADE") > next(
            i for i, ln in enumerate(nat) if CHAIN_NAT in ln and ln.startswith("-A POSTROUTING"))
        mss = ("-p tcp -m policy --dir {d} --pol ipsec -m tcp --tcp-flags SYN,RST SYN "
               "-m tcpmss --mss {m1}:1536 -j TCPMSS --set-mss {m}")
        # IPv6 headers are 20 bytes larger: 20 bytes less MSS for the same tunnel MTU
        for family, m in (("ipv4", 1360), ("ipv6", 1340)):
            assert ours(gw, "mangle", family) == [
                f"-N {CHAIN_MSS}",
                f"-A FORWARD -j {CHAIN_MSS}",
                f"-A {CHAIN_MSS} " + mss.format(d="in", m=m, m1=m + 1),
                f"-A {CHAIN_MSS} " + mss.format(d="out", m=m, m1=m + 1),
            ]
        assert ours(gw, "filter") == [
            f"-N {CHAIN_FWD}",
            f"-A FORWARD -j {CHAIN_FWD}",
            f"-A {CHAIN_FWD} -s {vip}/32 -m policy --dir in --pol ipsec --reqid {reqid} "
            "--proto esp -j ACCEPT",
            f"-A {CHAIN_FWD} -d {vip}/32 -m policy --dir out --pol ipsec --reqid {reqid} "
            "--proto esp -j ACCEPT",
        ]
        assert ours(gw, "filter", "ipv6") == [f"-N {CHAIN_FWD}", f"-A FORWARD -j {CHAIN_FWD}"]
        assert nft_table(gw) == ""

    # switching backend removes what swand left in the other one
    other = "legacy" if backend == "nftables" else "nftables"
    assert apply_once(lab, write_config(lab, mode="policy", backend=other))["ok"]
    if other == "legacy":
        assert nft_table(gw) == "" and ours(gw, "nat")
    else:
        assert nft_table(gw) and all(ours(gw, t) == [] for t in ("filter", "mangle", "nat"))

    # swand flush removes all of it and nothing else
    before_admin = Kernel(gw, backend).snapshot()
    out = gw.run([sys.executable, "-m", "swand", "flush"]).stdout
    assert "removed" in out
    for family in ("ipv4", "ipv6"):
        for table in ("filter", "mangle", "nat"):
            assert ours(gw, table, family) == []
    assert nft_table(gw) == ""
    assert "-A POSTROUTING -s 192.168.77.0/24 -j MASQUERADE" in rules(gw, "nat")
    if backend == "nftables":
        assert "192.0.2.99" in before_admin and "192.0.2.99" in Kernel(gw, backend).snapshot()
    else:
        assert "-A FORWARD -s 192.0.2.99/32 -j DROP" in rules(gw)


def _forward_matrix() -> list[tuple[str, str, str]]:
    """(charon, mode, backend): the whole mode x backend matrix on the first version of
    `SWAND_LAB_VERSIONS`, its diagonal on the others. Mode and backend change how rules
    are written, not what charon reports, so the diagonal still exercises each once per
    version, and saves about 17 s of CI time per extra version."""
    versions = [v.strip() for v in
                os.environ.get("SWAND_LAB_VERSIONS", ",".join(VERSIONS)).split(",")
                if v.strip()]
    full = [(m, b) for m in ("interface", "policy") for b in BACKENDS]
    diagonal = [("interface", "legacy"), ("policy", "nftables")]
    return [(v, m, b) for i, v in enumerate(versions) for m, b in (full if i == 0 else diagonal)]


@pytest.mark.parametrize(("charon_version", "mode", "backend"), _forward_matrix())
def test_forward_rules_follow_child_sas(versioned_gw_lab: Lab, mode: str, backend: str) -> None:
    """Up -> rules; delete -> gone within 2 s; DPD -> gone within 2 s of charon clearing
    the SA; kill -9 of charon -> gone on the first reconcile after it is back."""
    lab = versioned_gw_lab
    gw, c1, c2 = lab.gateway, lab.client(1), lab.client(2)
    kernel = Kernel(gw, backend)
    agent = Agent(lab, write_config(lab, mode=mode, backend=backend))
    try:
        vip1 = lab.connect(c1)
        wait_for(lambda: len(kernel.fwd_rules_for(vip1)) == 2, 5,
                 message=lambda: f"rules for {vip1}: {kernel.snapshot()}\n"
                                 f"{agent.log()[-3000:]}")

        # a delete by the client
        c1.swanctl("--terminate", "--ike", "rw")
        t0 = time.monotonic()
        wait_for(lambda: not kernel.fwd_rules_for(vip1), 2,
                 message=lambda: f"rules after delete: {kernel.snapshot()}")
        assert time.monotonic() - t0 < 2

        # DPD: the client dies silently
        vip2 = lab.connect(c2)
        wait_for(lambda: len(kernel.fwd_rules_for(vip2)) == 2, 5, message="rules for client2")
        c2.kill9()

        def sa_gone() -> bool:
            return not any(sa.get("remote-vips") == [vip2] for sa in gw.list_sas())

        wait_for(sa_gone, 30, interval=0.1, message="DPD clearing client2's SA")
        t0 = time.monotonic()
        wait_for(lambda: not kernel.fwd_rules_for(vip2), 2,
                 message=lambda: f"rules after DPD: {kernel.snapshot()}")
        assert time.monotonic() - t0 < 2

        # kill -9 of the gateway's charon: its SAs die with it
        vip1 = lab.connect(c1)
        wait_for(lambda: len(kernel.fwd_rules_for(vip1)) == 2, 5, message="rules again")
        gw.kill9()
        time.sleep(1.0)
        assert kernel.fwd_rules_for(vip1), "rules must stay while charon is away (fail static)"
        gw.start_charon()
        lab.configure_gateway_with_swanctl()
        wait_for(lambda: not kernel.fwd_rules_for(vip1), 5,
                 message=lambda: f"rules after charon restart: {kernel.snapshot()}\n"
                                 f"{agent.log()[-3000:]}")
        assert kernel.has_nat()
    finally:
        agent.stop()


def test_forward_rules_survive_rekeys(versioned_gw_lab: Lab) -> None:
    """CHILD_SA and IKE_SA rekeys keep the reqid: the forward rules must never blink.
    (`list-sas` with `noblock` skips an IKE_SA that is checked out — in an exchange —
    so a pass poked by a rekey event would see the SA missing and drop its rules.)"""
    lab = versioned_gw_lab
    gw, c1 = lab.gateway, lab.client(1)
    kernel = Kernel(gw, "legacy")
    agent = Agent(lab, write_config(lab, backend="legacy", interval=30.0))
    vip = lab.connect(c1)
    watcher: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: len(kernel.fwd_rules_for(vip)) == 2, 5, message="first pass")
        probe = f"iptables-legacy -w -S {CHAIN_FWD} | grep -c -- '-[sd] {vip}/32'"
        watcher = subprocess.Popen(
            ["ip", "netns", "exec", gw.netns, "sh", "-c", f"while :; do {probe}; done"],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        for i in range(30):
            gw.swanctl("--rekey", "--child" if i % 2 == 0 else "--ike", "rw")
            time.sleep(0.02)
        time.sleep(1.0)
        log = agent.log()
        assert log.count('"firewall reconciled"') + log.count('"firewall unchanged"') >= 3, log
    finally:
        agent.stop()
        if watcher is not None:
            watcher.terminate()
    samples = watcher.communicate(timeout=10)[0].split()
    assert len(samples) > 10 and set(samples) == {"2"}, samples


def _with_child(conf: str, child: str, **ts: str) -> str:
    """A swanctl.conf with one more CHILD_SA config in its first connection."""
    head = "        children {\n"
    assert head in conf
    lines = "".join(f"                {key} = {value}\n" for key, value in ts.items())
    extra = (f"            {child} {{\n{lines}"
             f"                esp_proposals = {configs.ESP_PROPOSAL}\n            }}\n")
    return conf.replace(head, head + extra, 1)


def test_second_child_sa_gets_and_loses_its_rules_while_the_ike_sa_stays(
        versioned_gw_lab: Lab) -> None:
    """Through the daemon's wiring (`Charon` + `wire`, the agent): a CHILD_SA added to an
    IKE_SA that stays up, then deleted, gets its forward rules and loses them on the
    SA events, not on the periodic pass (set to 60 s here). Before, child-only changes
    produced no action and the rules waited for that pass: this test failed then.
    The bound (5 s) is for correctness; the latency measured is printed."""
    lab = versioned_gw_lab
    gw, c1 = lab.gateway, lab.client(1)
    assert c1.ike_id is not None
    # a second child config each side (its own selectors: its own reqid and rules); the
    # gateway needs an address inside its local selector to install the route
    gw.write_swanctl_conf(_with_child(configs.gateway_conf(gateway_id=lab.gateway_id),
                                      "web", local_ts="203.0.113.0/24",
                                      remote_ts="10.8.0.128/25"))
    gw.swanctl("--load-all")
    gw.run(["ip", "addr", "add", "203.0.113.77/32", "dev", "lo"])
    c1.write_swanctl_conf(_with_child(configs.client_conf(
        client_id=c1.ike_id, cert=f"{c1.name}.pem", gateway_id=lab.gateway_id),
        "web", local_ts="10.8.0.128/25", remote_ts="203.0.113.0/24"))
    c1.swanctl("--load-all")
    kernel = Kernel(gw, "legacy")
    agent = Agent(lab, write_config(lab, backend="legacy", interval=60.0))
    try:
        vip = lab.connect(c1)
        wait_for(lambda: len(kernel.fwd_rules_for(vip)) == 2, 5,
                 message=lambda: f"first SA's rules: {kernel.snapshot()}")
        (ike,) = [sa["uniqueid"] for sa in gw.list_sas()]

        def web_rules() -> list[str]:
            return [ln for ln in rules(gw) if ln.startswith(f"-A {CHAIN_FWD}")
                    and "203.0.113.0/24" in ln]

        c1.initiate("web", ike="rw")
        t0 = time.monotonic()
        wait_for(lambda: len(web_rules()) == 2, 5, interval=0.01,
                 message=lambda: f"second CHILD_SA's rules: {kernel.snapshot()}\n"
                                 f"{agent.log()[-3000:]}")
        appeared = time.monotonic() - t0
        assert len(kernel.fwd_rules_for(vip)) == 2, "the first CHILD_SA's rules stay"

        c1.swanctl("--terminate", "--child", "web")
        t0 = time.monotonic()
        wait_for(lambda: not web_rules(), 5, interval=0.01,
                 message=lambda: f"rules after the child's delete: {kernel.snapshot()}\n"
                                 f"{agent.log()[-3000:]}")
        gone = time.monotonic() - t0
        assert len(kernel.fwd_rules_for(vip)) == 2, "the first CHILD_SA's rules must stay"
        assert [sa["uniqueid"] for sa in gw.list_sas()] == [ike], "the IKE_SA must stay"
        print(f"\nsecond CHILD_SA forward rules: appeared after {appeared * 1000:.0f} ms, "
              f"gone after {gone * 1000:.0f} ms")
    finally:
        agent.stop()


def test_drift_is_repaired_within_one_interval(gw_lab: Lab, backend: str) -> None:
    lab = gw_lab
    gw = lab.gateway
    kernel = Kernel(gw, backend)
    interval = 2.0
    vip = lab.connect(lab.client(1))
    agent = Agent(lab, write_config(lab, interval=interval, backend=backend))
    try:
        wait_for(lambda: len(kernel.fwd_rules_for(vip)) == 2, 5, message="first pass")
        good = kernel.snapshot()
        for cmd in kernel.admin_rules():
            gw.run(cmd)
        good_with_admin = kernel.snapshot()
        assert good_with_admin != good
        for cmd in kernel.drifts():
            gw.run(cmd)
            assert kernel.snapshot() != good_with_admin
            t0 = time.monotonic()
            wait_for(lambda: kernel.snapshot() == good_with_admin, interval * 1.5 + 1,
                     interval=0.1,
                     message=lambda c=cmd: f"repair of {c}:\n{kernel.snapshot()}")
            assert time.monotonic() - t0 <= interval * 1.5 + 1
    finally:
        agent.stop()


def test_restart_keeps_identical_rules_without_a_gap(gw_lab: Lab, backend: str) -> None:
    lab = gw_lab
    gw = lab.gateway
    kernel = Kernel(gw, backend)
    config = write_config(lab, backend=backend)
    vip = lab.connect(lab.client(1))
    agent = Agent(lab, config)
    wait_for(lambda: len(kernel.fwd_rules_for(vip)) == 2, 5, message="first pass")
    before = kernel.snapshot()
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", gw.netns, "sh", "-c", kernel.nat_count_loop()],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        agent.stop()
        assert kernel.snapshot() == before  # shutdown leaves the rules in place
        agent = Agent(lab, config)
        time.sleep(1.0)
        assert kernel.snapshot() == before
        log = agent.log()
        assert '"changed_tables"' not in log, log  # adopted: nothing written
    finally:
        agent.stop()
        watcher.terminate()
        samples = watcher.communicate(timeout=10)[0].split()
    assert samples and all(s != "0" for s in samples), samples


def test_bad_input_is_a_clear_error_and_last_good_rules_stay(
    versioned_gw_lab: Lab, backend: str
) -> None:
    lab = versioned_gw_lab
    gw = lab.gateway
    kernel = Kernel(gw, backend)
    lab.connect(lab.client(1))
    assert apply_once(lab, write_config(lab, backend=backend))["ok"]
    good = kernel.snapshot()

    missing = apply_once(lab, write_config(lab, "bad.toml", egress="eth9", backend=backend))
    assert not missing["ok"]
    assert "[firewall] egress: interface 'eth9' does not exist" in missing["error"]
    assert "bad.toml" in missing["error"]
    assert kernel.snapshot() == good

    # a pool overlapping the egress subnet (192.0.2.0/24), loaded into charon
    from swand.lab import configs

    gw.write_swanctl_conf(configs.gateway_conf(gateway_id=lab.gateway_id)
                          + "pools {\n    bad {\n        addrs = 192.0.2.128/25\n    }\n}\n")
    gw.swanctl("--load-all")
    overlap = apply_once(lab, write_config(lab, backend=backend))
    assert not overlap["ok"]
    assert "overlaps the egress subnet 192.0.2.0/24 of eth0" in overlap["error"]
    assert kernel.snapshot() == good

    # MSS out of range: swand.toml itself is refused, naming file and key
    result = apply_once(lab, write_config(lab, "mss.toml", mss=9000, backend=backend))
    assert not result["ok"]
    assert "mss.toml: [firewall] mss must be 0 (off) or 536..1460, got 9000" in result["error"]
    assert kernel.snapshot() == good

    # at run time: the default route disappears -> error logged, rules stay; it comes back
    lab.configure_gateway_with_swanctl()
    agent = Agent(lab, write_config(lab, interval=1.0, backend=backend))
    try:
        wait_for(lambda: '"firewall unchanged"' in agent.log() or
                 '"firewall reconciled"' in agent.log(), 10, message="first pass")
        route = gw.run(["ip", "route", "show", "default"]).stdout.strip()
        gw.run(["ip", "route", "del", "default"])
        wait_for(lambda: "no default route" in agent.log(), 5,
                 message=lambda: agent.log()[-2000:])
        assert kernel.snapshot() == good
        gw.run(["ip", "route", "add", *route.split()])
        assert wait_for(lambda: kernel.snapshot() == good, 5)
    finally:
        agent.stop()


def test_nftables_coexists_with_an_admin_forward_drop_policy(gw_lab: Lab) -> None:
    """README, "Coexistence": an accept in `inet swand` does not override another table's
    drop; the documented rules in the admin's own chain make traffic flow."""
    lab = gw_lab
    gw, c1 = lab.gateway, lab.client(1)
    gw.run(["nft", "add", "table", "inet", "filter"])
    gw.run(["nft", "add", "chain", "inet", "filter", "forward",
            "{ type filter hook forward priority 0; policy drop; }"])
    lab.connect(c1)
    assert apply_once(lab, write_config(lab, backend="nftables"))["ok"]
    assert not c1.ping(INTERNET_HOST, timeout=1)
    gw.run(["nft", "add", "rule", "inet", "filter", "forward", "iifname", "ipsec0", "accept"])
    gw.run(["nft", "add", "rule", "inet", "filter", "forward", "oifname", "ipsec0", "ct",
            "state", "established,related", "accept"])
    assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping with the admin's rules")
    assert "policy drop" in gw.run(["nft", "list", "table", "inet", "filter"]).stdout


def test_nat_follows_the_default_route(gw_lab: Lab) -> None:
    """`egress = "auto"`: a new default route through another interface moves the NAT
    rules there (RTNL events, no periodic pass needed), and back when it goes away."""
    lab = gw_lab
    gw = lab.gateway
    kernel = Kernel(gw, "legacy")
    agent = Agent(lab, write_config(lab, backend="legacy", interval=60.0))
    try:
        wait_for(kernel.has_nat, 10, message=lambda: agent.log()[-2000:])
        assert any("-o eth0 -m comment" in ln for ln in rules(gw, "nat"))
        gw.run("ip link add up0 type veth peer name up1 && ip link set up0 up && "
               "ip link set up1 up && ip addr add 10.77.0.1/24 dev up0 && "
               "ip route add default via 192.0.2.254 dev eth0 metric 100 && "
               "ip route del default via 192.0.2.254 dev eth0 metric 0 && "
               "ip route add default via 10.77.0.2 dev up0 metric 0")
        wait_for(lambda: any("-o up0 -j MASQUERADE" in TAG.sub("", ln)
                             for ln in rules(gw, "nat")), 3,
                 message=lambda: f"{rules(gw, 'nat')}\n{agent.log()[-2000:]}")
        assert not any("-o eth0 -m comment" in ln for ln in rules(gw, "nat"))
        gw.run(["ip", "link", "del", "up0"])
        wait_for(lambda: any("-o eth0 -j MASQUERADE" in TAG.sub("", ln)
                             for ln in rules(gw, "nat")), 3,
                 message=lambda: f"{rules(gw, 'nat')}\n{agent.log()[-2000:]}")
    finally:
        agent.stop()


def test_swand_apply_runs_one_firewall_pass(gw_lab: Lab) -> None:
    """`swand apply` (the loader's command) ends with one firewall pass; `--no-firewall`
    leaves the kernel alone."""
    lab = gw_lab
    gw = lab.gateway
    kernel = Kernel(gw, "legacy")
    config = write_config(lab, backend="legacy")
    argv = [sys.executable, "-m", "swand", "apply", "-c", str(config),
            "--swanctl-dir", str(gw.swanctl_dir)]
    proc = gw.run([*argv, "--no-firewall"], check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not kernel.has_nat() and sysctl(gw, "net.ipv4.ip_forward") == "0"
    proc = gw.run(argv, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert kernel.has_nat() and sysctl(gw, "net.ipv4.ip_forward") == "1"
    bad = write_config(lab, "bad.toml", backend="legacy", egress="eth9")
    proc = gw.run([*argv[:5], str(bad), *argv[6:]], check=False, timeout=60)
    assert proc.returncode != 0
    assert "[firewall] egress: interface 'eth9' does not exist" in proc.stderr
