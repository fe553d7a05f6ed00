"""The asyncio VICI client against a real charon-systemd 5.9.8 in a throw-away namespace.

Self-contained on purpose (one charon, no peers, no certificates): it tests the client,
not the lab. Everything it creates — namespace, process, temp dir — is removed even when
a test fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swand.adapters.vici import (
    ViciCommandError,
    ViciConnectionError,
    ViciEventStream,
    ViciSession,
)

CHARON = "/usr/sbin/charon-systemd"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path(CHARON).exists(), reason="needs charon-systemd"),
]

STRONGSWAN_CONF = """\
charon-systemd {{
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey revocation constraints \
kernel-netlink socket-default vici
  plugins {{ vici {{ socket = unix://{dir}/charon.vici }} }}
  journal {{ default = -1 }}
  filelog {{ main {{ path = {dir}/charon.log
    default = 1
    flush_line = yes }} }}
  install_routes = no
  retransmit_tries = 3
  retransmit_timeout = 1.0
  retransmit_base = 1.2
}}
"""


class MiniCharon:
    """One charon-systemd in its own namespace with an uplink on TEST-NET-1."""

    def __init__(self) -> None:
        self.ns = f"swvici-{uuid.uuid4().hex[:8]}"
        self.dir = Path(tempfile.mkdtemp(prefix="swand-vici-"))
        self.socket = self.dir / "charon.vici"
        self.uri = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.ns, *args], check=True)

    def setup(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.ip("link", "set", "lo", "up")
        # no dummy module here: a veth pair with both ends inside the namespace
        self.ip("link", "add", "up0", "type", "veth", "peer", "name", "up1")
        self.ip("addr", "add", "192.0.2.1/24", "dev", "up0")
        self.ip("link", "set", "up0", "up")
        self.ip("link", "set", "up1", "up")
        (self.dir / "strongswan.conf").write_text(STRONGSWAN_CONF.format(dir=self.dir))
        self.start()

    def start(self) -> None:
        env = dict(os.environ, STRONGSWAN_CONF=str(self.dir / "strongswan.conf"))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, CHARON],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"charon did not start: {self.log()[-2000:]}")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        # a killed charon leaves its socket file behind
        self.socket.unlink(missing_ok=True)

    def log(self) -> str:
        path = self.dir / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def teardown(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
        finally:
            subprocess.run(["ip", "netns", "del", self.ns], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def charon() -> Iterator[MiniCharon]:
    c = MiniCharon()
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
            assert version["version"].startswith("5.")
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
        assert "alert" not in accepted  # 6.0.3+ only; 5.9.8 answers EVENT_UNKNOWN
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
