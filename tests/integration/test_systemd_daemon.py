"""`swand run` on a lab gateway under systemd/swand.service's conditions (capabilities,
read-only root, sd_notify). Moved from tests/unit: it needs root, namespaces and charon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swand.commands.demo import install_gateway_config
from swand.lab import Lab
from swand.lab.daemon import swand_toml

ROOT = Path(__file__).resolve().parents[2]


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("charon-systemd") is None,
                                reason="needs root and charon-systemd")


def _notify_messages(sock: socket.socket, until: str, seen: list[dict[str, str]],
                     timeout: float = 20.0) -> dict[str, str]:
    """Read datagrams until one carries `until` (e.g. "READY"); return that one."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
        seen.append(msg)
        if until in msg:
            return msg


@pytest.mark.lab
@needs_root
def test_daemon_speaks_sd_notify_with_only_the_units_capabilities(tmp_path: Path) -> None:
    """`swand run` on a lab gateway the way the unit runs it: bounding set CAP_NET_ADMIN +
    CAP_NET_RAW, no new privileges, the root file system read-only except the xtables
    lock (ProtectSystem=strict), NOTIFY_SOCKET and WATCHDOG_USEC from "systemd" (this
    test's socket). READY=1 after the first load, watchdog pings, RELOADING=1 +
    MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1 on SIGTERM, exit 0."""

    notify_path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    seen: list[dict[str, str]] = []
    proc = None
    try:
        with Lab(clients=1, gateway_id="vpn.example.org") as lab:
            gw = lab.gateway
            install_gateway_config(ROOT / "etc", Path(gw.swanctl_dir))
            toml = Path(gw.workdir) / "swand.toml"
            toml.write_text(swand_toml(gw, firewall=True, interval=2.0))
            env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
            sandbox = (
                "touch /run/xtables.lock && "  # as the unit's ExecStartPre=+ does
                "mount -o remount,bind,ro / && "
                "mount --bind /run/xtables.lock /run/xtables.lock && "
                "exec setpriv --bounding-set=-all,+net_admin,+net_raw --inh-caps=-all "
                f"--no-new-privs {sys.executable} -m swand run -c {toml}"
            )
            log = tmp_path / "swand.log"
            with log.open("wb") as out:
                proc = gw.popen(["unshare", "--mount", "--propagation", "private",
                                 "sh", "-c", sandbox], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
            started = time.monotonic()
            ready = _notify_messages(listener, "READY", seen)
            ready_after = time.monotonic() - started
            assert "STATUS" in ready
            listed = gw.run(f"swanctl --list-conns --uri {gw.vici_uri}").stdout
            assert "roadwarriors: IKEv2" in listed and "t520: IKEv2" in listed
            _notify_messages(listener, "WATCHDOG", seen, timeout=2.0)
            proc.send_signal(signal.SIGHUP)
            reloading = _notify_messages(listener, "RELOADING", seen)
            assert int(reloading["MONOTONIC_USEC"]) > 0
            _notify_messages(listener, "READY", seen)
            proc.send_signal(signal.SIGTERM)
            _notify_messages(listener, "STOPPING", seen)
            assert proc.wait(15) == 0, log.read_text()[-2000:]
            print(f"READY=1 {ready_after:.2f} s after start; messages: {seen}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        listener.close()
