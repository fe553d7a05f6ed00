"""Event-loop lag at scale: how long swand's loop stalls while it polls N SAs, handles SA
events and runs a firewall pass (synthetic charon; not part of pytest).

    .venv/bin/python bench/bench_loop.py --sas 100000 [--polls 3] [--firewall-sas 10000]

A server process (`synthetic_vici.py serve`, the real VICI wire protocol) holds N IKE_SAs
and sends `child-updown` events at `--event-rate` per second, each stamped with the
server's CLOCK_MONOTONIC. A fresh measuring process runs, in one asyncio loop:

- a ticker: `asyncio.sleep(5 ms)` in a loop; lag = how late each wake-up is. The largest
  lag inside a window is the longest the loop could not run anything else;
- an event consumer as in the daemon (`ViciEventStream`, every event handed to
  `MetricsPoller.on_event`): latency = handled - sent;
- the metrics poller's `poll_once()` (`--polls` times), then, with `--firewall-sas` > 0
  and root, a firewall pass (`apply_firewall_once`, legacy backend, policy mode) against
  a second server with that many SAs, inside a throw-away network namespace.

Beside it, `swanctl --list-sas --raw` against the same server (median of 3), and the
measuring process's resident memory before and after the polls (per SA).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SYNTH = str(Path(__file__).resolve().parent / "synthetic_vici.py")
TICK = 0.005


class Ticker:
    """Wake-up lateness of a 5 ms sleep loop, stamped with the wake-up time."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            self.samples.append((now, now - t - TICK))

    def max_lag(self, start: float, end: float) -> float:
        # a stall that ends after `end` still began inside the window: count wake-ups
        # whose sleep started inside it
        return max((lag for t, lag in self.samples if start <= t - lag - TICK <= end),
                   default=0.0)


class EventConsumer:
    def __init__(self, uri: str, on_event: Any) -> None:
        self.latencies: list[tuple[float, float]] = []
        self.uri = uri
        self.on_event = on_event
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from swand.adapters.vici import ViciEventStream

        async with await ViciEventStream.connect(self.uri) as stream:
            await stream.register(["child-updown"])
            while True:
                name, payload = await stream.next_event()
                now = time.monotonic()
                sent = float(payload.pop("bench-sent", now))
                self.on_event(name, payload)
                self.latencies.append((now, now - sent))

    def window(self, start: float, end: float) -> list[float]:
        return [lat for t, lat in self.latencies if start <= t - lat <= end]


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "max_ms": 0.0, "p99_ms": 0.0, "p50_ms": 0.0}
    v = sorted(values)
    return {"n": len(v), "max_ms": v[-1] * 1000, "p50_ms": v[len(v) // 2] * 1000,
            "p99_ms": v[min(len(v) - 1, int(len(v) * 0.99))] * 1000}


async def measure(uri: str, polls: int, fw_uri: str | None) -> dict[str, Any]:
    from synthetic_vici import rss_mb

    from swand.runtime.metrics import MetricsPoller, MetricsRegistry

    base = rss_mb()
    ticker = Ticker()
    registry = MetricsRegistry()
    poller = MetricsPoller(uri, registry, interval=3600, own_events=False, timeout=600)
    consumer = EventConsumer(uri, poller.on_event)
    await asyncio.sleep(1.0)
    t = time.monotonic()
    await asyncio.sleep(1.0)
    out: dict[str, Any] = {"idle_max_lag_ms": ticker.max_lag(t, time.monotonic()) * 1000,
                           "idle_events": stats(consumer.window(t, time.monotonic()))}
    rows = []
    for _ in range(polls):
        start = time.monotonic()
        assert await poller.poll_once(), "synthetic charon did not answer"
        end = time.monotonic()
        await asyncio.sleep(0.3)
        rows.append({"poll_s": end - start,
                     "max_lag_ms": ticker.max_lag(start, end) * 1000,
                     "events": stats(consumer.window(start, end))})
    out["polls"] = rows
    out["rss_before_mb"] = base
    out["rss_after_mb"] = rss_mb()
    view = poller.snapshot.view
    out["sas_seen"] = len(view.sas) if view else 0
    if fw_uri:
        from swand.adapters.vici import ViciSession
        from swand.config import load_config
        from swand.runtime.firewall import apply_firewall_once

        toml = Path(tempfile.mkdtemp()) / "swand.toml"
        toml.write_text('[firewall]\nenabled = true\nbackend = "legacy"\nmode = "policy"\n'
                        'egress = "eth0"\n')
        cfg = load_config(toml)
        fw_rows = []
        for _ in range(2):  # from empty, then unchanged
            async with ViciSession(fw_uri) as session:
                start = time.monotonic()
                report = await apply_firewall_once(cfg, session)
                end = time.monotonic()
            await asyncio.sleep(0.3)
            fw_rows.append({"pass_s": end - start, "ok": report.ok, "rules": report.rules,
                            "max_lag_ms": ticker.max_lag(start, end) * 1000,
                            "events": stats(consumer.window(start, end))})
        out["firewall"] = fw_rows
    ticker.task.cancel()
    consumer.task.cancel()
    await poller.close()
    return out


@contextlib.contextmanager
def server(sock: str, n: int, rate: float) -> Any:
    srv = subprocess.Popen([sys.executable, SYNTH, "serve", sock, "--sas", str(n),
                            "--event-rate", str(rate)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        json.loads(srv.stdout.readline())
        yield
    finally:
        srv.terminate()
        srv.wait()


def swanctl_time(sock: str) -> list[float]:
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["swanctl", "--list-sas", "--raw", "--uri", f"unix://{sock}"],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
        runs.append(time.perf_counter() - t)
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="swand-loop-") as d:
        sock, fw_sock = os.path.join(d, "charon.vici"), os.path.join(d, "fw.vici")
        with contextlib.ExitStack() as stack:
            stack.enter_context(server(sock, args.sas, args.event_rate))
            cmd = [sys.executable, __file__, "measure", f"unix://{sock}",
                   "--polls", str(args.polls)]
            ns = None
            if args.firewall_sas and os.geteuid() == 0:
                stack.enter_context(server(fw_sock, args.firewall_sas, 0))
                ns = f"swloop{os.getpid()}"
                subprocess.run(["ip", "netns", "add", ns], check=True)
                stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
                for c in (["ip", "link", "set", "lo", "up"],
                          ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                          ["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"],
                          ["ip", "link", "set", "eth0", "up"]):
                    subprocess.run(["ip", "netns", "exec", ns, *c], check=True)
                cmd = ["ip", "netns", "exec", ns, *cmd, "--firewall", f"unix://{fw_sock}"]
            swanctl = swanctl_time(sock)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 timeout=3600)
            res = json.loads(out.stdout.strip().splitlines()[-1])
    with open("/proc/loadavg") as f:
        res["load"] = float(f.read().split()[0])
    res.update(n=args.sas, swanctl_runs_s=swanctl, swanctl_s=statistics.median(swanctl))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    m = sub.add_parser("measure")
    m.add_argument("uri")
    m.add_argument("--polls", type=int, default=3)
    m.add_argument("--firewall", default=None)
    ap.add_argument("--sas", type=int, default=100000)
    ap.add_argument("--polls", type=int, default=3)
    ap.add_argument("--event-rate", type=float, default=50.0)
    ap.add_argument("--firewall-sas", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "measure":
        print(json.dumps(asyncio.run(measure(args.uri, args.polls, args.firewall))))
        return 0
    res = run(args)
    print(json.dumps(res))
    per_sa = (res["rss_after_mb"] - res["rss_before_mb"]) * 2**20 / max(1, res["sas_seen"])
    print(f"\n{res['n']:,} SAs, load {res['load']:.1f}: swanctl --list-sas --raw "
          f"{res['swanctl_s'] * 1000:.0f} ms; idle max lag {res['idle_max_lag_ms']:.1f} ms; "
          f"RSS {res['rss_before_mb']:.0f} -> {res['rss_after_mb']:.0f} MB "
          f"({per_sa / 1024:.2f} KB/SA)")
    print("| phase | duration | vs swanctl | max loop lag | events in window | "
          "event latency p50 / p99 / max |")
    print("|---|---:|---:|---:|---:|---|")
    for i, p in enumerate(res["polls"]):
        e = p["events"]
        print(f"| poll {i + 1} | {p['poll_s'] * 1000:.0f} ms | "
              f"{p['poll_s'] / res['swanctl_s']:.2f}x | {p['max_lag_ms']:.0f} ms | {e['n']} | "
              f"{e['p50_ms']:.0f} / {e['p99_ms']:.0f} / {e['max_ms']:.0f} ms |")
    for i, p in enumerate(res.get("firewall", [])):
        e = p["events"]
        print(f"| firewall pass {i + 1} ({p['rules']} rules) | {p['pass_s'] * 1000:.0f} ms | | "
              f"{p['max_lag_ms']:.0f} ms | {e['n']} | "
              f"{e['p50_ms']:.0f} / {e['p99_ms']:.0f} / {e['max_ms']:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
