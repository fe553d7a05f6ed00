"""Churn benchmark: `swand run` with its real firewall (legacy backend, in a throw-away
network namespace) against a synthetic charon whose SAs come and go (root; not pytest).

    .venv/bin/python bench/bench_churn.py --sas 10000 --rate 100 --minutes 5

The synthetic charon (bench/synthetic_vici.py's wire protocol and recorded SA) starts
with `--sas` IKE_SAs (of 1.2 x that many clients) and then, every 100 ms, takes
`rate/10` random SAs down and brings `rate/10` offline clients back with new SAs
(ike-updown + child-updown each, to every connection registered for them); list-sas
always answers the current set. Measured:

- events: sent by the server vs `swand_vici_events_total` (nothing lost);
- after the churn stops: how long until the forward rules (the filter table read from
  the kernel by a reader kept running in the namespace, `legacy_filter_vips`; the time
  is that of the read) name exactly the virtual IPs of the live SAs (goal: within 1 s), and
  until `/metrics` counts exactly the live IKE_SAs (`swand_ike_sas`);
- swand's resident memory each minute (goal: minute 5 within 5 % of minute 1; sampled
  every second, the median of each minute beside the sample at each minute mark) and its
  CPU time (user + system) next to the events it handled.

`--no-firewall` runs swand without its firewall (events, metrics, loader only): the
CPU time of the event path and the metrics alone; then "converged" means `/metrics`
counts the live SAs (with `--per-peer`: names exactly their peers) and no event waits.
`--clean-deletes` sends the downs as clients' deletes (state DELETING) instead of
vanished peers (ESTABLISHED: the watcher waits up to 0.5 s each for a DPD log line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_metrics import cpu_seconds, legacy_filter_vips, scrape_in, stop_group
from synthetic_vici import (
    RECORDED_IKE_SA,
    SyntheticCharon,
    event_packet,
    response,
)

ROOT = Path(__file__).resolve().parent.parent
PORT = 9819


#: the clients' virtual IPs
VIP_NETWORK = "10.64.0.0/12"


def vip(client: int) -> str:
    return f"10.{64 + client // 65536}.{client // 256 % 256}.{client % 256}"


def sa_dict(client: int, seq: int) -> dict[str, Any]:
    """Client `client`'s SA number `seq`: its identity and virtual IP are the client's,
    the unique ids, reqid and SPIs new for every connection."""
    sa = json.loads(json.dumps(RECORDED_IKE_SA))
    v = vip(client)
    sa.update({"uniqueid": str(2 * seq + 1), "remote-id": f"client{client}@bench.test",
               "remote-vips": [v], "initiator-spi": f"{seq:016x}",
               "responder-spi": f"{seq * 7:016x}"})
    child = sa["child-sas"].pop("net-3")
    child.update({"uniqueid": str(2 * seq + 2), "reqid": str(seq + 1),
                  "remote-ts": [f"{v}/32"], "spi-in": f"{seq:08x}",
                  "spi-out": f"{seq * 3:08x}", "bytes-in": str(seq % 997 * 1000)})
    sa["child-sas"][f"net-{2 * seq + 2}"] = child
    return sa


class ChurnCharon(SyntheticCharon):
    """`n` clients online out of 1.2 n; a client that reconnects keeps its identity and
    virtual IP (a road warrior coming back), its SA gets new ids."""

    def __init__(self, n: int, clean_deletes: bool = False) -> None:
        #: downs as a client's delete (state DELETING) rather than a vanished peer's
        #: (ESTABLISHED: the watcher looks up to 0.5 s for charon's DPD log line)
        self.clean_deletes = clean_deletes
        self.live: dict[int, bytes] = {}
        self.seq_of: dict[int, int] = {}
        for client in range(n):
            self._add(client, client)
        self.offline = list(range(n, n + n // 5))
        self.next_seq = n
        self.listeners: list[tuple[asyncio.StreamWriter, set[str]]] = []
        self.sent = 0
        #: list-sas commands answered (the metrics poll's and the firewall's reads)
        self.list_sas = 0
        super().__init__(0)

    def connected(self, writer: asyncio.StreamWriter, registered: set[str]) -> None:
        self.listeners.append((writer, registered))

    def disconnected(self, writer: asyncio.StreamWriter) -> None:
        self.listeners = [x for x in self.listeners if x[0] is not writer]

    async def command(self, name: str, registered: set[str],
                      writer: asyncio.StreamWriter) -> None:
        if name == "list-sas":
            self.list_sas += 1
            if "list-sa" in registered:
                writer.write(b"".join(self.live.values()))
            writer.write(response({}))
        elif name == "stats":
            stats = dict(self.stats)
            stats["ikesas"] = {"total": str(len(self.live)), "half-open": "0"}
            stats["plugins"] = ["vici", "kernel-netlink", "socket-default", "attr"]
            writer.write(response(stats))
        elif name in ("list-conns", "list-certs", "list-authorities", "version",
                      "get-pools"):
            await super().command(name, registered, writer)
        else:  # get-conns, get-keys, load-*, ...: an empty charon that accepts
            writer.write(response({"success": "yes"}))

    def _emit(self, name: str, message: dict[str, Any]) -> None:
        packet = event_packet(name, message)
        for writer, registered in self.listeners:
            if name in registered and not writer.is_closing():
                writer.write(packet)
                self.sent += 1

    def _add(self, client: int, seq: int) -> dict[str, Any]:
        sa = sa_dict(client, seq)
        self.live[client] = event_packet("list-sa", {"rw": sa})
        self.seq_of[client] = seq
        return sa

    def down(self, client: int) -> None:
        del self.live[client]
        sa = sa_dict(client, self.seq_of.pop(client))
        if self.clean_deletes:
            sa["state"] = "DELETING"
        self.offline.append(client)
        self._emit("child-updown", {"rw": sa})
        self._emit("ike-updown", {"rw": sa})

    def up(self, rng: random.Random) -> None:
        client = self.offline.pop(rng.randrange(len(self.offline)))
        sa = self._add(client, self.next_seq)
        self.next_seq += 1
        self._emit("ike-updown", {"rw": sa, "up": "yes"})
        self._emit("child-updown", {"rw": sa, "up": "yes"})


def by_minute(samples: list[tuple[float, float]],
              of: Callable[[list[float]], float]) -> list[float]:
    """`of` (median, max, min) the RSS of each whole minute of per-second samples."""
    minutes: dict[int, list[float]] = {}
    for t, rss in samples:
        minutes.setdefault(int(t // 60), []).append(rss)
    return [round(of(v), 1) for _, v in sorted(minutes.items()) if len(v) >= 30]


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds of all its threads); `ip netns exec` execs, so the Popen's
    pid is swand's Python."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024
    return rss, cpu_seconds(pid)[0]


def filter_reader_loop() -> None:
    """`--read-filter`, inside the namespace: one table read per line on stdin, answered
    with the monotonic time of the read (one clock for the whole machine) and the VIPs."""
    for _ in sys.stdin:
        at = time.monotonic()
        vips = sorted(legacy_filter_vips(VIP_NETWORK))
        print(json.dumps({"at": at, "vips": vips}), flush=True)


class FilterReader:
    """A `--read-filter` process kept running in the namespace: no fork and interpreter
    start per poll while swand converges."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--read-filter"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))

    def read(self) -> tuple[float, set[str]]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["at"], set(answer["vips"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def scrape(ns: str) -> str:
    return scrape_in(ns, PORT)


def scrape_events(ns: str) -> dict[str, float]:
    out = scrape(ns)
    events: dict[str, float] = {}
    for line in out.splitlines():
        if line.startswith("swand_vici_events_total{"):
            name = line.split('event="', 1)[1].split('"', 1)[0]
            events[name] = float(line.rsplit(" ", 1)[1])
    return events


def scrape_sa_view(ns: str) -> tuple[int, float, set[str]]:
    """What `/metrics` says: IKE_SAs counted (all connections and states), the event
    queue's depth, the peers' identities (`swand_peer_info`, with per_peer only)."""
    text = scrape(ns)
    count, depth, peers = 0.0, -1.0, set()
    for line in text.splitlines():
        if line.startswith("swand_ike_sas{"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("swand_event_queue_depth "):
            depth = float(line.rsplit(" ", 1)[1])
        elif line.startswith("swand_peer_info{"):
            peers.add(line.split('remote_id="', 1)[1].split('"', 1)[0])
    return round(count), depth, peers


def identity(client: int) -> str:
    return f"client{client}@bench.test"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="swand-churn-"))
    sock = work / "charon.vici"
    charon = ChurnCharon(args.sas, clean_deletes=args.clean_deletes)
    server = await asyncio.start_unix_server(charon.handle, path=str(sock), limit=1 << 20)
    ns = f"swchurn{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    for c in (["ip", "link", "set", "lo", "up"],
              ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
              ["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"],
              ["ip", "link", "set", "eth0", "up"]):
        subprocess.run(["ip", "netns", "exec", ns, *c], check=True)
    (work / "swanctl").mkdir()
    (work / "swanctl" / "swanctl.conf").write_text("")
    toml = work / "swand.toml"
    toml.write_text(f'[charon]\nvici = "unix://{sock}"\ninterval = 10\n'
                    f'[swanctl]\ndir = "{work / "swanctl"}"\n'
                    f'[firewall]\nenabled = {str(not args.no_firewall).lower()}\n'
                    'backend = "legacy"\nmode = "policy"\negress = "eth0"\n'
                    f'[metrics]\nlisten = "127.0.0.1:{PORT}"\n'
                    f'per_peer = {str(args.per_peer).lower()}\n[log]\nformat = "json"\n'
                    f'level = "{args.log_level}"\n')
    log = open(work / "swand.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "swand", "run",
                             "-c", str(toml)], cwd=str(ROOT), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    reader = FilterReader(ns)
    res: dict[str, Any] = {"sas": args.sas, "rate": args.rate, "minutes": args.minutes,
                           "firewall": not args.no_firewall}

    async def metrics_now() -> bool:
        """/metrics shows the live SAs: as many (and, with per_peer, the same peers),
        and no event waits (the count alone is constant under churn)."""
        count, depth, peers = await asyncio.to_thread(scrape_sa_view, ns)
        res["metrics_seen"] = [count, depth]
        if args.per_peer and peers != {identity(i) for i in charon.live}:
            return False
        return count == len(charon.live) and depth == 0

    async def converged_now(want: set[str]) -> bool:
        if args.no_firewall:
            return await metrics_now()
        return (await asyncio.to_thread(reader.read))[1] == want

    try:
        want = {vip(i) for i in charon.live}
        deadline = time.monotonic() + 300
        while not await converged_now(want):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("swand did not converge at start: "
                                   + (work / "swand.log").read_text()[-3000:])
            await asyncio.sleep(0.5)
        res["start_converged_s"] = 300 - (deadline - time.monotonic())
        _, cpu0 = proc_stats(proc.pid)
        sent0 = charon.sent
        list_sas0 = charon.list_sas
        base_events = await asyncio.to_thread(scrape_events, ns)
        rng = random.Random(16)
        per_tick = max(1, round(args.rate / 10))
        started = time.monotonic()
        end = started + args.minutes * 60
        samples: list[tuple[float, float, float]] = []
        next_sample = started + 60
        #: RSS every second: a sample at the minute mark alone catches whatever a poll
        #: or a pass holds for the moment (list-sas of 10,000 SAs, a 2.5 MB table blob)
        rss_seconds: list[tuple[float, float]] = []
        next_second = started + 1
        tick = started
        while time.monotonic() < end:
            for i in rng.sample(sorted(charon.live), per_tick):
                charon.down(i)
            for _ in range(per_tick):
                charon.up(rng)
            tick += 0.1
            now = time.monotonic()
            if now >= next_second:
                rss_seconds.append((now - started, proc_stats(proc.pid)[0]))
                next_second += 1
            if now >= next_sample:
                rss, cpu = proc_stats(proc.pid)
                samples.append((now - started, rss, cpu - cpu0))
                print(json.dumps({"t": round(now - started), "rss_mb": rss,
                                  "cpu_s": cpu - cpu0, "live": len(charon.live)}),
                      flush=True)
                next_sample += 60
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        stopped = time.monotonic()
        res["stopped_wall"] = time.time()
        rss, cpu = proc_stats(proc.pid)
        res["list_sas_during_churn"] = charon.list_sas - list_sas0
        if not samples or stopped - started - samples[-1][0] > 30:
            samples.append((stopped - started, rss, cpu - cpu0))
        want = {vip(i) for i in charon.live}
        converged = metrics_converged = None
        while not args.no_firewall and time.monotonic() - stopped < 60:
            # the moment of the read that showed it, not when the answer came back
            read_at, have = await asyncio.to_thread(reader.read)
            if have == want:
                converged = read_at - stopped
                break
            await asyncio.sleep(0.05)
        if converged is None and not args.no_firewall:
            res["rules_missing"] = len(want - have)
            res["rules_extra"] = len(have - want)
        while time.monotonic() - stopped < 120:
            if await metrics_now():
                metrics_converged = time.monotonic() - stopped
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)
        events = await asyncio.to_thread(scrape_events, ns)
        rss, cpu = proc_stats(proc.pid)
        handled = sum(events.get(k, 0) - base_events.get(k, 0)
                      for k in ("ike-updown", "child-updown"))
        res.update(
            converged_after_stop_s=converged, metrics_after_stop_s=metrics_converged,
            events_sent=charon.sent - sent0,
            events_counted=handled, cpu_s=cpu - cpu0, rss_end_mb=rss,
            rss_by_minute=[(round(t), round(r, 1)) for t, r, _ in samples],
            live_sas=len(charon.live), churn_s=stopped - started,
            rss_min1_min5=(samples[-1][1] / samples[0][1]) if len(samples) >= 2 else None,
            rss_median_by_minute=by_minute(rss_seconds, statistics.median),
            rss_max_by_minute=by_minute(rss_seconds, max),
            rss_min_by_minute=by_minute(rss_seconds, min),
        )
        return res
    finally:
        stop_group(proc)
        reader.close()
        log.close()
        server.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if args.keep_log:
            args.keep_log.write_bytes((work / "swand.log").read_bytes())
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="disconnects (and as many connects) per second")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--keep-log", type=Path, default=None)
    ap.add_argument("--log-level", default="warning", help="swand's (info: every pass)")
    ap.add_argument("--no-firewall", action="store_true",
                    help="swand without its firewall: the event path and metrics only")
    ap.add_argument("--clean-deletes", action="store_true",
                    help="downs as clients' deletes (DELETING), not vanished peers")
    ap.add_argument("--per-peer", action="store_true",
                    help="[metrics] per_peer = true; /metrics must name the live peers")
    ap.add_argument("--read-filter", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_filter:
        filter_reader_loop()
        return 0
    if os.geteuid() != 0:
        print("bench_churn: needs root (network namespace)", file=sys.stderr)
        return 2
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    res = asyncio.run(run(args))
    res["load_at_start"] = float(load)
    print(json.dumps(res))
    per_event = res["cpu_s"] / max(1.0, res["events_counted"]) * 1000
    print(f"\n{res['sas']:,} SAs, {res['rate']:.0f}+{res['rate']:.0f}/s for "
          f"{res['churn_s']:.0f} s: events sent {res['events_sent']}, counted by swand "
          f"{res['events_counted']:.0f}; rules == SAs {res['converged_after_stop_s']} s, "
          f"/metrics == SAs {res['metrics_after_stop_s']} s after the churn; "
          f"RSS by minute {res['rss_by_minute']} "
          f"(last/first {res['rss_min1_min5']}; medians of each minute "
          f"{res['rss_median_by_minute']}); CPU {res['cpu_s']:.1f} s "
          f"({per_event:.2f} ms per event)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
