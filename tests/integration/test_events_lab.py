"""SA events and keepalive against real charons (5.9.8) in network namespaces.

A small self-contained PSK lab (a gateway on a bridge, road-warrior clients on veths,
TEST-NET-2 addresses, kernel-libipsec + `encap = yes`): these tests need many SAs and
precise control of each charon, not certificates. Everything is removed afterwards,
even on failure.

Re-record the payloads the unit tests use with ``SWAND_RECORD_EVENTS=tests/unit/data/events
pytest tests/integration/test_events_lab.py -k record``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vici.protocol import Message, Packet

from swand.adapters.netlink import NetlinkWatcher
from swand.adapters.vici import ViciEventStream, ViciSession
from swand.core.events import SaDown, SaUp
from swand.runtime.charon import Charon
from swand.runtime.events import EVENTS, EventWatcher
from swand.runtime.keepalive import Keepalive
from swand.runtime.wiring import wire

CHARON = "/usr/sbin/charon-systemd"


def needs_lab(test: Any) -> Any:
    """Root, namespaces and charon: the `lab` mark and skips when any is missing."""
    for mark in (
        pytest.mark.lab,
        pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
        pytest.mark.skipif(not Path(CHARON).exists(), reason="needs charon-systemd"),
    ):
        test = mark(test)
    return test


CONF = """\
charon-systemd {{
  journal {{ default = -1 }}
}}
charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints \
curve25519 sha1 sha2 hmac kdf aes gcm attr kernel-libipsec kernel-netlink socket-default vici
  plugins {{ vici {{ socket = unix://{dir}/charon.vici }} }}
  filelog {{ main {{ path = {dir}/charon.log
    default = 1
    ike = 2
    flush_line = yes
    append = yes
    time_format = %H:%M:%S }} }}
  retransmit_tries = 2
  retransmit_timeout = 1.0
  retransmit_base = 1.2
  {extra}
}}
"""
#: the DPD timeout these settings give: dpd_delay + 1.0 + 1.2 + 1.44 s of retransmits
DPD_DELAY = 2.0
DPD_TIMEOUT = DPD_DELAY + 1.0 + 1.2 + 1.2**2
PSK = "lab-psk-not-a-secret"
GW = "198.51.100.1"


class Host:
    """One namespace with one charon-systemd."""

    def __init__(self, lab: PskLab, name: str, extra_conf: str = "") -> None:
        self.name = name
        self.ns = f"{lab.prefix}-{name}"
        self.dir = lab.dir / name
        self.dir.mkdir()
        self.socket = self.dir / "charon.vici"
        self.uri = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr = ""
        (self.dir / "strongswan.conf").write_text(CONF.format(dir=self.dir, extra=extra_conf))
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.ns, *args], check=True)

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        env = dict(os.environ, STRONGSWAN_CONF=str(self.dir / "strongswan.conf"))
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, CHARON], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"charon in {self.ns} did not start: {self.log()[-1500:]}")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.socket.unlink(missing_ok=True)

    def log(self) -> str:
        path = self.dir / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""


class PskLab:
    """A gateway (bridge br0, 198.51.100.1) and `clients` road warriors (.10, .11, ...)."""

    def __init__(self, clients: int = 1, client_conf: str = "", gw_conf: str = "") -> None:
        self.prefix = "swev" + uuid.uuid4().hex[:6]
        self.dir = Path(tempfile.mkdtemp(prefix="swand-events-"))
        self.hosts: list[Host] = []
        self.clients: list[Host] = []
        try:
            self.gw = self._host("gw", gw_conf)
            self.gw.ip("link", "add", "br0", "type", "bridge")
            self.gw.ip("link", "set", "br0", "up")
            self.gw.ip("addr", "add", f"{GW}/24", "dev", "br0")
            self.gw.ip("addr", "add", "10.9.0.1/24", "dev", "br0")
            for i in range(clients):
                c = self._host(f"c{i + 1}", client_conf)
                subprocess.run(["ip", "link", "add", "up0", "netns", c.ns, "type", "veth",
                                "peer", "name", f"p{i + 1}", "netns", self.gw.ns], check=True)
                self.gw.ip("link", "set", f"p{i + 1}", "master", "br0")
                self.gw.ip("link", "set", f"p{i + 1}", "up")
                c.addr = f"198.51.100.{10 + i}"
                c.ip("addr", "add", f"{c.addr}/24", "dev", "up0")
                c.ip("link", "set", "up0", "up")
                self.clients.append(c)
        except BaseException:
            self.close()
            raise

    def _host(self, name: str, extra: str = "") -> Host:
        host = Host(self, name, extra)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            try:
                host.kill(signal.SIGTERM)
            except Exception:
                host.kill()
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.ns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def gw_conn() -> dict[str, Any]:
    return {"rw": {
        "version": 2, "local_addrs": [GW], "pools": ["rw"], "encap": True,
        "dpd_delay": f"{DPD_DELAY:g}s",  # unique = no: INITIAL_CONTACT replaces
        "local": {"auth": "psk", "id": "gw.lab"}, "remote": {"auth": "psk"},
        "children": {"net": {"local_ts": ["10.9.0.0/24"], "dpd_action": "clear"}}}}


def client_conn(name: str, ident: str, **extra: Any) -> dict[str, Any]:
    conn = {
        "version": 2, "remote_addrs": [GW], "vips": ["0.0.0.0"], "encap": True,
        "dpd_delay": f"{DPD_DELAY:g}s",
        "local": {"auth": "psk", "id": ident}, "remote": {"auth": "psk", "id": "gw.lab"},
        "children": {"net": {"remote_ts": ["10.9.0.0/24"]}}}
    conn.update(extra)
    return {name: conn}


async def setup_gateway(lab: PskLab) -> ViciSession:
    lab.gw.start()
    s = await ViciSession.connect(lab.gw.uri)
    await s.request("load-shared", {"type": "IKE", "data": PSK, "owners": []})
    await s.request("load-pool", {"rw": {"addrs": "10.8.0.0/24"}})
    await s.request("load-conn", gw_conn())
    return s


async def setup_client(host: Host, conns: dict[str, Any]) -> ViciSession:
    host.start()
    s = await ViciSession.connect(host.uri)
    await s.request("load-shared", {"type": "IKE", "data": PSK, "owners": []})
    for name, body in conns.items():
        await s.request("load-conn", {name: body})
    return s


@pytest.fixture
def lab_factory() -> Iterator[Any]:
    labs: list[PskLab] = []

    def make(clients: int = 1, client_conf: str = "", gw_conf: str = "") -> PskLab:
        lab = PskLab(clients, client_conf, gw_conf)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


def run(coro: Any, timeout: float = 120) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Recorder:
    """Collects a watcher's actions with their arrival time."""

    def __init__(self, watcher: EventWatcher) -> None:
        self.actions: list[tuple[float, Any]] = []
        watcher.add_callback(lambda a: self.actions.append((time.monotonic(), a)))

    def of(self, kind: type) -> list[Any]:
        return [a for _, a in self.actions if isinstance(a, kind)]

    async def wait(self, predicate: Any, timeout: float) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, action in self.actions:
                if predicate(action):
                    return at, action
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no matching action in {timeout} s; got {self.actions!r}")


async def started(watcher: EventWatcher) -> asyncio.Task[None]:
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.ready.wait(), 10)
    return task


async def stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- gateway: classification --------------------------------------------------------


@needs_lab
def test_dpd_and_delete_are_classified(lab_factory: Any) -> None:
    lab = lab_factory(clients=2)

    async def main() -> None:
        g = await setup_gateway(lab)
        c1 = await setup_client(lab.clients[0], client_conn("home", "c1.lab"))
        c2 = await setup_client(lab.clients[1], client_conn("home", "c2.lab"))
        watcher = EventWatcher(lab.gw.uri)
        rec = Recorder(watcher)
        task = await started(watcher)
        try:
            for c in (c1, c2):
                await c.request("initiate", {"ike": "home", "child": "net", "timeout": 5000})
            await rec.wait(lambda a: isinstance(a, SaUp) and a.sa.identity == "c2.lab", 5)
            assert watcher.table.peer_count() == 2

            killed_at = time.monotonic()
            lab.clients[0].kill()  # power loss: no delete is sent
            at, down = await rec.wait(
                lambda a: isinstance(a, SaDown) and a.sa.identity == "c1.lab",
                DPD_TIMEOUT + 3)
            assert down.reason.value == "dpd" and down.confirmed and down.peer_gone
            assert at - killed_at <= DPD_TIMEOUT + 1.0, at - killed_at
            assert watcher.stats.downs["dpd"] == 1
            assert [sa.identity for sa in watcher.live()] == ["c2.lab"]  # its rules go

            await c2.request("terminate", {"ike": "home", "timeout": 3000})
            _, down2 = await rec.wait(
                lambda a: isinstance(a, SaDown) and a.sa.identity == "c2.lab", 5)
            assert down2.reason.value == "deleted"
            assert watcher.stats.downs["dpd"] == 1 and watcher.stats.downs["deleted"] == 1
            assert watcher.live() == ()
        finally:
            await stop(task)
            for s in (g, c1, c2):
                await s.close()

    run(main())


@needs_lab
def test_charon_restart_during_the_stream(lab_factory: Any) -> None:
    """kill -9 and restart of the gateway's charon: the watcher reconnects, registers
    the same events again, resynchronises, and counts nothing twice."""
    lab = lab_factory(clients=1)

    async def main() -> None:
        g = await setup_gateway(lab)
        c1 = await setup_client(lab.clients[0], client_conn("home", "c1.lab"))
        watcher = EventWatcher(lab.gw.uri, backoff_min=0.1, backoff_max=0.5)
        rec = Recorder(watcher)
        task = await started(watcher)
        registered = watcher.stats.registered
        try:
            await c1.request("initiate", {"ike": "home", "child": "net", "timeout": 5000})
            await rec.wait(lambda a: isinstance(a, SaUp), 5)
            lab.gw.kill()
            await asyncio.sleep(0.5)
            lab.gw.start()
            await g.close()
            g = await setup_gateway_config(lab)
            # the watcher noticed the restart: the old SA is gone ("unknown": charon
            # took it with it), reported once
            _, gone = await rec.wait(lambda a: isinstance(a, SaDown), 10)
            assert gone.resync and gone.detail == "charon restarted"
            assert watcher.stats.reconnects >= 1 and watcher.stats.charon_restarts == 1
            assert watcher.stats.registered == registered
            # the client re-establishes (its own DPD, then a fresh initiate)
            await c1.request("terminate", {"ike": "home", "force": "yes", "timeout": -1})
            await asyncio.sleep(0.3)
            await c1.request("initiate", {"ike": "home", "child": "net", "timeout": 5000})
            await rec.wait(lambda a: isinstance(a, SaUp) and a.sa.uniqueid == "1"
                           and not a.resync and a is not rec.of(SaUp)[0], 10)
            await watcher.idle()
            ups, downs = len(rec.of(SaUp)), len(rec.of(SaDown))
            assert (ups, downs) == (2, 1), rec.actions
            assert watcher.table.peer_count() == 1 and len(watcher.live()) == 1
        finally:
            await stop(task)
            for s in (g, c1):
                await s.close()

    run(main())


async def setup_gateway_config(lab: PskLab) -> ViciSession:
    s = await ViciSession.connect(lab.gw.uri)
    await s.request("load-shared", {"type": "IKE", "data": PSK, "owners": []})
    await s.request("load-pool", {"rw": {"addrs": "10.8.0.0/24"}})
    await s.request("load-conn", gw_conn())
    return s


@needs_lab
def test_flood_of_200_downs(lab_factory: Any) -> None:
    """200 SAs from one client charon; kill -9 it: the gateway's DPD drops all 200 at
    once and the watcher handles every one."""
    # 200 half-open SAs from one address would trip charon's DoS protection
    lab = lab_factory(clients=1, gw_conf="block_threshold = 1000\n  cookie_threshold = 1000")
    count = 200

    async def main() -> None:
        g = await setup_gateway(lab)
        conns = {f"home{i}": client_conn(f"home{i}", f"c{i}.lab")[f"home{i}"]
                 for i in range(count)}
        c1 = await setup_client(lab.clients[0], conns)
        watcher = EventWatcher(lab.gw.uri)
        rec = Recorder(watcher)
        task = await started(watcher)
        try:
            for i, name in enumerate(conns):
                await c1.request("initiate", {"ike": name, "child": "net", "timeout": -1})
                if i % 20 == 19:  # in batches: keep the half-open count sane
                    await watcher.idle()
                    await asyncio.sleep(0.3)
            deadline = time.monotonic() + 60
            while len(watcher.live()) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(watcher.live()) == count
            lab.clients[0].kill()
            deadline = time.monotonic() + DPD_TIMEOUT + 30
            while sum(watcher.stats.downs.values()) < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await watcher.idle()
            downs = rec.of(SaDown)
            print(f"flood: {len(downs)} downs, reasons {dict(watcher.stats.downs)}, "
                  f"queue high water {watcher.stats.queue_high_water}")
            assert len(downs) == count
            assert len({d.sa.uniqueid for d in downs}) == count
            assert watcher.stats.downs["dpd"] == count
            assert watcher.live() == () and watcher.table.peer_count() == 0
            assert watcher.stats.dropped == 0
        finally:
            await stop(task)
            for s in (g, c1):
                await s.close()

    run(main(), timeout=180)


# --- client: keepalive --------------------------------------------------------------


class ClientSwand:
    """What `swand run` does on a client with `[keepalive] conns = [...]`."""

    def __init__(self, host: Host, conns: list[str], **kw: Any) -> None:
        self.charon = Charon(host.uri, backoff_min=0.1, backoff_max=1.0)
        self.watcher = self.charon.events
        self.rec = Recorder(self.watcher)
        self.keepalive = Keepalive(host.uri, conns, self.watcher,
                                   netlink=NetlinkWatcher(host.ns),
                                   session=self.charon.commands, **kw)
        wire(self.charon, keepalive=self.keepalive)  # as `swand run` does
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> ClientSwand:
        self.tasks.append(await started(self.watcher))
        self.tasks.append(asyncio.create_task(self.keepalive.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop(*self.tasks)
        await self.charon.close()

    def up_sas(self, conn: str) -> list[Any]:
        return self.watcher.table.live_for_conn(conn)

    async def wait_up(self, conn: str, timeout: float, new_than: str | None = None,
                      local: str | None = None) -> float:
        """Seconds until `conn` has a live SA (newer than unique id `new_than`)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            for sa in self.up_sas(conn):
                if new_than is not None and int(sa.uniqueid) <= int(new_than):
                    continue
                if local is not None and sa.local_host != local:
                    continue
                return time.monotonic() - start
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{conn} not back within {timeout} s: {self.up_sas(conn)}")


async def charon_sas(session: ViciSession, conn: str) -> list[dict[str, Any]]:
    events, _ = await session.streamed("list-sas", "list-sa", {"ike": conn, "noblock": True})
    return [body for e in events for name, body in e.items() if name == conn]


#: a client charon that does not react to address changes itself (no roam events), so
#: only swand's netlink watcher can notice that the SA's address is gone
DEAF_TO_ROAMING = "plugins { kernel-netlink { roam_events = no } }"


@needs_lab
@pytest.mark.parametrize("client_conf", ["", DEAF_TO_ROAMING], ids=["charon-roams",
                                                                   "charon-deaf"])
def test_keepalive_brings_the_tunnel_back(lab_factory: Any, client_conf: str) -> None:
    """Without charon's own restart options: initiated at start; back within 3 s after
    the gateway terminates it; back within 3 s after the uplink address changes (MOBIKE
    off; charon re-establishes by itself when it gets roam events, swand when it does
    not); an administrator's terminate is respected."""
    lab = lab_factory(clients=1, client_conf=client_conf)
    client = lab.clients[0]

    async def main() -> None:
        g = await setup_gateway(lab)
        c = await setup_client(client, client_conn("home", "c1.lab", mobike=False))
        try:
            async with ClientSwand(client, ["home"]) as swand:
                await swand.wait_up("home", 10)  # initiated at start
                first = swand.up_sas("home")[0].uniqueid

                await g.request("terminate", {"ike": "rw", "timeout": 3000})
                took = await swand.wait_up("home", 3.0, new_than=first)
                print(f"keepalive: back {took:.2f} s after the gateway's terminate")
                second = swand.up_sas("home")[0].uniqueid

                client.ip("addr", "del", f"{client.addr}/24", "dev", "up0")
                client.ip("addr", "add", "198.51.100.30/24", "dev", "up0")
                took = await swand.wait_up("home", 3.0, new_than=second,
                                           local="198.51.100.30")
                print(f"keepalive: back {took:.2f} s after the address change")
                assert len(await charon_sas(c, "home")) == 1

                await c.request("terminate", {"ike": "home", "timeout": 3000})
                await asyncio.sleep(3.0)
                assert swand.up_sas("home") == [] and "home" in swand.keepalive.held
                assert await charon_sas(c, "home") == []
                swand.keepalive.resume("home")
                await swand.wait_up("home", 5)
        finally:
            for s in (g, c):
                await s.close()

    run(main())


@needs_lab
def test_keepalive_and_charons_own_restart_do_not_fight(lab_factory: Any) -> None:
    """With `close_action = start`, `dpd_action = restart`, `keyingtries = 0` charon
    re-initiates by itself; swand sees it doing so and does not add a second SA."""
    lab = lab_factory(clients=1)
    client = lab.clients[0]

    async def main() -> None:
        g = await setup_gateway(lab)
        conn = client_conn("home", "c1.lab", keyingtries=0)
        conn["home"]["children"]["net"].update(
            dpd_action="restart", start_action="start", close_action="start")
        c = await setup_client(client, conn)
        try:
            async with ClientSwand(client, ["home"]) as swand:
                await swand.wait_up("home", 10)
                first = swand.up_sas("home")[0].uniqueid
                before = swand.keepalive.initiations["home"]
                await g.request("terminate", {"ike": "rw", "timeout": 3000})
                took = await swand.wait_up("home", 3.0, new_than=first)
                await asyncio.sleep(2.0)
                print(f"charon's close_action: back in {took:.2f} s; swand initiated "
                      f"{swand.keepalive.initiations['home'] - before} times")
                assert len(await charon_sas(c, "home")) == 1
                assert swand.keepalive.initiations["home"] == before
        finally:
            for s in (g, c):
                await s.close()

    run(main())


@needs_lab
def test_keepalive_survives_a_gateway_outage(lab_factory: Any) -> None:
    """The gateway's charon is stopped for 20 s and restarted: the client retries with
    backoff (1, 2, 4, 8, 16 s ± 20 %) and is back by the next step after the restart."""
    lab = lab_factory(clients=1)
    client = lab.clients[0]

    async def main() -> None:
        g = await setup_gateway(lab)
        c = await setup_client(client, client_conn("home", "c1.lab"))
        try:
            async with ClientSwand(client, ["home"]) as swand:
                await swand.wait_up("home", 10)
                first = swand.up_sas("home")[0].uniqueid
                await g.close()
                lab.gw.kill()
                await asyncio.sleep(20)
                lab.gw.start()
                g = await setup_gateway_config(lab)
                restarted = time.monotonic()
                next_retry = swand.keepalive.next_retry["home"]
                last = swand.keepalive.last_delay["home"]
                assert last > 0, "keepalive should be backing off"
                if next_retry is not None:  # waiting: the next step is due then
                    budget = next_retry - restarted
                else:  # an attempt is under way; if it fails, one more (doubled) step
                    budget = 4.0 + min(2 * last, 60) * 1.2
                failures = swand.keepalive.failures["home"]
                took = await swand.wait_up("home", budget + 5.0, new_than=first)
                print(f"outage: back {took:.2f} s after the restart (backoff step "
                      f"{last:.2f} s, budget {budget:.2f} s + 5 s for the initiate; "
                      f"{failures} failed attempts during the outage)")
        finally:
            for s in (g, c):
                await s.close()

    run(main())


# --- memory: a synthetic feed ---------------------------------------------------------

DATA = Path(__file__).parent.parent / "unit" / "data" / "events"

WATCHER_PROCESS = """
import asyncio, sys
from swand.log import configure_logging
from swand.runtime.events import EventWatcher
configure_logging("json", "warning")
async def main():
    w = EventWatcher(sys.argv[1])
    task = asyncio.create_task(w.run())
    while True:
        await asyncio.sleep(0.1)
        rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
        print(w.stats.ups, sum(w.stats.downs.values()), len(w.live()), rss, flush=True)
asyncio.run(main())
"""


def frame(packet: bytes) -> bytes:
    return len(packet).to_bytes(4, "big") + packet


def vici_event(name: str, payload: dict[str, Any]) -> bytes:
    return frame(bytes([Packet.EVENT, len(name)]) + name.encode() + Message.serialize(payload))


def cycle_payloads() -> list[tuple[str, dict[str, Any]]]:
    """One recorded up + delete (gateway view), to be replayed with fresh unique ids."""
    up = json.loads((DATA / "up-gateway.json").read_text())["events"]
    down = json.loads((DATA / "delete-by-client-gateway.json").read_text())["events"]
    return [(n, p) for n, p in up + down if n in ("ike-updown", "child-updown")]


def with_uid(payload: dict[str, Any], uid: int) -> dict[str, Any]:
    out = json.loads(json.dumps(payload))
    for body in out.values():
        if isinstance(body, dict):
            body["uniqueid"] = str(uid)
            body["remote-id"] = f"c{uid % 100}.lab"
            body["remote-vips"] = [f"10.8.{uid % 100 // 250}.{uid % 250 + 1}"]
            for child in body.get("child-sas", {}).values():
                child["uniqueid"] = str(uid)
    return out


class FakeCharon:
    """Answers registrations, `stats` and `list-sas`; streams what `feed()` is given."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.event_writers: list[asyncio.StreamWriter] = []

    async def serve(self) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(self._client, self.path)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                packet = await reader.readexactly(length)
                kind, name = packet[0], packet[2:2 + packet[1]].decode()
                if kind == Packet.EVENT_REGISTER:
                    if name == "ike-updown":
                        self.event_writers.append(writer)
                    known = name != "alert"
                    writer.write(frame(bytes([Packet.EVENT_CONFIRM if known
                                              else Packet.EVENT_UNKNOWN])))
                elif kind == Packet.EVENT_UNREGISTER:
                    writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
                elif name == "stats":
                    body = {"uptime": {"running": "1", "since": "fake"}}
                    writer.write(frame(bytes([Packet.CMD_RESPONSE]) + Message.serialize(body)))
                else:
                    writer.write(frame(bytes([Packet.CMD_RESPONSE])))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def feed(self, data: bytes) -> None:
        for writer in self.event_writers:
            writer.write(data)
            await writer.drain()


def test_watcher_memory_is_flat_over_10000_cycles(tmp_path: Path) -> None:
    """The daemon's EventWatcher, in its own process, fed 10,000 up/down cycles (recorded
    payloads with fresh unique ids, over a real unix socket by a fake charon): its RSS
    after 10,000 cycles is within 10 % of its RSS after 1,000."""
    socket_path = str(tmp_path / "fake.vici")
    template = cycle_payloads()

    async def main() -> None:
        fake = FakeCharon(socket_path)
        server = await fake.serve()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WATCHER_PROCESS, f"unix://{socket_path}",
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None

        async def counters() -> tuple[int, int, int, int]:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            ups, downs, live, rss = (int(x) for x in line.split())
            return ups, downs, live, rss

        async def run_cycles(start: int, n: int) -> int:
            for uid in range(start, start + n):
                await fake.feed(b"".join(vici_event(name, with_uid(p, uid))
                                         for name, p in template))
            while True:
                ups, downs, live, rss = await counters()
                if downs >= start + n - 1:
                    assert ups == downs and live == 0
                    return rss

        try:
            while not fake.event_writers:
                await counters()
            rss_1k = await run_cycles(1, 1000)
            started_at = time.monotonic()
            rss_10k = await run_cycles(1001, 9000)
            took = time.monotonic() - started_at
            print(f"watcher RSS: {rss_1k} KiB after 1,000 cycles, {rss_10k} KiB after 10,000"
                  f" ({(rss_10k - rss_1k) / rss_1k:+.1%}); 9,000 cycles ({9000 * 4} events)"
                  f" in {took:.1f} s (incl. the fake charon's encoding)")
            assert rss_10k <= rss_1k * 1.10
        finally:
            proc.kill()
            await proc.wait()
            server.close()

    run(main(), timeout=300)


# --- recording the unit tests' payloads ---------------------------------------------


class StreamRecorder:
    """Keeps every SA event of one charon (log lines only when they are about retransmits:
    nothing else is needed, and nothing secret is ever in them at level <= 1 anyway)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.buf: list[list[Any]] = []

    async def start(self) -> None:
        self.stream = await ViciEventStream.connect(self.uri)
        await self.stream.register(EVENTS)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                name, payload = await self.stream.next_event()
                msg = payload.get("msg", "")
                if name == "log" and "giving up" not in msg and "retransmit" not in msg:
                    continue
                self.buf.append([name, payload])

    def take(self) -> list[list[Any]]:
        out, self.buf = self.buf, []
        return out

    async def stop(self) -> None:
        self.task.cancel()
        await self.stream.close()


@needs_lab
@pytest.mark.skipif(not os.environ.get("SWAND_RECORD_EVENTS"),
                    reason="set SWAND_RECORD_EVENTS=DIR to re-record the payloads")
def test_record_event_payloads(lab_factory: Any) -> None:
    out = Path(os.environ["SWAND_RECORD_EVENTS"])
    out.mkdir(parents=True, exist_ok=True)
    lab = lab_factory(clients=2)

    def save(name: str, perspective: str, events: list[list[Any]], note: str) -> None:
        text = json.dumps({"scenario": name, "perspective": perspective, "charon": "5.9.8",
                           "note": note, "events": events}, indent=1) + "\n"
        assert PSK not in text
        (out / f"{name}.json").write_text(text)

    async def main() -> None:
        c2conf = lab.clients[1].dir / "strongswan.conf"
        c2conf.write_text(c2conf.read_text().replace(
            "charon {", "charon {\n  make_before_break = yes", 1))
        g = await setup_gateway(lab)
        s1 = await setup_client(lab.clients[0], client_conn("home", "c1.lab"))
        s2 = await setup_client(lab.clients[1], client_conn("home", "c2.lab"))
        rg, r1 = StreamRecorder(lab.gw.uri), StreamRecorder(lab.clients[0].uri)
        await rg.start()
        await r1.start()
        init = {"child": "net", "ike": "home", "timeout": 5000}
        try:
            await s1.request("initiate", init)
            await asyncio.sleep(0.3)
            save("up-gateway", "gateway", rg.take(), "client c1 initiates; gateway view")
            save("up-client", "client", r1.take(), "client c1 initiates; client view")
            await s1.request("rekey", {"ike": "home"})
            await asyncio.sleep(0.5)
            save("ike-rekey-gateway", "gateway", rg.take(),
                 "client rekeys its IKE SA: new unique id, no down for the old")
            await s1.request("rekey", {"child": "net"})
            await asyncio.sleep(0.5)
            save("child-rekey-gateway", "gateway", rg.take(), "client rekeys its CHILD SA")
            r1.take()
            await s1.request("terminate", {"ike": "home", "timeout": 3000})
            await asyncio.sleep(0.3)
            save("delete-by-client-gateway", "gateway", rg.take(),
                 "client terminates: gateway sees DELETING, passive IKE_DELETE")
            save("delete-by-client-client", "client", r1.take(),
                 "client's own terminate: DELETING, active IKE_DELETE")
            await s1.request("initiate", init)
            await asyncio.sleep(0.3)
            rg.take()
            r1.take()
            await g.request("terminate", {"ike": "rw", "timeout": 3000})
            await asyncio.sleep(0.3)
            save("delete-by-gateway-gateway", "gateway", rg.take(),
                 "gateway terminates: its own view, active IKE_DELETE")
            save("delete-by-gateway-client", "client", r1.take(),
                 "gateway terminates: client sees DELETING, passive IKE_DELETE")
            await s1.request("initiate", init)
            await asyncio.sleep(0.3)
            rg.take()
            r1.take()
            c1 = lab.clients[0]
            c1.ip("addr", "del", f"{c1.addr}/24", "dev", "up0")
            c1.ip("addr", "add", "198.51.100.20/24", "dev", "up0")
            await asyncio.sleep(3)
            save("mobike-update-gateway", "gateway", rg.take(),
                 "client's address changes 198.51.100.10 -> .20; MOBIKE")
            save("mobike-update-client", "client", r1.take(),
                 "client's address changes 198.51.100.10 -> .20; MOBIKE")
            await s2.request("initiate", init)
            await asyncio.sleep(0.3)
            rg.take()
            await s2.request("rekey", {"ike": "home", "reauth": True})
            await asyncio.sleep(1.5)
            save("reauth-mbb-gateway", "gateway", rg.take(), "client c2 reauthenticates "
                 "make-before-break: new SA up before old down, same virtual IP")
            await s2.request("terminate", {"ike": "home", "timeout": 3000})
            await asyncio.sleep(0.3)
            rg.take()
            await s2.request("clear-creds")
            await s2.request("load-shared", {"type": "IKE", "data": "wrong-psk-lab",
                                             "owners": []})
            r2 = StreamRecorder(lab.clients[1].uri)
            await r2.start()
            await s2.request("initiate", init, check=False)
            await asyncio.sleep(0.5)
            save("auth-failed-gateway", "gateway", rg.take(),
                 "client with a wrong PSK: never established")
            save("auth-failed-client", "client", r2.take(),
                 "client with a wrong PSK: never established")
            await r2.stop()
            c1.kill()
            await asyncio.sleep(DPD_TIMEOUT + 3)
            save("dpd-gateway", "gateway", rg.take(),
                 "client's charon killed -9: gateway's DPD gives up")
        finally:
            await rg.stop()
            await r1.stop()
            for s in (g, s1, s2):
                await s.close()

    run(main())


@needs_lab
def test_power_loss_and_return_from_a_new_address(lab_factory: Any) -> None:
    """The home server's charon is killed and comes back from a new address before the
    gateway's DPD fires: INITIAL_CONTACT makes the gateway replace the stale SA at once;
    the client gets 10.8.0.1 again, the peer is never counted twice nor down, and no DPD
    is counted."""
    lab = lab_factory(clients=1)
    client = lab.clients[0]

    async def main() -> None:
        g = await setup_gateway(lab)
        c = await setup_client(client, client_conn("home", "c1.lab"))
        watcher = EventWatcher(lab.gw.uri)
        rec = Recorder(watcher)
        peers_seen: list[int] = []
        watcher.add_callback(lambda a: peers_seen.append(watcher.table.peer_count()))
        task = await started(watcher)
        # charon's own replacement line, raw: which IKE_SA does its log event name?
        logs = await ViciEventStream.connect(lab.gw.uri)
        await logs.register(["log"])
        replaced_lines: list[dict[str, Any]] = []

        async def collect() -> None:
            while True:
                _, payload = await logs.next_event()
                if "duplicate IKE_SA" in str(payload.get("msg", "")):
                    replaced_lines.append(payload)

        collector = asyncio.create_task(collect())
        try:
            await c.request("initiate", {"ike": "home", "child": "net", "timeout": 5000})
            _, first = await rec.wait(lambda a: isinstance(a, SaUp), 5)
            assert first.sa.vips == ("10.8.0.1",)
            await c.close()
            client.kill()
            client.ip("addr", "del", f"{client.addr}/24", "dev", "up0")
            client.ip("addr", "add", "198.51.100.40/24", "dev", "up0")
            started_at = time.monotonic()
            c = await setup_client(client, client_conn("home", "c1.lab"))
            await c.request("initiate", {"ike": "home", "child": "net", "timeout": 5000})
            _, again = await rec.wait(
                lambda a: isinstance(a, SaUp) and a.sa.remote_host == "198.51.100.40", 5)
            took = time.monotonic() - started_at
            _, old_down = await rec.wait(
                lambda a: isinstance(a, SaDown) and a.sa.uniqueid == first.sa.uniqueid, 5)
            await watcher.idle()
            print(f"initial contact: back with {again.sa.vips} {took:.2f} s after the "
                  f"restart (DPD would take {DPD_TIMEOUT:.1f} s); old SA: "
                  f"{old_down.reason.value} ({old_down.detail})")
            assert again.sa.vips == ("10.8.0.1",)
            assert old_down.reason.value == "rekeyed" and not old_down.peer_gone
            assert watcher.stats.downs["dpd"] == 0
            assert max(peers_seen) == 1 and watcher.table.peer_count() == 1
            assert [sa.uniqueid for sa in watcher.live()] == [again.sa.uniqueid]
            # the line names the *replaced* SA (check_uniqueness checks it out to log):
            # swand attributes it by that id, never by the peer's ID text inside it
            assert [(p.get("ikesa-uniqueid"), p["msg"].split(",")[-1].strip())
                    for p in replaced_lines] == [(first.sa.uniqueid, "received INITIAL_CONTACT")]
        finally:
            collector.cancel()
            await logs.close()
            await stop(task)
            for s in (g, c):
                await s.close()

    run(main())


def test_overflow_drops_then_resynchronises(tmp_path: Path) -> None:
    """A consumer slower than charon: past `queue_limit` the reader drops (it never
    blocks), and the watcher resynchronises from list-sas instead of acting on a partial
    history. The fake charon reports no SA, so every SA seen up ends up down once."""
    socket_path = str(tmp_path / "fake.vici")
    template = cycle_payloads()

    async def main() -> None:
        fake = FakeCharon(socket_path)
        server = await fake.serve()

        async def slow(_action: Any) -> None:
            await asyncio.sleep(0.002)

        watcher = EventWatcher(f"unix://{socket_path}", on_action=slow, queue_limit=50)
        task = await started(watcher)
        try:
            def ups(first: int, last: int) -> bytes:
                return b"".join(vici_event(n, with_uid(p, uid))
                                for uid in range(first, last) for n, p in template[:2])

            for first in range(1, 41, 10):  # 40 SAs up, at a pace the consumer follows
                await fake.feed(ups(first, first + 10))
                async with asyncio.timeout(10):
                    while watcher.stats.ups < first + 9:
                        await asyncio.sleep(0.01)
            assert watcher.stats.ups == 40 and watcher.stats.dropped == 0
            await fake.feed(ups(41, 301))  # then a burst: 260 more SAs
            # the fake charon's list-sas says none of them exist
            deadline = time.monotonic() + 20
            while watcher.stats.resyncs < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await watcher.idle()
            stats = watcher.stats
            print(f"overflow: dropped {stats.dropped}, high water {stats.queue_high_water},"
                  f" ups {stats.ups}, downs {dict(stats.downs)}, resyncs {stats.resyncs}")
            assert stats.dropped > 0 and stats.resyncs >= 2
            assert stats.queue_high_water <= 51
            assert stats.ups >= 40 and stats.ups == sum(stats.downs.values())
            assert stats.downs["unknown"] == stats.ups and watcher.live() == ()
        finally:
            await stop(task)
            server.close()

    run(main())


@needs_lab
def test_netlink_watcher_reports_only_what_changes_the_way_out() -> None:
    ns = "swevnl-" + uuid.uuid4().hex[:6]

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True)

    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip("link", "set", "lo", "up")
        ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
        ip("link", "set", "up0", "up")

        async def main() -> list[Any]:
            watcher = NetlinkWatcher(ns)
            seen: list[Any] = []  # the part keepalive acts on, of every state published
            watcher.add_callback(lambda state: seen.append(state.way_out))
            task = asyncio.create_task(watcher.run())
            await asyncio.wait_for(watcher.ready.wait(), 5)
            for step in (("addr", "add", "192.0.2.5/24", "dev", "up0"),
                         ("route", "add", "default", "via", "192.0.2.1"),
                         ("route", "add", "10.0.0.0/8", "via", "192.0.2.1",
                          "table", "220"),  # charon's
                         ("route", "add", "10.1.0.0/16", "via", "192.0.2.1")):  # not default
                ip(*step)
                await asyncio.sleep(0.5)
            assert watcher.state is not None
            assert watcher.state.global_addresses == {"192.0.2.5"}
            ip("addr", "del", "192.0.2.5/24", "dev", "up0")
            await asyncio.sleep(0.5)
            await stop(task)
            return seen

        seen = run(main())
        # the kernel drops the default route with the address's subnet, without an event
        assert seen == [
            (frozenset(), frozenset()),
            ({"192.0.2.5"}, frozenset()),
            ({"192.0.2.5"}, {("up0", "192.0.2.1")}),
            (frozenset(), frozenset())]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@needs_lab
def test_keepalive_after_the_clients_own_charon_restarts(lab_factory: Any) -> None:
    """The client's charon crashes and is restarted (its connection loaded again a
    second later, as swand's loader does): swand's watcher reconnects and resyncs, the
    lost SA is reported, and keepalive tries at once, then 1 s, 2 s... (a fresh backoff)
    until the connection is loaded."""
    lab = lab_factory(clients=1)
    client = lab.clients[0]

    async def main() -> None:
        g = await setup_gateway(lab)
        c = await setup_client(client, client_conn("home", "c1.lab"))
        try:
            async with ClientSwand(client, ["home"]) as swand:
                await swand.wait_up("home", 10)
                await c.close()
                client.kill()
                await asyncio.sleep(5)
                restarted = time.monotonic()
                client.start()
                await asyncio.sleep(1.0)
                c = await setup_client_config(client, client_conn("home", "c1.lab"))
                await swand.wait_up("home", 5)
                took = time.monotonic() - restarted
                print(f"client charon restart: back {took:.2f} s after the restart "
                      f"({swand.keepalive.initiations['home']} initiations in all)")
                assert took <= 4.0
                assert swand.watcher.stats.charon_restarts == 1
        finally:
            for s in (g, c):
                await s.close()

    run(main())


async def setup_client_config(host: Host, conns: dict[str, Any]) -> ViciSession:
    s = await ViciSession.connect(host.uri)
    await s.request("load-shared", {"type": "IKE", "data": PSK, "owners": []})
    for name, body in conns.items():
        await s.request("load-conn", {name: body})
    return s


# --- the shared lab: certificates, a router, charon 5.9 and 6.0 --------------------------


@pytest.mark.lab
def test_classification_in_the_shared_lab(rw_lab: Any) -> None:
    """The same classification with the shared lab's certificate set-up, on each charon
    version it has: kill -9 of a client is `dpd` within the DPD timeout + 1 s; a client's
    terminate is `deleted`. Registration is probed (`alert` only where charon has it)."""
    lab = rw_lab
    c1, c2 = lab.clients[0], lab.clients[1]

    async def main() -> None:
        watcher = EventWatcher(lab.gateway.vici_uri)
        rec = Recorder(watcher)
        task = await started(watcher)
        try:
            print(f"charon {lab.charon_version}: registered {sorted(watcher.stats.registered)}")
            await asyncio.to_thread(lab.connect, c1)
            await asyncio.to_thread(lab.connect, c2)
            await rec.wait(lambda a: isinstance(a, SaUp) and len(watcher.live()) == 2, 10)
            killed_at = time.monotonic()
            await asyncio.to_thread(c1.kill9)
            at, down = await rec.wait(
                lambda a: isinstance(a, SaDown) and a.sa.remote_host == c1.address,
                DPD_TIMEOUT + 3)
            print(f"charon {lab.charon_version}: dpd after {at - killed_at:.2f} s "
                  f"({down.detail})")
            assert down.reason.value == "dpd" and down.confirmed
            assert at - killed_at <= DPD_TIMEOUT + 1.0
            await asyncio.to_thread(c2.swanctl, "--terminate", "--ike", "rw")
            _, down2 = await rec.wait(
                lambda a: isinstance(a, SaDown) and a.sa.remote_host == c2.address, 10)
            assert down2.reason.value == "deleted"
            assert watcher.live() == () and watcher.stats.downs["dpd"] == 1
        finally:
            await stop(task)

    run(main())
