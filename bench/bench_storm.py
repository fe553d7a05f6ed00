"""Reconnect storm benchmark with real IKE SAs (run as root; not part of pytest).

    .venv/bin/python bench/bench_storm.py --sas 1000 [--clients 4] [--rounds 3]

The lab of bench_metrics.py (a gateway charon, N client charons with many PSK
connections each, kernel-libipsec, encap). Each round runs three storms against a freshly
started gateway charon, every client initiating all its connections at once:

- `none`: no firewall at all (how fast charon alone brings the SAs up);
- `updown`: charon's updown plugin running strongSwan's `_updown iptables` per CHILD_SA
  (swanctl's `updown = /usr/lib/ipsec/_updown iptables`, what `leftfirewall=yes` did);
- `swand`: `swand run` owning the gateway (loader, events, metrics with `per_peer`,
  firewall: legacy backend, policy mode, per-SA forward rules);
- `swand-bare` (not in the default list): the same `swand run` with none of the pollers
  below (they read the filter table every 20 ms and scrape `/metrics` every 100 ms on
  the same two cores): how fast charon brings the SAs up beside swand alone, against
  `none`;
- `swand-nofw` (not in the default list): `swand-bare` with `[firewall] enabled =
  false`, so that swand-bare's CPU minus this one's is what the firewall itself costs;
- `updown-timed` (not in the default list): `updown` without the poller, each `_updown`
  run timed by a bash wrapper (`$EPOCHREALTIME`, no process of its own inside the timed
  window): the time spent making the storm's rules, against the `swand-bare` storm's
  `swand_firewall_pass_seconds_total` (both unobserved).

Measured from the gateway's own event stream (`child-updown` up, one per client, stamped
on arrival), from swand's log (when its event consumer handled each client's `sa_up`: the
rule latency splits into the events' way to swand and the firewall pass after it) and
from outside: a poller in the gateway's namespace reads the filter table every 20 ms
(for swand the legacy table straight from the kernel, walked with struct; `iptables-save`
(nft) for `_updown`) and, for swand, `/metrics` (`swand_peer_info{virtual_ip=...}`) every
100 ms, and stamps the first time each client's virtual IP appears. Per client: rule
latency = rule seen - SA up. Per storm: time from the first IKE_SA up to the last
CHILD_SA up, to the last rule, to the last /metrics series. Everything is removed at
exit (namespaces, charons, files).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_metrics import (
    GATEWAY_CONF,
    PLUGINS,
    MiniCharon,
    MiniLab,
    cpu_seconds,
    scrape_in,
    sh,
    stop_group,
)

ROOT = Path(__file__).resolve().parent.parent
UPDOWN = "/usr/lib/ipsec/_updown iptables"
#: `_updown iptables`, timed: one "<start> <end>" line per run (wall clock)
UPDOWN_TIMED = """#!/bin/bash
start=$EPOCHREALTIME
/usr/lib/ipsec/_updown "$@"
rc=$?
echo "$start $EPOCHREALTIME" >> "$(dirname "$0")/updown-times"
exit $rc
"""
METRICS_PORT = 9818

#: runs inside the gateway's namespace: prints "<virtual ip> <monotonic time>" the first
#: time each 10.9.x.y shows up in the source, polled every `pause` seconds: the filter
#: table as `iptables-save` prints it (`_updown`'s nft rules), the legacy filter table
#: read from the kernel (`legacy`: the getsockopt `iptables-legacy-save` makes, walked
#: with struct, no process per poll), or /metrics
WATCHER = r"""
import re, subprocess, sys, time, urllib.request
kind, arg, pause, root = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
vip = re.compile(r"10\.9\.\d+\.\d+") if kind == "rules" else re.compile(
    r'swand_peer_info\{[^}]*virtual_ip="(10\.9\.\d+\.\d+)"')
if arg == "legacy":
    sys.path[:0] = [root, root + "/bench"]
    from bench_metrics import legacy_filter_vips

seen = set()
while True:
    t0 = time.monotonic()
    try:
        if arg == "legacy":
            found = legacy_filter_vips("10.9.0.0/16")
        elif kind == "rules":
            found = set(vip.findall(subprocess.run([arg, "-t", "filter"], capture_output=True,
                                                   text=True).stdout))
        else:
            found = set(vip.findall(urllib.request.urlopen(arg, timeout=5).read().decode()))
    except OSError:
        time.sleep(0.05)
        continue
    t = (t0 + time.monotonic()) / 2
    new = found - seen
    if new:
        seen |= new
        sys.stdout.write("".join(f"{v} {t:.4f}\n" for v in new))
        sys.stdout.flush()
    time.sleep(pause)
"""


class Watcher:
    """A WATCHER process in the namespace; `first_seen` fills as it prints."""

    def __init__(self, ns: str, kind: str, arg: str, pause: float = 0.02) -> None:
        self.kind = kind
        self.first_seen: dict[str, float] = {}
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                      WATCHER, kind, arg, str(pause), str(ROOT)],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            v, t = line.split()
            self.first_seen.setdefault(v, float(t))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class SaEvents:
    """The gateway's ike-updown/child-updown stream, stamped on arrival."""

    def __init__(self, gateway: MiniCharon) -> None:
        self.first_ike_up: float | None = None
        self.child_up: dict[str, float] = {}
        self.errors = 0
        self._stop = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(gateway,), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self, gateway: MiniCharon) -> None:
        with contextlib.suppress(OSError), gateway.session(timeout=3600) as s:
            listener = s.listen(["ike-updown", "child-updown"], timeout=0.5)
            self._ready.set()
            try:
                self._follow(listener)
            finally:
                # unregister while the socket is open (the generator left to the
                # collector would try it on a closed one and print a traceback)
                with contextlib.suppress(OSError):
                    listener.close()

    def _follow(self, listener: Any) -> None:
        """Stamp each client's first CHILD_SA up (and the first IKE_SA up)."""
        for name, payload in listener:
            if self._stop:
                break
            if name is None:
                continue
            now = time.monotonic()
            if payload.get("up") != b"yes":
                continue
            for key, sa in payload.items():
                if key == "up" or not isinstance(sa, dict):
                    continue
                if name == b"ike-updown":
                    if self.first_ike_up is None:
                        self.first_ike_up = now
                    continue
                for vip in sa.get("remote-vips", []):
                    self.child_up.setdefault(vip.decode(), now)

    def stop(self) -> None:
        self._stop = True


def gateway_conf(updown: str | None) -> str:
    """The gateway's swanctl.conf, with `updown` (a command) in the child if given."""
    if not updown:
        return GATEWAY_CONF
    return GATEWAY_CONF.replace("esp_proposals = aes128gcm16",
                                f"esp_proposals = aes128gcm16\n                updown = {updown}")


def updown_command(lab: MiniLab, scenario: str) -> str | None:
    """The scenario's updown command: `_updown`, the timing wrapper around it, or none."""
    assert lab.gateway
    if scenario == "updown":
        return UPDOWN
    if scenario != "updown-timed":
        return None
    wrapper = lab.gateway.dir / "updown-timed"
    wrapper.write_text(UPDOWN_TIMED)
    wrapper.chmod(0o755)
    (lab.gateway.dir / "updown-times").write_text("")
    return f"{wrapper} iptables"


def updown_seconds(lab: MiniLab) -> tuple[int, float]:
    """How many `_updown` runs the wrapper timed, and their wall time in all."""
    assert lab.gateway
    runs = [line.split() for line in
            (lab.gateway.dir / "updown-times").read_text().splitlines()]
    return len(runs), sum(float(end) - float(start) for start, end in runs)


def firewall_pass_seconds(ns: str) -> float:
    """swand's `swand_firewall_pass_seconds_total`, scraped inside the namespace."""
    for line in scrape_in(ns, METRICS_PORT).splitlines():
        if line.startswith("swand_firewall_pass_seconds_total "):
            return float(line.split()[1])
    return float("nan")


def flush_tables(ns: str) -> None:
    for tool in ("iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft"):
        for table in ("filter", "nat", "mangle"):
            sh(tool, "-t", table, "-F", ns=ns, check=False)
            sh(tool, "-t", table, "-X", ns=ns, check=False)
    sh("nft", "flush", "ruleset", ns=ns, check=False)


def restart(lab: MiniLab, scenario: str) -> None:
    """Every charon stopped and started afresh; the gateway's tables empty."""
    assert lab.gateway
    for c in [*lab.clients, lab.gateway]:
        c.stop()
    flush_tables(lab.gw_ns)
    conf = lab.gateway.dir / "strongswan.conf"
    text = conf.read_text()
    if " updown " not in text:
        conf.write_text(text.replace(f"load = {PLUGINS}", f"load = {PLUGINS} updown "))
    (lab.gateway.dir / "swanctl" / "swanctl.conf").write_text(
        gateway_conf(updown_command(lab, scenario)))
    for c in [lab.gateway, *lab.clients]:
        c.start()
    for c in [lab.gateway, *lab.clients]:
        c.wait()


def start_swand(lab: MiniLab, nice: int = 0, firewall: bool = True
                ) -> subprocess.Popen[bytes]:
    gw = lab.gateway
    assert gw
    toml = gw.dir / "swand.toml"
    toml.write_text(
        f'[charon]\nvici = "{gw.uri}"\n[swanctl]\ndir = "{gw.dir / "swanctl"}"\n'
        f'[firewall]\nenabled = {str(firewall).lower()}\n'
        'backend = "legacy"\nmode = "policy"\negress = "br0"\n'
        f'[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\nper_peer = true\n'
        '[log]\nformat = "json"\nlevel = "info"\n')
    # a fresh log: the readiness marker below must be this swand's, not the last storm's
    log = open(gw.dir / "swand.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", gw.ns, "nice", "-n", str(nice),
                             sys.executable, "-m", "swand",
                             "run", "-c", str(toml)], cwd=str(Path(__file__).parent.parent),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    ready = b"firewall reconciled" if firewall else b"config_reconciled"
    while ready not in (gw.dir / "swand.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("swand run did not start: "
                               + (gw.dir / "swand.log").read_text()[-3000:])
        time.sleep(0.1)
    return proc


def swand_seen(log: Path, since_wall: float) -> dict[str, float]:
    """When swand's event consumer handled each virtual IP's `sa_up` (wall clock, from
    its JSON log), from `since_wall` on."""
    from datetime import datetime

    seen: dict[str, float] = {}
    if not log.exists():
        return seen
    for line in log.read_text(errors="replace").splitlines():
        if '"sa_up"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            if at >= since_wall:
                for vip in entry.get("vips", []):
                    seen.setdefault(vip, at)
    return seen


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def storm(lab: MiniLab, scenario: str, per_client: int, timeout: float,
          keep: Path | None = None, nice: int = 0) -> dict[str, Any]:
    assert lab.gateway
    restart(lab, scenario)
    swand = None
    watchers: list[Watcher] = []
    seen_wall: dict[str, float] = {}
    #: wall clock minus monotonic: swand's log stamps are wall-clock times
    wall_offset = time.time() - time.monotonic()
    since_wall = time.time()
    if scenario in ("swand", "swand-bare", "swand-nofw"):
        swand = start_swand(lab, nice, firewall=scenario != "swand-nofw")
    else:
        lab.gateway.swanctl("--load-all")
    try:
        lab.configure_clients(per_client)
        if scenario == "swand":
            # light watchers: the legacy table read from the kernel (no process per
            # poll), /metrics (1,000 peers rendered per scrape) every 0.1 s
            watchers = [Watcher(lab.gw_ns, "rules", "legacy"),
                        Watcher(lab.gw_ns, "metrics",
                                f"http://127.0.0.1:{METRICS_PORT}/metrics", pause=0.1)]
        elif scenario == "updown":
            watchers = [Watcher(lab.gw_ns, "rules", "iptables-save")]
        events = SaEvents(lab.gateway)
        target = per_client * len(lab.clients)
        assert lab.gateway.proc is not None
        charon_pid = lab.gateway.proc.pid
        firewall = swand is not None and scenario != "swand-nofw"
        pass_s_before = firewall_pass_seconds(lab.gw_ns) if firewall else 0.0
        cpu_before = cpu_seconds(charon_pid), cpu_seconds(swand.pid) if swand else (0.0, 0.0)
        started = time.monotonic()
        lab.initiate_all(per_client)
        initiated = time.monotonic() - started
        deadline = started + timeout
        while time.monotonic() < deadline:
            done = len(events.child_up) >= target and all(
                len(w.first_seen) >= target for w in watchers)
            if done:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        cpu_after = cpu_seconds(charon_pid), cpu_seconds(swand.pid) if swand else (0.0, 0.0)
        pass_s = firewall_pass_seconds(lab.gw_ns) - pass_s_before if firewall else 0.0
        events.stop()
        for w in watchers:
            w.stop()
    finally:
        if swand is not None:
            stop_group(swand)
            seen_wall = swand_seen(lab.gateway.dir / "swand.log", since_wall)
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("swand.log", "charon.log"):
                src = lab.gateway.dir / name
                if src.exists():
                    (keep / f"{scenario}-{time.strftime('%H%M%S')}-{name}").write_bytes(
                        src.read_bytes())
                    src.unlink()
    t0 = events.first_ike_up or started
    ups = events.child_up
    res: dict[str, Any] = {
        "scenario": scenario, "sas_up": len(ups), "initiate_s": initiated,
        "all_up_s": (max(ups.values()) - t0) if ups else float("nan"),
        # CPU seconds over the storm: charon's own, the `_updown` children it reaped,
        # and swand's whole process (events, metrics and loader included)
        "charon_cpu_s": cpu_after[0][0] - cpu_before[0][0],
        "updown_cpu_s": cpu_after[0][1] - cpu_before[0][1],
        "swand_cpu_s": cpu_after[1][0] - cpu_before[1][0],
    }
    # wall time spent making rules: swand's firewall passes, or the timed `_updown` runs
    if firewall:
        res["rule_work_s"] = pass_s
    elif scenario == "updown-timed":
        res["updown_runs"], res["rule_work_s"] = updown_seconds(lab)
    if seen_wall:
        seen = {v: t - wall_offset for v, t in seen_wall.items()}
        lag = [seen[v] - ups[v] for v in ups if v in seen]
        res["events_p50_s"], res["events_p99_s"] = pct(lag, 0.5), pct(lag, 0.99)
        rules = next((w.first_seen for w in watchers if w.kind == "rules"), {})
        after = [rules[v] - seen[v] for v in seen if v in rules]
        res["pass_p50_s"], res["pass_p99_s"] = pct(after, 0.5), pct(after, 0.99)
    for w in watchers:
        lat = [w.first_seen[v] - ups[v] for v in ups if v in w.first_seen]
        res[f"{w.kind}_present"] = len(w.first_seen)
        res[f"{w.kind}_all_s"] = (max(w.first_seen.values()) - t0
                                           if w.first_seen else float("nan"))
        res[f"{w.kind}_p50_s"] = pct(lat, 0.5)
        res[f"{w.kind}_p99_s"] = pct(lat, 0.99)
        res[f"{w.kind}_max_s"] = max(lat) if lat else float("nan")
    return res


def fmt(v: float) -> str:
    return f"{v:.2f}" if v == v else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--scenarios", default="none,updown,swand")
    ap.add_argument("--keep-logs", type=Path, default=None,
                    help="copy the gateway's charon.log and swand.log here after each storm")
    ap.add_argument("--swand-nice", type=int, default=0,
                    help="run `swand run` at this niceness (the client charons share the "
                         "gateway's two cores; a systemd gateway gives swand its own cgroup)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_storm: needs root (network namespaces)", file=sys.stderr)
        return 2
    per_client = -(-args.sas // args.clients)
    lab = MiniLab(args.clients)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows: list[dict[str, Any]] = []
    try:
        lab.up()
        for rnd in range(args.rounds):
            for scenario in args.scenarios.split(","):
                with open("/proc/loadavg") as f:
                    load = float(f.read().split()[0])
                res = storm(lab, scenario, per_client, args.timeout, args.keep_logs,
                            args.swand_nice)
                res.update(round=rnd, load=load)
                rows.append(res)
                print(json.dumps(res), flush=True)
    finally:
        lab.down()
    print()
    print("| round | scenario | load | SAs up | all SAs up (s) | rules present | last rule (s) "
          "| rule latency p50 / p99 / max (s) | in /metrics | last /metrics (s) "
          "| event to swand p50 / p99 (s) | rule after swand's event p50 / p99 (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['scenario']} | {r['load']:.1f} | {r['sas_up']} | "
              f"{fmt(r['all_up_s'])} | {r.get('rules_present', '')} | "
              f"{fmt(r.get('rules_all_s', float('nan')))} | "
              f"{fmt(r.get('rules_p50_s', float('nan')))} / "
              f"{fmt(r.get('rules_p99_s', float('nan')))} / "
              f"{fmt(r.get('rules_max_s', float('nan')))} | {r.get('metrics_present', '')} | "
              f"{fmt(r.get('metrics_all_s', float('nan')))} | "
              f"{fmt(r.get('events_p50_s', float('nan')))} / "
              f"{fmt(r.get('events_p99_s', float('nan')))} | "
              f"{fmt(r.get('pass_p50_s', float('nan')))} / "
              f"{fmt(r.get('pass_p99_s', float('nan')))} |")
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["scenario"], []).append(r)

    def med(s: str, k: str) -> float:
        vals = [r[k] for r in by.get(s, []) if k in r and r[k] == r[k]]
        return statistics.median(vals) if vals else float("nan")

    print()
    for s in by:
        print(f"median {s}: all up {fmt(med(s, 'all_up_s'))} s, last rule "
              f"{fmt(med(s, 'rules_all_s'))} s (after the last SA: "
              f"{fmt(med(s, 'rules_all_s') - med(s, 'all_up_s'))} s), "
              f"p99 {fmt(med(s, 'rules_p99_s'))} s")
    if "swand" in by and "updown" in by:
        ratio = med("swand", "rules_all_s") / med("updown", "rules_all_s")
        print(f"rules: swand / _updown = {ratio:.3f}")
    print()
    print("| round | scenario | charon CPU (s) | firewall CPU (s): `_updown` children "
          "or swand | firewall adds after none's last SA (s) |")
    print("|---:|---|---:|---:|---:|")
    nones = {r["round"]: r["all_up_s"] for r in rows if r["scenario"] == "none"}
    for r in rows:
        if r["scenario"] == "none":
            continue
        fw_cpu = r["updown_cpu_s"] if r["scenario"].startswith("updown") else r["swand_cpu_s"]
        end = r.get("rules_all_s", r["all_up_s"])
        adds = end - nones[r["round"]] if r["round"] in nones else float("nan")
        print(f"| {r['round']} | {r['scenario']} | {fmt(r['charon_cpu_s'])} | "
              f"{fmt(fw_cpu)} | {fmt(adds)} |")
    if "updown" in by and "swand-bare" in by and "swand-nofw" in by:
        firewall_cpu = med("swand-bare", "swand_cpu_s") - med("swand-nofw", "swand_cpu_s")
        print(f"firewall CPU: swand's (swand-bare - swand-nofw) {firewall_cpu:.2f} s, "
              f"_updown's children {med('updown', 'updown_cpu_s'):.2f} s: "
              f"{firewall_cpu / med('updown', 'updown_cpu_s'):.3f}x; the whole swand-bare "
              f"process {med('swand-bare', 'swand_cpu_s') / med('updown', 'updown_cpu_s'):.3f}x")
    if by.get("updown-timed") and by.get("swand-bare"):
        print()
        print("| round | scenario | time spent making rules (s): timed `_updown` runs or "
              "swand's firewall passes | runs |")
        print("|---:|---|---:|---:|")
        for r in rows:
            if "rule_work_s" in r:
                print(f"| {r['round']} | {r['scenario']} | {fmt(r['rule_work_s'])} | "
                      f"{r.get('updown_runs', '')} |")
        ours, theirs = med("swand-bare", "rule_work_s"), med("updown-timed", "rule_work_s")
        print(f"time spent making the storm's rules: swand-bare {ours:.2f} s, "
              f"_updown {theirs:.2f} s: {ours / theirs:.3f}x")
    if "none" in by:
        for s in ("updown", "updown-timed", "swand", "swand-bare", "swand-nofw"):
            if s in by:
                print(f"SAs up: {s} / none = {med(s, 'all_up_s') / med('none', 'all_up_s'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
