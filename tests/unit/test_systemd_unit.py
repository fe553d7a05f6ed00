"""systemd/swand.service: `systemd-analyze verify` clean, and the settings the daemon relies
on (notify, watchdog, reload by SIGHUP, the hardening that still lets it work)."""

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

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "swand.service"
INSTALLED_PATH = "/usr/local/bin/swand"


def _unit() -> dict[str, dict[str, list[str]]]:
    """The unit as section -> key -> values (keys may repeat in unit files)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """verify insists that ExecStart's binary exists: point a copy of the unit at this
    checkout's swand (the venv's entry point), as an installation would at
    /usr/local/bin/swand."""
    swand = Path(sys.executable).parent / "swand"
    if not swand.exists():
        pytest.skip("swand entry point not installed in this environment")
    text = UNIT.read_text()
    assert INSTALLED_PATH in text
    copy = tmp_path / "swand.service"
    copy.write_text(text.replace(INSTALLED_PATH, str(swand)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_notify_watchdog_reload() -> None:
    service = _unit()["Service"]
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"]
    assert service["ExecStart"] == [f"{INSTALLED_PATH} run"]


def test_runs_after_charon() -> None:
    unit = _unit()["Unit"]
    assert any("strongswan.service" in v for v in unit["After"])
    assert any("strongswan.service" in v for v in unit["Wants"])


def test_hardening_that_still_lets_it_work() -> None:
    service = _unit()["Service"]
    assert set(service["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert service["ProtectSystem"] == ["strict"]
    writable = " ".join(service["ReadWritePaths"]).split()
    assert "/run/swand" in writable
    assert any(p.lstrip("-") == "/run/xtables.lock" for p in writable)
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert service[key] == ["yes"], key
    assert set(service["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6",
    }
    # swand writes /proc/sys/net (ip_forward, ip_no_pmtu_disc)
    assert "ProtectKernelTunables" not in service


# --- lab: the real daemon under the unit's conditions -------------------------------------

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
    from swand.commands.demo import install_gateway_config
    from swand.lab import Lab
    from swand.lab.daemon import swand_toml

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
