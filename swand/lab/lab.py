"""The lab: namespaces, links, a CA, one charon per host, and a teardown that always runs.

Topology (every name carries the lab id, so parallel labs never collide)::

    client1 ns  eth0 198.51.100.11/24 ─┐
    client2 ns  eth0 198.51.100.12/24 ─┤ br0 198.51.100.254/24
                                       │      router ns ("internet")
    gateway ns  eth0 192.0.2.1/24 ───── gw0 192.0.2.254/24
                                         lo 203.0.113.10/32  (the far "internet host")

The router forwards between the two TEST-NET links and owns 203.0.113.10; it has no route
to the clients' virtual IPs, so a road warrior reaches 203.0.113.10 only when the gateway
masquerades. Nothing is created in, or changed in, the machine's own namespace except the
`ip netns` name files under /run/netns and the lab folder under /run/swand-lab.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from swand.lab import configs, trixie
from swand.lab.charon import DEFAULT_PLUGINS, VERSIONS, Charon, start_all
from swand.lab.internet import Radvd, WebHost
from swand.lab.pki import Issued, LabCA
from swand.lab.util import LabError, decode, die_with_parent, sh, wait_for

LAB_ROOT = trixie.LAB_ROOT
NETNS_PREFIX = "swl-"
INTERNET_HOST = "203.0.113.10"
GATEWAY_ADDRESS = "192.0.2.1"
GATEWAY_ID = "vpn.lab.test"
ROUTER_GATEWAY_SIDE = "192.0.2.254"
ROUTER_CLIENT_SIDE = "198.51.100.254"
CLIENT_NET_PREFIX = "198.51.100."
#: IPv6 (documentation prefix 2001:db8::/32), set up beside IPv4 for NAT66 tests
INTERNET_HOST6 = "2001:db8:113::10"
GATEWAY_ADDRESS6 = "2001:db8:2::1"
ROUTER_GATEWAY_SIDE6 = "2001:db8:2::fe"
ROUTER_CLIENT_SIDE6 = "2001:db8:100::fe"
CLIENT_NET6_PREFIX = "2001:db8:100::"
#: the gateway's on-link /64 from its "provider" (the router): the router reaches an
#: address in it only when neighbour discovery for it is answered
GATEWAY_PREFIX6 = "2001:db8:2::/64"
CLIENT_DOMAIN = "lab.test"
#: the virtual-IP pool the example configs hand out
POOL = "10.8.0.128/25"

_live_labs: set[Lab] = set()
_live_lock = threading.Lock()
_hooks_installed = False
_capture_ids = itertools.count()
#: ids of every lab this process brought up, for the per-test "nothing left" check
created_lab_ids: list[str] = []


class Capture:
    """tcpdump running in a namespace; `stop()` returns the decoded lines (-n -l)."""

    def __init__(self, host: Host, iface: str, bpf: str = "", extra: Sequence[str] = ()):
        self.host = host
        n = next(_capture_ids)
        self.out_path = host.workdir / f"tcpdump-{n}.txt"
        self.err_path = host.workdir / f"tcpdump-{n}.err"
        argv = [*die_with_parent(), "ip", "netns", "exec", host.netns, "tcpdump", "-n", "-l",
                "-U", "-i", iface, *extra, *([bpf] if bpf else [])]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        host.lab._procs.append(self.proc)
        wait_for(lambda: "listening on" in self.err_path.read_text(errors="replace")
                 or self.proc.poll() is not None, 10.0, message=f"tcpdump on {iface}")
        if self.proc.poll() is not None:
            raise LabError(f"tcpdump in {host.name} failed: {self.err_path.read_text()}")

    def lines(self) -> list[str]:
        """Packets captured so far (tcpdump flushes each line)."""
        return [ln for ln in self.out_path.read_text(errors="replace").splitlines() if ln]

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """Wait until a captured line contains `text`; return that line."""
        return wait_for(lambda: next((ln for ln in self.lines() if text in ln), ""), timeout,
                        message=f"{text!r} in tcpdump on {self.host.name}")

    def stop(self, grace: float = 0.3) -> list[str]:
        """Stop tcpdump after `grace` seconds (packets still in the kernel ring buffer
        would otherwise be lost) and return all lines."""
        if self.proc.poll() is None:
            time.sleep(grace)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.lines()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Host:
    """One namespace of the lab. Gateway and clients have a charon; the router has none.

    Attributes: `name` ("gateway", "client1", "router"), `netns` (the `ip netns` name),
    `address` (uplink IPv4 on eth0; router: its gateway-side address), `workdir` (its
    folder), `ike_id` (identity in its certificate), `cert` (the Issued cert or None),
    `charon` (the Charon or None).
    """

    def __init__(self, lab: Lab, name: str, address: str, ike_id: str | None) -> None:
        self.lab = lab
        self.name = name
        self.netns = f"{NETNS_PREFIX}{lab.id}-{name}"
        self.address = address
        #: IPv6 uplink address (documentation prefix), None for extra hosts
        self.address6: str | None = None
        self.workdir = lab.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ike_id = ike_id
        self.cert: Issued | None = None
        self.charon: Charon | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.netns} {self.address}>"

    # --- commands --------------------------------------------------------------------

    def run(
        self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 30.0,
        input: str | None = None, env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this namespace (a string goes through `sh -c`); raises
        LabError with its output when it fails and `check` is true."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return sh(["ip", "netns", "exec", self.netns, *argv], check=check, timeout=timeout,
                  input=input, env=env)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process in this namespace; the lab kills it on teardown."""
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen([*die_with_parent(), "ip", "netns", "exec", self.netns, *argv],
                                **kwargs)
        self.lab._procs.append(proc)
        return proc

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a sysctl in this namespace only (net.* keys are per namespace)."""
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def ping(self, dst: str, count: int = 1, timeout: float = 2.0, src: str | None = None
             ) -> bool:
        argv = ["ping", "-n", "-c", str(count), "-W", str(int(max(1, timeout)))]
        if src:
            argv += ["-I", src]
        return self.run([*argv, dst], check=False, timeout=timeout * count + 5).returncode == 0

    def http_get(self, url: str, timeout: float = 5.0) -> str:
        """GET `url` from inside this namespace (e.g. swand's /metrics) and return the
        body; raises LabError naming the URL on any failure."""
        code = ("import sys, urllib.request; "
                "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float("
                "sys.argv[2])).read().decode('utf-8', 'replace'))")
        return self.run([sys.executable, "-c", code, url, str(timeout)],
                        timeout=timeout + 10).stdout

    def tcpdump(self, iface: str = "any", bpf: str = "", extra: Sequence[str] = ()
                ) -> Capture:
        """Start tcpdump (returns once it listens); use as a context manager or stop()."""
        return Capture(self, iface, bpf, extra)

    def set_address(self, address: str, prefix: int = 24) -> None:
        """Change the uplink (eth0) address, as a road warrior's home IP changes: the new
        address is added, the old one removed (the new one is promoted), and the default
        route is put back."""
        if self.name == "router":
            raise LabError("the router's addresses are fixed")
        old = self.address
        gw = ROUTER_GATEWAY_SIDE if self.name == "gateway" else ROUTER_CLIENT_SIDE
        self.sysctl("net.ipv4.conf.eth0.promote_secondaries", 1)
        self.run(["ip", "addr", "add", f"{address}/{prefix}", "dev", "eth0"])
        if old != address:
            self.run(["ip", "addr", "del", f"{old}/{prefix}", "dev", "eth0"], check=False)
        self.run(["ip", "route", "replace", "default", "via", gw, "dev", "eth0"])
        self.address = address

    # --- charon ----------------------------------------------------------------------

    def _need_charon(self) -> Charon:
        if self.charon is None:
            raise LabError(f"{self.name} runs no charon")
        return self.charon

    @property
    def vici_uri(self) -> str:
        return self._need_charon().vici_uri

    @property
    def vici_socket(self) -> Path:
        return self._need_charon().socket_path

    @property
    def swanctl_dir(self) -> Path:
        return self._need_charon().swanctl_dir

    @property
    def log_path(self) -> Path:
        return self._need_charon().log_path

    @property
    def strongswan_conf(self) -> Path:
        return self._need_charon().conf_path

    @property
    def charon_version(self) -> str:
        return self._need_charon().version

    def start_charon(self, timeout: float = 15.0) -> dict[str, str]:
        return self._need_charon().start(timeout)

    def stop_charon(self) -> None:
        self._need_charon().stop()

    def kill9(self) -> None:
        """SIGKILL charon (a crash); `start_charon()` brings a fresh one."""
        self._need_charon().kill9()

    def restart_charon(self, timeout: float = 15.0) -> dict[str, str]:
        return self._need_charon().restart(timeout)

    @property
    def charon_pid(self) -> int | None:
        return self._need_charon().pid

    def log(self) -> str:
        """The charon log so far (filelog, flushed per line)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return self._need_charon().tail(lines)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until `text` appears in the charon log; return the log."""
        def probe() -> str:
            log = self.log()
            return log if text in log else ""

        return wait_for(probe, timeout,
                        message=lambda: f"{text!r} in {self.name}'s log; {self.log_tail()}")

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30.0
                ) -> subprocess.CompletedProcess[str]:
        """Run swanctl of this host's charon version against this host's charon and
        swanctl folder, e.g. `gw.swanctl("--load-all")`, `gw.swanctl("--list-sas")`."""
        c = self._need_charon()
        argv = list(args)
        if argv and argv[0] not in ("-h", "--help") and not any(
                a in ("-u", "--uri") or a.startswith("--uri=") for a in argv):
            argv[1:1] = ["--uri", c.vici_uri]
        return sh([*c.argv("/usr/sbin/swanctl"), *argv], check=check, timeout=timeout,
                  env=c.env())

    def write_swanctl_conf(self, text: str, name: str = "swanctl.conf") -> Path:
        """Write `swanctl.conf` (or another file in the swanctl folder) and return it."""
        path = self.swanctl_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @contextlib.contextmanager
    def session(self, timeout: float | None = 10.0) -> Iterator[Any]:
        """A blocking `vici.Session` on this host's charon."""
        with self._need_charon().session(timeout) as s:
            yield s

    def version(self) -> dict[str, str]:
        with self.session() as s:
            version: dict[str, str] = decode(s.version())
            return version

    def list_sas(self, ike: str | None = None) -> list[dict[str, Any]]:
        """IKE SAs as dicts of str, each with its connection name under "name"."""
        filt = {"ike": ike} if ike else None
        with self.session() as s:
            return [{"name": name, **sa} for item in s.list_sas(filt)
                    for name, sa in decode(item).items()]

    def list_conns(self) -> dict[str, Any]:
        with self.session() as s:
            return {name: conn for item in s.list_conns()
                    for name, conn in decode(item).items()}

    def virtual_ips(self) -> list[str]:
        """Virtual IPs this host got (client side: `local-vips` of its IKE SAs)."""
        return [ip for sa in self.list_sas() for ip in sa.get("local-vips", [])]

    def wait_for_sa(self, conn: str | None = None, timeout: float = 15.0,
                    state: str = "ESTABLISHED") -> dict[str, Any]:
        """Wait for an IKE SA (of connection `conn`) in `state` with a CHILD_SA
        INSTALLED; return it."""
        def probe() -> dict[str, Any] | None:
            for sa in self.list_sas():
                if (conn is None or sa["name"] == conn) and sa.get("state") == state and (
                        state != "ESTABLISHED" or any(
                            c.get("state") == "INSTALLED"
                            for c in sa.get("child-sas", {}).values())):
                    return sa
            return None
        return wait_for(probe, timeout,
                        message=lambda: f"{conn or 'an'} SA on {self.name}; {self.log_tail()}")

    def initiate(self, child: str, ike: str | None = None, timeout: float = 20.0) -> None:
        """`swanctl --initiate --child CHILD` (raises with the log on failure)."""
        args = ["--initiate", "--child", child, "--timeout", str(int(timeout))]
        if ike:
            args += ["--ike", ike]
        proc = self.swanctl(*args, check=False, timeout=timeout + 10)
        if proc.returncode != 0:
            raise LabError(f"{self.name}: initiate {child} failed: {proc.stdout[-2000:]}"
                           f"{proc.stderr}\n{self.log_tail()}")


class Lab:
    """Gateway, `clients` road warriors and a router/internet host, each in a fresh
    namespace, with a CA and one charon per gateway/client.

    Use as a context manager (`with Lab() as lab:`) or call `up()`/`down()`; `down()` is
    also run at interpreter exit and on SIGTERM for every lab still up.
    """

    def __init__(
        self, clients: int = 2, charon: str = "5.9", *, gateway_id: str = GATEWAY_ID,
        plugins: Sequence[str] = DEFAULT_PLUGINS, extra_conf: str = "",
        start_charons: bool = True, client_charon: str | None = None, ipv6: bool = False,
        binds: Sequence[str] = (),
    ) -> None:
        if clients < 0 or clients > 200:
            raise LabError(f"clients must be 0..200, got {clients}")
        for version in (charon, client_charon or charon):
            if version not in VERSIONS:
                raise LabError(f"charon version must be one of {', '.join(VERSIONS)}, got "
                               f"{version!r}")
        self.id = secrets.token_hex(3)
        self.charon_version = charon
        #: the clients' charon version (default: the gateway's), to mix versions
        self.client_charon_version = client_charon or charon
        self.n_clients = clients
        self.gateway_id = gateway_id
        self.plugins = list(plugins)
        self.extra_conf = extra_conf
        self.start_charons = start_charons
        #: IPv6 on the links too (off by default: with it MOBIKE may move an SA to IPv6
        #: when a client's IPv4 address changes)
        self.ipv6 = ipv6
        #: host folders a chrooted 6.0 charon/swanctl may read (read-only, same path)
        self.binds = tuple(binds)
        self.workdir = LAB_ROOT / self.id
        self.ca: LabCA | None = None
        self.router: Host
        self.gateway: Host
        self.clients: list[Host] = []
        self.hosts: dict[str, Host] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []
        self._up = False
        self._made_workdir = False
        self._web: WebHost | None = None
        self.timings: dict[str, float] = {}

    # --- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        """Build everything; on any failure tear down what was built and re-raise."""
        t0 = time.monotonic()
        _install_exit_hooks()
        sweep_stale()
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, charon)")
        tree = trixie.trixie_tree() if "6.0" in (
            self.charon_version, self.client_charon_version) else None
        with _live_lock:
            _live_labs.add(self)
            created_lab_ids.append(self.id)
        self._up = True
        try:
            self.workdir.mkdir(parents=True, exist_ok=False)  # another lab's id: refuse
            self._made_workdir = True
            os.chmod(self.workdir, 0o700)
            (self.workdir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
            self.router = self._host("router", ROUTER_GATEWAY_SIDE, None)
            self.gateway = self._host("gateway", GATEWAY_ADDRESS, self.gateway_id)
            self.clients = [
                self._host(f"client{i}", f"{CLIENT_NET_PREFIX}{10 + i}",
                           f"client{i}@{CLIENT_DOMAIN}")
                for i in range(1, self.n_clients + 1)
            ]
            if self.ipv6:
                self.router.address6 = ROUTER_GATEWAY_SIDE6
                self.gateway.address6 = GATEWAY_ADDRESS6
                for i, c in enumerate(self.clients, start=1):
                    c.address6 = f"{CLIENT_NET6_PREFIX}{10 + i}"  # ::11 mirrors .11
            self._build_network()
            self.timings["network"] = time.monotonic() - t0
            self._build_pki()
            self.timings["pki"] = time.monotonic() - t0 - self.timings["network"]
            for h in self.charon_hosts:
                version = self.charon_version if h is self.gateway else (
                    self.client_charon_version)
                h.charon = Charon(h.netns, h.workdir, version, self.plugins,
                                  self.extra_conf, tree if version == "6.0" else None,
                                  self.binds)
                assert h.cert is not None and self.ca is not None
                h.cert.install(h.swanctl_dir, self.ca)
            if self.start_charons:
                t1 = time.monotonic()
                start_all([h.charon for h in self.charon_hosts if h.charon])
                self.timings["charons"] = time.monotonic() - t1
        except BaseException:
            self.down()
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def down(self) -> None:
        """Stop charons and every process started here, delete the namespaces, remove
        the lab folder. Safe to call twice; raises LabError listing what it could not
        remove (after trying everything)."""
        if not self._up:
            return
        t0 = time.monotonic()
        problems: list[str] = []
        charons = [h.charon for h in self.hosts.values() if h.charon and h.charon.proc]
        for c in charons:  # SIGTERM all first, then wait: parallel shutdown
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        for c in charons:
            try:
                c.stop(timeout=3.0)
            except Exception as exc:  # keep tearing down
                problems.append(f"charon {c.netns}: {exc}")
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            with contextlib.suppress(Exception):
                p.wait(5)
        for ns in reversed(self._namespaces):
            try:
                _delete_netns(ns)
            except LabError as exc:
                problems.append(str(exc))
        try:
            if self._made_workdir:
                trixie.remove_tree(self.workdir)
        except LabError as exc:
            problems.append(str(exc))
        with _live_lock:
            _live_labs.discard(self)
        self._up = False
        self.timings["down"] = time.monotonic() - t0
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """What this lab left behind (empty after a clean `down()`): namespaces,
        processes, folders, processes whose environment points into the lab folder."""
        left = [f"process {p.pid} ({p.args!r})" for p in self._procs if p.poll() is None]
        for h in self.hosts.values():
            if h.charon and h.charon.pid is not None:
                left.append(f"charon {h.charon.pid} in {h.netns}")
        return left + leftovers_of(self.id)

    # --- accessors -------------------------------------------------------------------

    @property
    def netns_prefix(self) -> str:
        return f"{NETNS_PREFIX}{self.id}-"

    @property
    def charon_hosts(self) -> list[Host]:
        return [self.gateway, *self.clients]

    def client(self, i: int) -> Host:
        """client(1) is the first client."""
        return self.clients[i - 1]

    def add_host(self, name: str, *, charon: str | None = None, start: bool = True,
                 binds: Sequence[str] = ()) -> Host:
        """An extra namespace with only `lo` and its own charon (default: the gateway's
        version) and an empty swanctl folder: e.g. the reference charon of a
        conformance test (`swanctl --load-all` into one, swand into another). `binds`:
        host folders its chrooted 6.0 swanctl must read (e.g. the corpus), besides the
        lab's own."""
        if name in self.hosts or not name.replace("-", "").isalnum() or len(name) > 20:
            raise LabError(f"bad or duplicate host name {name!r}")
        version = charon or self.charon_version
        tree = trixie.trixie_tree() if version == "6.0" else None
        host = self._host(name, "127.0.0.1", None)
        _ip_batch(host.netns, ["link set lo up"])
        host.charon = Charon(host.netns, host.workdir, version, self.plugins,
                             self.extra_conf, tree, (*self.binds, *binds))
        host.swanctl_dir.mkdir(parents=True, exist_ok=True)
        if start:
            host.start_charon()
        return host

    # --- building --------------------------------------------------------------------

    def _host(self, name: str, address: str, ike_id: str | None) -> Host:
        host = Host(self, name, address, ike_id)
        sh(["ip", "netns", "add", host.netns])
        self._namespaces.append(host.netns)
        # no IPv6 duplicate address detection: link-local addresses would stay
        # "tentative" for a second or two, and neighbour discovery with them
        host.run(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                  "net.ipv6.conf.default.accept_dad=0"])
        self.hosts[name] = host
        return host

    def _build_network(self) -> None:
        r = self.router.netns
        v6 = self.ipv6
        # nodad: IPv6 addresses usable at once, not after a second of DAD
        batch = [
            "link set lo up",
            "link add br0 type bridge", f"addr add {ROUTER_CLIENT_SIDE}/24 dev br0",
            *([f"addr add {ROUTER_CLIENT_SIDE6}/64 dev br0 nodad"] if v6 else []),
            "link set br0 up",
            f"addr add {INTERNET_HOST}/32 dev lo",  # no dummy module in every kernel
            *([f"addr add {INTERNET_HOST6}/128 dev lo"] if v6 else []),
            f"link add gw0 type veth peer name eth0 netns {self.gateway.netns}",
            f"addr add {ROUTER_GATEWAY_SIDE}/24 dev gw0",
            *([f"addr add {ROUTER_GATEWAY_SIDE6}/64 dev gw0 nodad"] if v6 else []),
            "link set gw0 up",
        ]
        for i, c in enumerate(self.clients, start=1):
            batch += [f"link add c{i} type veth peer name eth0 netns {c.netns}",
                      f"link set c{i} master br0", f"link set c{i} up"]
        _ip_batch(r, batch)
        self.router.run("sysctl -qw net.ipv4.ip_forward=1"
                        + (" net.ipv6.conf.all.forwarding=1" if v6 else ""))
        for host, via, via6 in [(self.gateway, ROUTER_GATEWAY_SIDE, ROUTER_GATEWAY_SIDE6)] + [
                (c, ROUTER_CLIENT_SIDE, ROUTER_CLIENT_SIDE6) for c in self.clients]:
            _ip_batch(host.netns, [
                "link set lo up", f"addr add {host.address}/24 dev eth0",
                *([f"addr add {host.address6}/64 dev eth0 nodad"] if v6 else []),
                "link set eth0 up",
                f"route add default via {via}",
                *([f"route add default via {via6}"] if v6 else []),
            ])

    def _build_pki(self) -> None:
        self.ca = LabCA(f"swand lab CA {self.id}")
        self.gateway.cert = self.ca.issue(
            "gateway", dns=(self.gateway_id,), ips=(GATEWAY_ADDRESS,), server=True,
            common_name=self.gateway_id)
        for c in self.clients:
            assert c.ike_id is not None
            c.cert = self.ca.issue(c.name, emails=(c.ike_id,), common_name=c.ike_id)

    # --- conveniences for tests and the demo --------------------------------------------

    def gateway_nat(self, source: str = "10.8.0.0/16", source6: str | None = None) -> None:
        """Forwarding + masquerade for `source` (and `source6` with ip6tables) inside the
        gateway namespace only (legacy tables), what swand's firewall does for real; for
        self-tests and tests of other parts."""
        self.gateway.sysctl("net.ipv4.ip_forward", 1)
        self.gateway.run(["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", source,
                          "-o", "eth0", "-j", "MASQUERADE"])
        if source6:
            self.gateway.sysctl("net.ipv6.conf.all.forwarding", 1)
            self.gateway.run(["ip6tables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s",
                              source6, "-o", "eth0", "-j", "MASQUERADE"])

    def web_host(self, port: int = 80) -> WebHost:
        """The internet's web host in the router namespace (on 203.0.113.10 and, with
        `ipv6`, 2001:db8:113::10), started on first use: a GET returns the source
        address it sees (`swand.lab.internet.fetch(client, url)`)."""
        if self._web is None:
            self._web = WebHost(self.router, port)
        return self._web

    def radvd(self, iface: str = "gw0", prefix: str = GATEWAY_PREFIX6) -> Radvd:
        """Start radvd in the router namespace advertising `prefix` on `iface` (default:
        to the gateway), so the gateway can take its IPv6 default route from RAs."""
        if not self.ipv6:
            raise LabError("radvd needs a lab with ipv6=True")
        return Radvd(self.router, iface, prefix)

    def disconnect(self, host: Host) -> None:
        """Silently cut a client's (or the gateway's) link at the router: no address
        change, packets just vanish, as when a phone loses coverage (DPD tests)."""
        self.router.run(["ip", "link", "set", self._router_port(host), "down"])

    def reconnect(self, host: Host) -> None:
        self.router.run(["ip", "link", "set", self._router_port(host), "up"])

    def _router_port(self, host: Host) -> str:
        if host is self.gateway:
            return "gw0"
        if host in self.clients:
            return f"c{self.clients.index(host) + 1}"
        raise LabError(f"{host.name} has no link to the router")

    def configure_gateway_with_swanctl(self, **kwargs: Any) -> None:
        """Write `configs.gateway_conf(**kwargs)` and load it with swanctl (the reference
        loader; tests of swand's own loader write the file and run swand instead)."""
        self.gateway.write_swanctl_conf(configs.gateway_conf(gateway_id=self.gateway_id,
                                                             **kwargs))
        self.gateway.swanctl("--load-all")

    def configure_clients(self, clients: Sequence[Host] | None = None, **kwargs: Any
                          ) -> None:
        """Write `configs.client_conf` for each client and load it with swanctl."""
        for c in self.clients if clients is None else clients:
            assert c.ike_id is not None
            c.write_swanctl_conf(configs.client_conf(
                client_id=c.ike_id, cert=f"{c.name}.pem", gateway_id=self.gateway_id,
                **kwargs))
            c.swanctl("--load-all")

    def connect(self, client: Host, child: str = "rw", timeout: float = 20.0) -> str:
        """Initiate `child` on a client and return its first virtual IP."""
        client.initiate(child, timeout=timeout)
        vips = wait_for(client.virtual_ips, timeout,
                        message=lambda: f"a virtual IP on {client.name}; {client.log_tail()}")
        return vips[0]


# --- module helpers ------------------------------------------------------------------


def leftovers_of(lab_id: str) -> list[str]:
    """What lab `lab_id` left on this machine: namespaces, its folder, processes whose
    command line or environment names the folder (charons), mounts below it."""
    workdir = LAB_ROOT / lab_id
    left = [f"netns {ns}" for ns in list_netns() if ns.startswith(f"{NETNS_PREFIX}{lab_id}-")]
    if workdir.exists():
        left.append(f"folder {workdir}")
    left += [f"process {pid} uses {workdir}" for pid in _pids_mentioning(str(workdir))]
    left += [f"mount {m}" for m in trixie.mounts_under(workdir)]
    # chrooted charons mount into the tree only in their own mount namespaces
    left += [f"mount {m}" for m in trixie.mounts_under(trixie.CACHE_DIR)]
    return left


def _ip_batch(netns: str, commands: list[str]) -> None:
    sh(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def list_netns() -> list[str]:
    proc = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _delete_netns(ns: str) -> None:
    """Kill whatever still runs in `ns`, then delete it."""
    if ns not in list_netns():
        return
    pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    if pids:
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not sh(["ip", "netns", "pids", ns], check=False).stdout.split(),
                     5.0, message=f"processes in {ns} to die")
    proc = sh(["ip", "netns", "delete", ns], check=False)
    if proc.returncode != 0 and ns in list_netns():
        raise LabError(f"cannot delete netns {ns}: {proc.stderr.strip()}")


def _start_time(pid: int) -> str:
    """Process start time (clock ticks since boot), to tell a reused pid from the owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _owner_alive(lab_dir: Path) -> bool:
    try:
        pid_s, start = (lab_dir / "owner").read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        # no owner file: a lab being created right now, or junk; judge by age
        try:
            return time.time() - lab_dir.stat().st_mtime < 60
        except OSError:
            return False
    return os.path.exists(f"/proc/{pid}") and _start_time(pid) == start


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line or environment contains `text` (a lab folder)."""
    found = []
    needle = text.encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
                        break
            except OSError:
                continue
    return found


def sweep_stale() -> list[str]:
    """Remove labs whose owning process died without tearing down (kill -9 of a test
    run): their namespaces, processes and folders. Labs of live processes — other test
    runs on this machine — are left alone. Returns what was removed."""
    removed: list[str] = []
    live_ids: set[str] = set()
    if LAB_ROOT.is_dir():
        for lab_dir in LAB_ROOT.iterdir():
            if not lab_dir.is_dir():
                continue
            if _owner_alive(lab_dir):
                live_ids.add(lab_dir.name)
                continue
            for pid in _pids_mentioning(str(lab_dir)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid}")
            with contextlib.suppress(LabError):
                trixie.remove_tree(lab_dir)
                removed.append(f"folder {lab_dir}")
    for ns in list_netns():
        if not ns.startswith(NETNS_PREFIX):
            continue
        lab_id = ns[len(NETNS_PREFIX):].split("-", 1)[0]
        if lab_id in live_ids or (LAB_ROOT / lab_id).exists():
            continue
        with contextlib.suppress(LabError):
            _delete_netns(ns)
            removed.append(f"netns {ns}")
    return removed


def _teardown_all() -> None:
    with _live_lock:
        labs = list(_live_labs)
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.down()


def _install_exit_hooks() -> None:
    """atexit + SIGTERM/SIGHUP → SystemExit, so `with Lab()` blocks and fixtures unwind
    and nothing survives a killed test run (SIGKILL is covered by `sweep_stale`)."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is not threading.main_thread():
        return

    owner = os.getpid()

    def _exit(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            # a forked child (pyroute2 forks to open sockets in a namespace, and stops
            # the child with SIGTERM) must not unwind the parent's test run in its copy
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit)
