"""NDP proxy benchmark (routed IPv6): swand's pass beside `ip -batch`, inside a throw-away
network namespace (the host's neighbour tables are never touched).

    .venv/bin/python bench/bench_ndp.py [--leases 1000] [--repeat 7]

Scenarios (one veth end as the egress, one /128 proxy entry per lease):

1. from empty: N leases come up at once (swand start on a busy gateway);
   beside it ``ip -batch`` of N ``neigh add proxy`` lines;
2. one lease added to N: a client connects;
3. unchanged pass at N (the periodic drift check: dump, diff, write nothing);
4. all N gone (the first pass after a charon crash).

Each swand figure is a whole pass of the runtime reconciler: leases -> desired entries
(pure core) -> dump swand's entries -> plan -> netlink writes. Median of --repeat runs, ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _lease(i: int) -> object:
    from swand.core.leases import Lease

    return Lease(f"2001:db8:2::{0x1000 + i:x}", "rw", str(i))


async def _inside(args: argparse.Namespace) -> dict[str, float]:
    from swand.adapters.netlink import NetState
    from swand.config import SwandConfig
    from swand.runtime.ndp import LeaseSnapshot, NdpProxyReconciler
    from swand.runtime.runner import PassRequest

    state: dict[str, LeaseSnapshot] = {"snap": LeaseSnapshot()}

    async def snapshot() -> LeaseSnapshot:
        return state["snap"]

    async def net_state() -> NetState:
        return NetState("eth0", egress6="eth0")

    ndp = NdpProxyReconciler(SwandConfig(), snapshot, net_state=net_state)
    n = args.leases
    many = tuple(_lease(i) for i in range(n))
    more = (*many, _lease(n))
    results: dict[str, list[float]] = {k: [] for k in ("empty", "one", "unchanged", "gone")}

    async def timed(key: str, leases: tuple[object, ...]) -> None:
        state["snap"] = LeaseSnapshot(leases)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        await ndp._pass(PassRequest({"bench"}))
        results[key].append((time.perf_counter() - t0) * 1000)

    for _ in range(args.repeat):
        await timed("empty", many)
        await timed("one", more)
        await timed("unchanged", more)
        await timed("gone", ())
    await ndp.stop()
    return {k: statistics.median(v) for k, v in results.items()}


def _ip_batch(netns: str, n: int, repeat: int) -> float:
    lines = "".join(f"neigh add proxy 2001:db8:2::{0x1000 + i:x} dev eth0\n"
                    for i in range(n))
    flush = "".join(f"neigh del proxy 2001:db8:2::{0x1000 + i:x} dev eth0\n"
                    for i in range(n))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=lines, text=True, check=True)
        times.append((time.perf_counter() - t0) * 1000)
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=flush, text=True, check=True)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        for key, ms in asyncio.run(_inside(args)).items():
            print(f"{key} {ms:.1f}")
        return 0
    netns = f"swand-bench-ndp-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer",
                        "name", "eth1"], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "up"], check=True)
        out = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, __file__, "--inside",
             "--leases", str(args.leases), "--repeat", str(args.repeat)],
            capture_output=True, text=True, check=True).stdout
        swand = dict(line.split() for line in out.splitlines())
        batch = _ip_batch(netns, args.leases, args.repeat)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    n = args.leases
    print(f"| scenario ({n:,} leases) | swand pass (ms) | `ip -batch` (ms) |")
    print("|---|---:|---:|")
    print(f"| {n:,} leases from empty | {swand['empty']} | {batch:.1f} (add {n:,}) |")
    print(f"| one lease added to {n:,} | {swand['one']} | |")
    print(f"| unchanged pass at {n + 1:,} (drift check) | {swand['unchanged']} | |")
    print(f"| all {n + 1:,} gone (after a charon crash) | {swand['gone']} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
