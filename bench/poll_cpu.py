"""CPU time, not only wall time, of `swanctl --list-sas --raw` and of swand's metrics poll
against one synthetic charon (bench/synthetic_vici.py): on a shared machine the wall clock
of both depends on the load, their CPU time much less.

    .venv/bin/python bench/poll_cpu.py [--sas 100000] [--runs 3]

Three swanctl runs (CPU from the children's rusage), then three `poll_once()` of one
MetricsPoller in this process (CPU of the whole process, every thread).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SYNTH = str(Path(__file__).resolve().parent / "synthetic_vici.py")


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


async def polls(uri: str, runs: int) -> list[tuple[float, float]]:
    from swand.runtime.metrics import MetricsPoller, MetricsRegistry

    poller = MetricsPoller(uri, MetricsRegistry(), interval=3600, own_events=False,
                           timeout=600)
    out = []
    for _ in range(runs):
        c, t = cpu(resource.RUSAGE_SELF), time.monotonic()
        assert await poller.poll_once(), "synthetic charon did not answer"
        out.append((time.monotonic() - t, cpu(resource.RUSAGE_SELF) - c))
    await poller.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="swand-cpu-") as d:
        sock = os.path.join(d, "charon.vici")
        srv = subprocess.Popen([sys.executable, SYNTH, "serve", sock, "--sas", str(args.sas)],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None
            srv.stdout.readline()
            swanctl = []
            for _ in range(args.runs):
                c, t = cpu(resource.RUSAGE_CHILDREN), time.monotonic()
                subprocess.run(["swanctl", "--list-sas", "--raw", "--uri", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, check=True, timeout=600)
                swanctl.append((time.monotonic() - t, cpu(resource.RUSAGE_CHILDREN) - c))
            poll = asyncio.run(polls(f"unix://{sock}", args.runs))
        finally:
            srv.terminate()
            srv.wait()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]

    def shown(runs: list[tuple[float, float]]) -> str:
        return ", ".join(f"{w:.2f} / {c:.2f}" for w, c in runs)
    print(f"{args.sas:,} SAs, load {load}: swanctl wall / CPU {shown(swanctl)} s; "
          f"poll wall / CPU {shown(poll)} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
