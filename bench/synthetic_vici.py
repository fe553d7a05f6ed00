"""A synthetic charon for scale tests: speaks the real VICI wire protocol (the `vici`
package's codec) on a unix socket and answers `list-sas` with N IKE_SAs of real shape.

    .venv/bin/python bench/synthetic_vici.py serve SOCKET --sas N    # a server
    .venv/bin/python bench/synthetic_vici.py table [--sizes 1000,10000,100000]

`table` runs, for each size, a fresh server process and a fresh measuring process
(so memory figures are swand's alone): the metrics poller (one persistent VICI session,
`list-sas` with `noblock`) and the /metrics HTTP server, and reports the poll time, the
scrape time (median of 10), `swanctl --list-sas --raw` against the same server, and the
measuring process's resident memory before and after. The IKE_SA payload is a real
list-sa event recorded from charon 5.9.8 in the bench lab (`bench_metrics.py --record`),
with unique ids, identities, addresses, virtual IPs and counters varied per SA.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from vici.protocol import FiniteStream, Message, Packet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Recorded from charon 5.9.8 (bench_metrics.py --record); values varied per SA below.
RECORDED_IKE_SA: dict[str, Any] = {
    "uniqueid": "4", "version": "2", "state": "ESTABLISHED", "local-host": "192.0.2.1",
    "local-port": "4500", "local-id": "gw.bench.test", "remote-host": "192.0.2.11",
    "remote-port": "4500", "remote-id": "c1-1@bench.test",
    "initiator-spi": "ace20f2cb7f94bc5", "responder-spi": "704c18e6b3694155",
    "nat-remote": "yes", "nat-any": "yes", "encr-alg": "AES_CBC", "encr-keysize": "128",
    "integ-alg": "HMAC_SHA2_256_128", "prf-alg": "PRF_HMAC_SHA2_256",
    "dh-group": "CURVE_25519", "established": "1", "rekey-time": "14348",
    "remote-vips": ["10.9.0.3"],
    "child-sas": {"net-3": {
        "name": "net", "uniqueid": "3", "reqid": "3", "state": "INSTALLED",
        "mode": "TUNNEL", "protocol": "ESP", "encap": "yes", "spi-in": "58fd17f4",
        "spi-out": "06b654c5", "encr-alg": "AES_GCM_16", "encr-keysize": "128",
        "bytes-in": "0", "packets-in": "0", "bytes-out": "0", "packets-out": "0",
        "rekey-time": "3337", "life-time": "3959", "install-time": "1",
        "local-ts": ["10.10.0.0/16"], "remote-ts": ["10.9.0.3/32"],
    }},
}
STATS = {
    "uptime": {"running": "1 hour", "since": "Nov 26 18:00:26 2026"},
    "workers": {"total": "16", "idle": "16",
                "active": {"critical": "0", "high": "0", "medium": "0", "low": "0"}},
    "queues": {"critical": "0", "high": "0", "medium": "0", "low": "0"},
    "scheduled": "0", "ikesas": {"total": "0", "half-open": "0"}, "plugins": ["vici"],
}
VERSION = {"daemon": "charon-systemd", "version": "5.9.8", "sysname": "Linux",
           "release": "synthetic", "machine": "x86_64"}
LIST_CONN = {"rw": {"local_addrs": ["%any"], "remote_addrs": ["%any"], "version": "IKEv2",
                    "local-1": {"class": "pre-shared key", "id": "gw.bench.test"},
                    "remote-1": {"class": "pre-shared key"},
                    "children": {"net": {"mode": "TUNNEL"}}}}


def frame(packet: bytes) -> bytes:
    return struct.pack("!I", len(packet)) + packet


def event_packet(name: str, message: dict[str, Any]) -> bytes:
    body = Message.serialize(message)
    return frame(struct.pack("!BB", Packet.EVENT, len(name)) + name.encode() + body)


def response(message: dict[str, Any]) -> bytes:
    return frame(struct.pack("!B", Packet.CMD_RESPONSE) + Message.serialize(message))


def sa_event(i: int) -> bytes:
    """The recorded IKE_SA with per-SA values (ids, addresses, counters)."""
    sa = json.loads(json.dumps(RECORDED_IKE_SA))
    vip = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
    sa.update({"uniqueid": str(2 * i + 1), "remote-id": f"client{i}@bench.test",
               "remote-host": f"198.51.{100 + i // 65536 % 4}.{i % 250 + 1}",
               "remote-port": str(1024 + i % 60000), "remote-vips": [vip],
               "initiator-spi": f"{i:016x}", "responder-spi": f"{i * 7:016x}"})
    child = sa["child-sas"].pop("net-3")
    child.update({"uniqueid": str(2 * i + 2), "reqid": str(i + 1),
                  "bytes-in": str(i * 1000), "bytes-out": str(i * 2000),
                  "packets-in": str(i * 10), "packets-out": str(i * 20),
                  "spi-in": f"{i:08x}", "spi-out": f"{i * 3:08x}",
                  "remote-ts": [f"{vip}/32"]})
    sa["child-sas"][f"net-{2 * i + 2}"] = child
    return event_packet("list-sa", {"rw": sa})


def updown_event(i: int, up: bool, sent: float) -> bytes:
    """A child-updown event for SA `i` (the recorded IKE_SA, like `sa_event`), stamped
    with the server's CLOCK_MONOTONIC in `bench-sent` so a client on this host can tell
    how long the event waited before it was handled."""
    sa = json.loads(json.dumps(RECORDED_IKE_SA))
    vip = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
    sa.update({"uniqueid": str(2 * i + 1), "remote-id": f"client{i}@bench.test",
               "remote-vips": [vip]})
    child = sa["child-sas"].pop("net-3")
    child.update({"uniqueid": str(2 * i + 2), "reqid": str(i + 1),
                  "remote-ts": [f"{vip}/32"]})
    sa["child-sas"][f"net-{2 * i + 2}"] = child
    message = {"rw": sa, "bench-sent": f"{sent:.6f}"}
    if up:
        message["up"] = "yes"
    return event_packet("child-updown", message)


class SyntheticCharon:
    def __init__(self, n: int, event_rate: float = 0.0) -> None:
        self.n = n
        self.event_rate = event_rate
        started = time.monotonic()
        self.list_sa_events = b"".join(sa_event(i) for i in range(n))
        self.build_s = time.monotonic() - started
        stats = json.loads(json.dumps(STATS))
        stats["ikesas"]["total"] = str(n)
        self.stats = stats

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        registered: set[str] = set()
        emitters: list[asyncio.Task[None]] = []
        self.connected(writer, registered)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                data = await reader.readexactly(length)
                kind = data[0]
                name = data[2:2 + data[1]].decode()
                if kind == Packet.EVENT_REGISTER:
                    registered.add(name)
                    writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
                    if name == "child-updown" and self.event_rate > 0:
                        emitters.append(asyncio.create_task(self.emit(writer, registered)))
                elif kind == Packet.EVENT_UNREGISTER:
                    registered.discard(name)
                    writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
                elif kind == Packet.CMD_REQUEST:
                    Message.deserialize(FiniteStream(data[2 + data[1]:]))
                    await self.command(name, registered, writer)
                await writer.drain()
        self.disconnected(writer)
        writer.close()

    def connected(self, writer: asyncio.StreamWriter, registered: set[str]) -> None:
        """A client connected; `registered` is its live set of event registrations."""

    def disconnected(self, writer: asyncio.StreamWriter) -> None:
        """The client went away."""

    async def emit(self, writer: asyncio.StreamWriter, registered: set[str]) -> None:
        """child-updown events at `event_rate` per second (alternately down and up of
        SA i), while the connection stays registered."""
        i = 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            while "child-updown" in registered and not writer.is_closing():
                writer.write(updown_event(i % self.n, bool(i % 2), time.monotonic()))
                i += 1
                await asyncio.sleep(1 / self.event_rate)

    async def command(self, name: str, registered: set[str],
                      writer: asyncio.StreamWriter) -> None:
        if name == "list-sas":
            if "list-sa" in registered:
                writer.write(self.list_sa_events)
            writer.write(response({}))
        elif name == "list-conns":
            if "list-conn" in registered:
                writer.write(event_packet("list-conn", LIST_CONN))
            writer.write(response({}))
        elif name in ("list-certs", "list-authorities"):
            writer.write(response({}))
        elif name == "stats":
            writer.write(response(self.stats))
        elif name == "version":
            writer.write(response(VERSION))
        elif name == "get-pools":
            writer.write(response({"pool4": {"base": "10.64.0.0", "size": "1048574",
                                             "online": str(self.n), "offline": "0"}}))
        else:
            writer.write(frame(bytes([Packet.CMD_UNKNOWN])))


async def serve(path: str, n: int, event_rate: float = 0.0) -> None:
    charon = SyntheticCharon(n, event_rate)
    server = await asyncio.start_unix_server(charon.handle, path=path, limit=1 << 20)
    print(json.dumps({"ready": True, "build_s": charon.build_s,
                      "bytes": len(charon.list_sa_events)}), flush=True)
    async with server:
        await server.serve_forever()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(uri: str, scrapes: int) -> dict[str, float]:
    from swand.adapters import http_metrics
    from swand.runtime.metrics import MetricsCollector, MetricsPoller, MetricsRegistry

    base = rss_mb()
    registry = MetricsRegistry()
    poller = MetricsPoller(uri, registry, interval=3600, own_events=False, timeout=600)
    polls = []
    for _ in range(3):
        t = time.perf_counter()
        assert await poller.poll_once(), "synthetic charon did not answer"
        polls.append(time.perf_counter() - t)
    server = http_metrics.serve("127.0.0.1:0", MetricsCollector(poller, registry))
    assert server is not None
    url = f"http://127.0.0.1:{server.port}/metrics"

    def scrape_times() -> list[float]:
        out = []
        for _ in range(scrapes):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                r.read()
            out.append(time.perf_counter() - t)
        return out

    times = await asyncio.get_running_loop().run_in_executor(None, scrape_times)
    result = {"poll_s": statistics.median(polls), "scrape_s": statistics.median(times),
              "rss_before_mb": base, "rss_after_mb": rss_mb(),
              "sas_seen": float(len(poller.snapshot.view.sas) if poller.snapshot.view else 0)}
    server.stop()
    await poller.close()
    return result


def table(sizes: list[int], scrapes: int) -> None:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="swand-synth-") as d:
            sock = os.path.join(d, "charon.vici")
            srv = subprocess.Popen([sys.executable, __file__, "serve", sock, "--sas", str(n)],
                                   stdout=subprocess.PIPE, text=True)
            try:
                assert srv.stdout is not None
                ready = json.loads(srv.stdout.readline())
                swanctl_runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    subprocess.run(["swanctl", "--list-sas", "--raw", "--uri",
                                    f"unix://{sock}"],
                                   check=True, stdout=subprocess.DEVNULL, timeout=600)
                    swanctl_runs.append(time.perf_counter() - t)
                swanctl_s = statistics.median(swanctl_runs)
                out = subprocess.run([sys.executable, __file__, "measure", f"unix://{sock}",
                                      "--scrapes", str(scrapes)],
                                     check=True, capture_output=True, text=True, timeout=1800)
                res = json.loads(out.stdout.strip().splitlines()[-1])
            finally:
                srv.terminate()
                srv.wait()
        res.update(n=n, swanctl_s=swanctl_s, payload_mb=ready["bytes"] / 2**20)
        rows.append(res)
        print(json.dumps(res), flush=True)
    print()
    print("| IKE SAs | list-sas payload | `swanctl --list-sas --raw` | swand poll "
          "(list-sas, noblock) | `/metrics` scrape | RSS before | RSS after | growth |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['payload_mb']:.1f} MiB | {r['swanctl_s'] * 1000:.0f} ms | "
              f"{r['poll_s'] * 1000:.0f} ms | {r['scrape_s'] * 1000:.1f} ms | "
              f"{r['rss_before_mb']:.0f} MB | {r['rss_after_mb']:.0f} MB | "
              f"{r['rss_after_mb'] - r['rss_before_mb']:.0f} MB |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("socket")
    s.add_argument("--sas", type=int, default=1000)
    s.add_argument("--event-rate", type=float, default=0.0,
                   help="child-updown events per second to each registered connection")
    m = sub.add_parser("measure")
    m.add_argument("uri")
    m.add_argument("--scrapes", type=int, default=10)
    t = sub.add_parser("table")
    t.add_argument("--sizes", default="1000,10000,100000")
    t.add_argument("--scrapes", type=int, default=10)
    args = ap.parse_args()
    if args.cmd == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.socket, args.sas, args.event_rate))
    elif args.cmd == "measure":
        print(json.dumps(asyncio.run(measure(args.uri, args.scrapes))))
    else:
        table([int(x) for x in args.sizes.split(",")], args.scrapes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
