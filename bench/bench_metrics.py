"""Metrics scale benchmark with real IKE SAs (run as root; not part of pytest).

    .venv/bin/python bench/bench_metrics.py --sas 1000 [--clients 4] [--record FILE]

Builds its own small lab (a gateway namespace with a bridge, N client namespaces, one
charon-systemd each, kernel-libipsec, PSK), makes the clients' charons initiate
`--sas` IKE_SAs in total (many PSK connections per client charon, each with its own
identity; the gateway has one road-warrior connection with `unique = never` and a pool),
then runs swand's metrics poller and HTTP server against the gateway's charon in this
process and measures, in the same run:

- `swanctl --list-sas --raw` wall time (median of 5),
- the `/metrics` scrape wall time (median of 20) and the poller's list-sas poll time,
- this process's resident memory (the swand metrics stack: poller, accumulator, server).

`--record FILE` also saves one real list-sa event, child-updown/child-rekey payloads and
stats/version/list-conns/get-pools replies as JSON (input for bench/synthetic_vici.py).

Everything is removed at exit (namespaces, charons, files), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vici

from swand.adapters import http_metrics
from swand.runtime.metrics import MetricsCollector, MetricsPoller, MetricsRegistry

PLUGINS = ("random nonce kdf openssl pem pkcs1 x509 pubkey sha1 sha2 hmac aes gcm gmp "
           "curve25519 attr kernel-libipsec kernel-netlink socket-default vici counters")
PSK = "bench-only-psk-not-secret-0123456789"  # throw-away lab secret, never logged


GATEWAY_CONF = f"""connections {{
    rw {{
        version = 2
        encap = yes
        unique = never
        pools = pool4
        proposals = aes128-sha256-x25519
        dpd_delay = 30s
        local {{
            auth = psk
            id = gw.bench.test
        }}
        remote {{
            auth = psk
        }}
        children {{
            net {{
                local_ts = 10.10.0.0/16
                esp_proposals = aes128gcm16
            }}
        }}
    }}
}}
pools {{
    pool4 {{
        addrs = 10.9.0.0/16
    }}
}}
secrets {{
    ike-bench {{
        secret = "{PSK}"
    }}
}}
"""

SCRAPER = """
import statistics, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(n):
    t = time.perf_counter()
    body = urllib.request.urlopen(url, timeout=30).read().decode()
    times.append(time.perf_counter() - t)
rss = [l for l in body.splitlines() if l.startswith("process_resident_memory_bytes")]
est = sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
          if l.startswith("swand_ike_sas{") and 'state="ESTABLISHED"' in l)
print(statistics.median(times), rss[0].rsplit(" ", 1)[1] if rss else 0, est)
"""


def measure_daemon(lab: MiniLab, scrapes: int, target: int) -> dict[str, float]:
    """The real `swand run` (loader, events, metrics; firewall off) on the gateway: its
    /metrics scrape from inside the namespace and its resident memory."""
    assert lab.gateway
    gw = lab.gateway
    toml = gw.dir / "swand.toml"
    toml.write_text(f'[charon]\nvici = "{gw.uri}"\n[swanctl]\ndir = "{gw.dir / "swanctl"}"\n'
                    '[firewall]\nenabled = false\n[metrics]\nlisten = "127.0.0.1:9817"\n'
                    '[log]\nformat = "json"\n')
    root = str(Path(__file__).resolve().parent.parent)
    log = open(gw.dir / "swand.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", gw.ns, sys.executable, "-m", "swand",
                             "run", "-c", str(toml)], cwd=root, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:9817/metrics"
    try:
        deadline = time.monotonic() + 120
        while True:
            out = subprocess.run(["ip", "netns", "exec", gw.ns, sys.executable, "-c", SCRAPER,
                                  url, "1"], capture_output=True, text=True)
            if out.returncode == 0 and float(out.stdout.split()[2]) >= target * 0.99:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("swand run did not report the SAs: "
                                   + (gw.dir / "swand.log").read_text()[-2000:])
            time.sleep(1)
        time.sleep(3)  # let start-up garbage settle
        out = sh(sys.executable, "-c", SCRAPER, url, str(scrapes), ns=gw.ns).split()
        swanctl_time = median_time(lambda: gw.swanctl("--list-sas", "--raw"), 5)
        return {"daemon_scrape_s": float(out[0]), "daemon_rss_mb": float(out[1]) / 2**20,
                "daemon_established": float(out[2]), "swanctl_again_s": swanctl_time}
    finally:
        stop_group(proc, 10)
        log.close()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(its own, its reaped children's) CPU seconds of a process, user + system: for
    charon the second is what its `_updown` shells and their `iptables` cost."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def legacy_filter_vips(network: str) -> set[str]:
    """The addresses in `network` that the legacy IPv4 filter table's rules name as a /32
    source or destination, read from the kernel's table (the getsockopt
    `iptables-legacy-save` makes) and walked here with struct: ~40 ms for 20,000 rules,
    where `iptables-legacy-save` formats them all as text in ~130 ms of CPU on the cores
    swand is working on. Runs inside the namespace."""
    import ipaddress
    import struct

    from swand.adapters.iptables_legacy import read_table_blob

    net = ipaddress.IPv4Network(network)
    base, mask = int(net.network_address), int(net.netmask)
    _, blob, _ = read_table_blob("ipv4", "filter")
    out: set[str] = set()
    full = b"\xff\xff\xff\xff"
    off, end = 0, len(blob)
    while off < end:
        for addr, netmask in ((off, off + 8), (off + 4, off + 12)):  # ipt_ip: src dst masks
            if blob[netmask:netmask + 4] == full:
                value = int.from_bytes(blob[addr:addr + 4], "big")
                if value & mask == base:
                    out.add(str(ipaddress.IPv4Address(value)))
        off += struct.unpack_from("=H", blob, off + 90)[0]  # ipt_entry.next_offset
    return out


def scrape_in(ns: str, port: int) -> str:
    """The /metrics text of a swand listening on 127.0.0.1:`port` inside namespace `ns`
    ("" while it does not answer)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen("
         f"'http://127.0.0.1:{port}/metrics', timeout=10).read().decode())"],
        capture_output=True, text=True).stdout


def stop_group(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM to the process group a benchmark started; SIGKILL if it does not stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def sh(*argv: str, check: bool = True, ns: str | None = None, **kw: Any) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    out = subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)
    return out.stdout


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MiniCharon:
    def __init__(self, ns: str, workdir: Path, extra: str = "") -> None:
        self.ns, self.dir = ns, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.sock = workdir / "charon.vici"
        self.uri = f"unix://{self.sock}"
        (workdir / "swanctl").mkdir(exist_ok=True)
        (workdir / "strongswan.conf").write_text(f"""
charon-systemd {{
    journal {{
        default = -1
    }}
    filelog {{
        f {{
            path = {workdir}/charon.log
            default = 1
            flush_line = yes
        }}
    }}
}}
charon {{
    load = {PLUGINS}
    retransmit_tries = 3
    cookie_threshold = 100000
    block_threshold = 100000
    init_limit_half_open = 0
    threads = 16
    {extra}
    plugins {{
        vici {{
            socket = {self.uri}
        }}
    }}
}}
swanctl {{
    socket = {self.uri}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["STRONGSWAN_CONF"] = str(self.dir / "strongswan.conf")
        env["SWANCTL_DIR"] = str(self.dir / "swanctl")
        return env

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/sbin/charon-systemd"], env=self.env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def wait(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), self.session() as s:
                s.version()
                return
            time.sleep(0.05)
        raise RuntimeError(f"charon in {self.ns} did not answer")

    @contextlib.contextmanager
    def session(self, timeout: float = 30.0) -> Any:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(str(self.sock))
            yield vici.Session(s)
        finally:
            s.close()

    def swanctl(self, *args: str) -> str:
        return sh("swanctl", *args, "--uri", self.uri, ns=self.ns, env=self.env())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class MiniLab:
    """gateway ns (bridge br0 192.0.2.1/24) + client namespaces 192.0.2.(10+i)."""

    def __init__(self, clients: int) -> None:
        self.tag = f"swm{os.getpid() % 100000}"
        self.gw_ns = f"{self.tag}-gw"
        self.client_ns = [f"{self.tag}-c{i}" for i in range(clients)]
        self.dir = Path(tempfile.mkdtemp(prefix="swand-bench-"))
        self.gateway: MiniCharon | None = None
        self.clients: list[MiniCharon] = []

    def up(self) -> MiniLab:
        sh("ip", "netns", "add", self.gw_ns)
        sh("ip", "link", "set", "lo", "up", ns=self.gw_ns)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.gw_ns)
        sh("ip", "addr", "add", "192.0.2.1/24", "dev", "br0", ns=self.gw_ns)
        sh("ip", "link", "set", "br0", "up", ns=self.gw_ns)
        # the gateway's side of the tunnels (local_ts): libipsec routes need a source
        sh("ip", "addr", "add", "10.10.0.1/16", "dev", "lo", ns=self.gw_ns)
        for i, ns in enumerate(self.client_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
               f"p{i}", "netns", self.gw_ns)
            sh("ip", "link", "set", f"p{i}", "master", "br0", "up", ns=self.gw_ns)
            sh("ip", "addr", "add", f"192.0.2.{10 + i}/24", "dev", "eth0", ns=ns)
            sh("ip", "link", "set", "eth0", "up", ns=ns)
        self.gateway = MiniCharon(self.gw_ns, self.dir / "gw", extra="install_routes = no")
        self.clients = [
            MiniCharon(ns, self.dir / ns)
            for ns in self.client_ns
        ]
        for c in [self.gateway, *self.clients]:
            c.start()
        for c in [self.gateway, *self.clients]:
            c.wait()
        return self

    def down(self) -> None:
        for c in [*self.clients, *([self.gateway] if self.gateway else [])]:
            with contextlib.suppress(Exception):
                c.stop()
        for ns in [*self.client_ns, self.gw_ns]:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def configure(self, per_client: int) -> None:
        assert self.gateway
        # the gateway from a swanctl.conf, so `swand run` can own it unchanged later
        (self.gateway.dir / "swanctl" / "swanctl.conf").write_text(GATEWAY_CONF)
        self.gateway.swanctl("--load-all")
        self.configure_clients(per_client)

    def configure_clients(self, per_client: int) -> None:
        """Each client charon: the PSK and `per_client` connections, own identity each."""
        for ci, client in enumerate(self.clients):
            with client.session() as s:
                s.load_shared({"type": "IKE", "data": PSK})
                for k in range(per_client):
                    s.load_conn({f"c{k}": {
                        "version": "2", "encap": "yes", "remote_addrs": ["192.0.2.1"],
                        "vips": ["0.0.0.0"], "proposals": ["aes128-sha256-x25519"],
                        "local-1": {"auth": "psk", "id": f"c{ci}-{k}@bench.test"},
                        "remote-1": {"auth": "psk", "id": "gw.bench.test"},
                        "children": {"net": {"remote_ts": ["10.10.0.0/16"],
                                             "esp_proposals": ["aes128gcm16"]}},
                    }})

    def initiate_all(self, per_client: int) -> None:
        for client in self.clients:
            with client.session() as s:
                for k in range(per_client):
                    for _ in s.initiate({"child": "net", "ike": f"c{k}", "timeout": "-1"}):
                        pass

    def gateway_sa_count(self) -> int:
        """IKE_SAs on the gateway that are ESTABLISHED with an INSTALLED CHILD_SA."""
        assert self.gateway
        n = 0
        with self.gateway.session() as s:
            for event in s.list_sas({"noblock": "yes"}):
                for sa in event.values():
                    if sa.get("state") == b"ESTABLISHED" and any(
                        c.get("state") == b"INSTALLED" for c in sa["child-sas"].values()
                    ):
                        n += 1
        return n


def median_time(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def record(lab: MiniLab, path: Path) -> None:
    """Real payloads from the gateway: list-sa events, replies, a child-rekey event."""
    assert lab.gateway
    out: dict[str, Any] = {}

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v.decode(errors="replace") if isinstance(v, bytes) else v

    with lab.gateway.session() as s:
        out["list-sa"] = [plain(e) for e in s.list_sas()][:3]
        out["list-conn"] = [plain(e) for e in s.list_conns()]
        out["stats"] = plain(s.stats())
        out["version"] = plain(s.version())
        out["get-pools"] = plain(s.get_pools({"leases": "yes"}))
    events: list[tuple[str, Any]] = []
    with lab.gateway.session() as s:
        listener = s.listen(["child-rekey", "child-updown"], timeout=1.0)
        sa = out["list-sa"][0]["rw"]
        with lab.gateway.session() as cmd:
            cmd.rekey({"child": "net", "ike-id": sa["uniqueid"]})
        deadline = time.monotonic() + 10
        for name, payload in listener:
            if name is not None:
                events.append((name.decode(), plain(payload)))
            if name == b"child-rekey" or time.monotonic() > deadline:
                break
        with contextlib.suppress(OSError):
            listener.close()
    out["events"] = events
    path.write_text(json.dumps(out, indent=1, sort_keys=True))
    print(f"recorded payloads to {path}")


async def measure(lab: MiniLab, scrapes: int) -> dict[str, float]:
    assert lab.gateway
    registry = MetricsRegistry()
    poller = MetricsPoller(lab.gateway.uri, registry, interval=3600)
    base_rss = rss_mb()
    ok = await poller.poll_once()
    assert ok, "poller could not read the gateway's charon"
    poll_times = []
    for _ in range(3):
        t = time.perf_counter()
        await poller.poll_once()
        poll_times.append(time.perf_counter() - t)
    server = http_metrics.serve("127.0.0.1:0", MetricsCollector(poller, registry))
    assert server is not None
    url = f"http://127.0.0.1:{server.port}/metrics"

    def scrape() -> None:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
            r.read()

    loop = asyncio.get_running_loop()
    scrape_time = await loop.run_in_executor(None, median_time, scrape, scrapes)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
    swanctl_time = median_time(lambda: lab.gateway.swanctl("--list-sas", "--raw"), 5)
    result = {
        "ike_sas": float(poller.snapshot.view.stats.ike_sas_total if poller.snapshot.view
                         else 0),
        "scrape_s": scrape_time,
        "swanctl_list_sas_raw_s": swanctl_time,
        "poll_s": statistics.median(poll_times),
        "rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - base_rss,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "exposition_lines": float(body.count("\n")),
    }
    server.stop()
    await poller.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--record", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_metrics: needs root (network namespaces)", file=sys.stderr)
        return 2
    per_client = -(-args.sas // args.clients)
    lab = MiniLab(args.clients)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        lab.up()
        lab.configure(per_client)
        t0 = time.monotonic()
        lab.initiate_all(per_client)
        target = per_client * args.clients
        while (n := lab.gateway_sa_count()) < target and time.monotonic() - t0 < 600:
            print(f"  {n}/{target} SAs up", flush=True)
            time.sleep(1)
        established = lab.gateway_sa_count()
        print(f"{established} IKE SAs on the gateway after {time.monotonic() - t0:.1f} s")
        if args.record:
            record(lab, args.record)
        result = asyncio.run(measure(lab, args.scrapes))
        result["setup_s"] = time.monotonic() - t0
        result.update(measure_daemon(lab, args.scrapes, established))
        print(json.dumps(result, indent=1))
        ratio = result["scrape_s"] / result["swanctl_list_sas_raw_s"]
        print(f"scrape / swanctl --list-sas --raw = {ratio:.2f}")
        ratio = result["daemon_scrape_s"] / result["swanctl_again_s"]
        print(f"swand run: scrape / swanctl --list-sas --raw = {ratio:.2f}, "
              f"RSS {result['daemon_rss_mb']:.1f} MB")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
