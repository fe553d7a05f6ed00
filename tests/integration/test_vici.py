"""The asyncio VICI client against a real charon-systemd (5.9.8, and Debian trixie's 6.0.1
chrooted, per `SWAND_LAB_VERSIONS`) in a throw-away namespace.

Self-contained on purpose (one charon, no peers, no certificates): it tests the client,
not the lab; only the lab's `Charon` (process, strongswan.conf, trixie chroot) is reused.
Everything it creates — namespace, process, folder — is removed even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swand.adapters.vici import (
    ViciCommandError,
    ViciConnectionError,
    ViciEventStream,
    ViciSession,
)
from swand.lab import Charon
from swand.lab import lab as lab_module

CHARON = "/usr/sbin/charon-systemd"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path(CHARON).exists(), reason="needs charon-systemd"),
]

#: only what a VICI client test needs (present in 5.9.8 and 6.0.1 alike)
PLUGINS = ("random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "pubkey",
           "revocation", "constraints", "kernel-netlink", "socket-default", "vici")
EXTRA_CONF = "    install_routes = no\n    retransmit_tries = 3\n"


class MiniCharon:
    """One charon-systemd of `version` in its own namespace with an uplink on TEST-NET-1.

    Its folder is below the lab root (a chrooted 6.0 charon sees only that) and carries an
    `owner` file, so a concurrent lab's `sweep_stale()` takes it for a live lab."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.ns = f"swvici-{uuid.uuid4().hex[:8]}"
        self.dir = lab_module.LAB_ROOT / self.ns
        self.socket = self.dir / "charon.vici"
        self.uri = f"unix://{self.socket}"
        self.charon: Charon | None = None

    def ip(self, *args: str) -> None:
        subprocess_run(["ip", "-n", self.ns, *args])

    def setup(self) -> None:
        self.dir.mkdir(parents=True)
        pid = os.getpid()
        (self.dir / "owner").write_text(f"{pid} {lab_module._start_time(pid)}\n")
        subprocess_run(["ip", "netns", "add", self.ns])
        self.ip("link", "set", "lo", "up")
        # no dummy module here: a veth pair with both ends inside the namespace
        self.ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
        self.ip("addr", "add", "192.0.2.1/24", "dev", "up0")
        self.ip("link", "set", "up0", "up")
        self.ip("link", "set", "up1", "up")
        self.charon = Charon(self.ns, self.dir, self.version, plugins=PLUGINS,
                             extra_conf=EXTRA_CONF)
        self.start()

    def start(self) -> None:
        assert self.charon is not None
        self.charon.start(timeout=15)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.charon is not None:
            if sig == signal.SIGKILL:
                self.charon.kill9()
            else:
                self.charon.stop()
        # a killed charon leaves its socket file behind
        self.socket.unlink(missing_ok=True)

    def log(self) -> str:
        return self.charon.tail(40) if self.charon else ""

    def teardown(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        finally:
            subprocess_run(["ip", "netns", "del", self.ns], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)


def subprocess_run(argv: list[str], check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


@pytest.fixture
def charon(charon_version: str) -> Iterator[MiniCharon]:
    c = MiniCharon(charon_version)
    try:
        c.setup()
        yield c
    finally:
        c.teardown()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


#: a PSK connection to a peer that never answers: initiating it blocks for as long as asked
SILENT_PEER = {
    "silent": {
        "version": 2,
        "local_addrs": ["192.0.2.1"],
        "remote_addrs": ["192.0.2.99"],
        "local": {"auth": "psk"},
        "remote": {"auth": "psk"},
        "children": {"c": {"remote_ts": ["10.99.0.0/24"]}},
    }
}


def test_version_get_conns_list_sas(charon: MiniCharon) -> None:
    async def main() -> None:
        s = await ViciSession.connect(charon.uri)
        try:
            version = await s.request("version")
            assert version["daemon"] == "charon-systemd"
            assert version["version"].startswith(charon.version + ".")
            assert await s.request("load-conn", SILENT_PEER) == {"success": "yes"}
            events, reply = await s.streamed("list-conns", "list-conn")
            assert [next(iter(e)) for e in events] == ["silent"]
            assert events[0]["silent"]["remote_addrs"] == ["192.0.2.99"]
            assert reply == {}
            sas, reply = await s.streamed("list-sas", "list-sa", {"noblock": True})
            assert sas == [] and reply == {}
            raw = await s.request("get-conns", decode=False)
            assert raw == {"conns": [b"silent"]}
        finally:
            await s.close()

    run(main())


def test_load_conn_error_is_a_command_error(charon: MiniCharon) -> None:
    async def main() -> None:
        async with await ViciSession.connect(charon.uri) as s:
            bad = {"broken": {"proposals": ["no-such-algorithm"], "remote_addrs": ["%any"]}}
            with pytest.raises(ViciCommandError) as err:
                await s.request("load-conn", bad)
            assert err.value.command == "load-conn"
            assert "broken" in err.value.errmsg or "proposal" in err.value.errmsg
            with pytest.raises(ViciCommandError, match="unknown command"):
                await s.request("no-such-command")
            assert (await s.request("version"))["daemon"] == "charon-systemd"

    run(main())


def test_missing_socket_fails_fast(charon: MiniCharon) -> None:
    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(ViciConnectionError, match=r"nothing-here\.vici"):
            await ViciSession.connect(f"unix://{charon.dir}/nothing-here.vici")
        assert time.monotonic() - start < 1.0

    run(main())


def test_charon_killed_mid_session(charon: MiniCharon) -> None:
    async def main() -> None:
        s = await ViciSession.connect(charon.uri)
        events = await ViciEventStream.connect(charon.uri)
        assert await events.register(["log"]) == {"log"}
        assert await s.request("version")
        charon.kill()
        with pytest.raises(ViciConnectionError, match=re.escape(str(charon.socket))):
            await s.request("version", timeout=5)
        with pytest.raises(ViciConnectionError):
            await asyncio.wait_for(events.next_event(), 5)
        # the next call tries to reconnect, and says so when the socket is gone
        with pytest.raises(ViciConnectionError, match="cannot connect"):
            await s.request("version")
        charon.start()
        assert (await s.request("version"))["daemon"] == "charon-systemd"
        assert s.generation == 2
        await s.close()
        await events.close()

    run(main())


def test_cancelled_or_timed_out_command_does_not_desync(charon: MiniCharon) -> None:
    async def main() -> None:
        s = await ViciSession.connect(charon.uri)
        await s.request("load-conn", SILENT_PEER)
        # initiate blocks (the peer never answers) until its own timeout of 3 s
        blocking = {"child": "c", "ike": "silent", "timeout": 3000}
        with pytest.raises(ViciConnectionError, match="no reply within"):
            await s.request("initiate", blocking, timeout=0.3)
        version = await s.request("version")
        assert version["daemon"] == "charon-systemd", version
        task = asyncio.create_task(s.request("initiate", blocking))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # had the connection been kept, this would read initiate's late failure reply
        assert (await s.request("get-conns"))["conns"] == ["silent"]
        assert s.generation == 3
        await s.close()

    run(main())


def test_event_registration_is_probed(charon: MiniCharon) -> None:
    async def main() -> None:
        stream = await ViciEventStream.connect(charon.uri)
        wanted = ["ike-updown", "child-updown", "ike-rekey", "child-rekey", "ike-update",
                  "alert", "log", "control-log"]
        accepted = await stream.register(wanted)
        # `alert` came with 6.0.3: 5.9.8 and Debian 13's 6.0.1 both answer EVENT_UNKNOWN
        assert "alert" not in accepted
        assert accepted == set(wanted) - {"alert"}
        s = await ViciSession.connect(charon.uri)
        await s.request("load-conn", SILENT_PEER)
        await s.request("initiate", {"ike": "silent", "child": "c", "timeout": -1})
        name, payload = await asyncio.wait_for(stream.next_event(), 5)
        assert name in accepted
        if name == "log":
            assert {"group", "level", "msg"} <= payload.keys()
        await s.close()
        await stream.close()

    run(main())


def test_idle_session_survives_a_charon_restart(charon: MiniCharon) -> None:
    """A connection charon closed while idle is replaced before the next command is sent
    (nothing was sent on it, so this is safe for any command)."""

    async def main() -> None:
        s = await ViciSession.connect(charon.uri)
        assert await s.request("version")
        charon.kill()
        charon.start()
        await asyncio.sleep(0.1)  # the loop sees charon's EOF
        assert (await s.request("version"))["daemon"] == "charon-systemd"
        assert s.generation == 2
        await s.close()

    run(main())


# --- what swand's parsers read, from the replies of each charon version ----------------

#: pools loaded beside the lab's pool4 (10.8.0.128/25): how each version reports them in
#: `get-pools` (charon 6.0 gives a CIDR pool's first leasable address as `base`, 5.9 its
#: network id) must come back as the same networks
EXTRA_POOLS = {
    "range4": ("10.9.0.10-10.9.0.20",
               ("10.9.0.10/31", "10.9.0.12/30", "10.9.0.16/30", "10.9.0.20/32")),
    "single4": ("10.9.1.5", ("10.9.1.5/32",)),
    "cidr6": ("fd00:8::/120", ("fd00:8::/120",)),
    # charon leases at most 2^31 - 2 addresses of a pool: a /64 is its first /97
    "big6": ("fd00:9::/64", ("fd00:9::/97",)),
}


def test_replies_parse_the_same_on_both_versions(rw_lab: Any) -> None:
    """`get-pools`, `list-sas`, `list-conns`, `stats`, `list-certs` as swand's adapter
    decodes them, through swand's pure parsers: the same meaning on 5.9 and 6.0 (before
    and after a CHILD_SA rekey)."""
    from swand.adapters.vici import decode_body
    from swand.core.charon import charon_start_time
    from swand.core.events import parse_list_sas
    from swand.core.firewall import Pool, child_sas_from_vici, pools_from_vici, resolve_mode
    from swand.core.list_sa import sas_from_list_sa
    from swand.core.metrics import parse_sas

    lab = rw_lab
    gw = lab.gateway
    vip = lab.connect(lab.client(1))

    async def main() -> dict[str, Any]:
        async with await ViciSession.connect(gw.vici_uri) as s:
            for name, (addrs, _) in EXTRA_POOLS.items():
                await s.request("load-pool", {name: {"addrs": addrs}})
            out: dict[str, Any] = {
                "version": await s.request("version"),
                "stats": await s.request("stats"),
                "pools": await s.request("get-pools", {"leases": "yes"}),
                # blocking, as the firewall reads it (`noblock` skips SAs in an exchange)
                "sas": (await s.streamed("list-sas", "list-sa"))[0],
                # undecoded, as the metrics poll reads them (swand.core.list_sa)
                "sas_raw": (await s.streamed("list-sas", "list-sa",
                                             parse_raw=lambda batch: batch))[0],
                "conns": (await s.streamed("list-conns", "list-conn"))[0],
                "certs": (await s.streamed("list-certs", "list-cert"))[0],
            }
            gw.swanctl("--rekey", "--child", "rw")

            async def rekeyed() -> list[Any]:
                while True:
                    sas = (await s.streamed("list-sas", "list-sa"))[0]
                    children = sas[0]["rw"].get("child-sas", {}) if sas else {}
                    if children.get("rw-2", {}).get("state") == "INSTALLED":
                        out["sas_rekeyed_raw"] = (await s.streamed(
                            "list-sas", "list-sa", parse_raw=lambda batch: batch))[0]
                        return sas
                    await asyncio.sleep(0.1)

            out["sas_rekeyed"] = await asyncio.wait_for(rekeyed(), 10)
            return out

    r = run(main())
    assert r["version"]["version"].startswith(lab.charon_version + ".")
    assert resolve_mode("auto", r["stats"]["plugins"]) == "interface"
    assert charon_start_time(r["stats"]) is not None

    pools = {p.name: p for p in pools_from_vici(r["pools"])}
    assert pools["pool4"] == Pool("pool4", ("10.8.0.128/25",))
    for name, (_, networks) in EXTRA_POOLS.items():
        assert pools[name].networks == networks, (name, r["pools"][name])
    lease = r["pools"]["pool4"]["leases"]["0"]
    assert lease == {"address": vip, "identity": "client1@lab.test", "status": "online"}

    def forward_inputs(sas: list[Any]) -> set[tuple[int, tuple[str, ...], tuple[str, ...]]]:
        return {(c.reqid, c.local_ts, c.remote_ts) for c in child_sas_from_vici(sas)}

    expected = {(1, ("0.0.0.0/0",), (f"{vip}/32",))}
    assert forward_inputs(r["sas"]) == expected
    assert forward_inputs(r["sas_rekeyed"]) == expected  # a rekey keeps the reqid

    (sa,) = parse_list_sas(r["sas"]).sas
    assert (sa.conn, sa.state, sa.remote_vips, sa.identity) == (
        "rw", "ESTABLISHED", (vip,), "client1@lab.test")
    assert sa.established is not None and [c.name for c in sa.children] == ["rw"]

    # the poll's path straight from charon's bytes: the SAs the general path reads
    for raw in (r["sas_raw"], r["sas_rekeyed_raw"]):
        assert raw
        for packet, offset in raw:
            fast = sas_from_list_sa(packet, offset)
            assert fast is not None
            assert tuple(fast) == parse_sas([decode_body(packet, offset, True, "lab")])

    (conn,) = r["conns"]
    assert set(conn["rw"]["children"]) == {"rw"}
    assert conn["rw"]["local-1"]["id"] == lab.gateway_id
    assert {c["type"] for c in r["certs"]} == {"X509"}
    assert any(c.get("has_privkey") == "yes" for c in r["certs"])
