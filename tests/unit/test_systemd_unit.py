"""systemd/swand.service: `systemd-analyze verify` clean, and the settings the daemon relies
on (notify, watchdog, reload by SIGHUP, the hardening that still lets it work). The daemon
under those conditions: tests/integration/test_systemd_daemon.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
