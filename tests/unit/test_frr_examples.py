"""etc/frr/: FRR accepts every line of the examples (bgpd's dry run), and they agree with
swand's [routes] defaults. The fleet lab (tests/integration/test_fleet.py) runs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from swand.config import RoutesSettings

ETC_FRR = Path(__file__).resolve().parents[2] / "etc" / "frr"
BGPD = Path("/usr/lib/frr/bgpd")


@pytest.mark.skipif(not BGPD.exists() or os.geteuid() != 0,
                    reason="needs FRR (dev.sh installs it) and root (bgpd -u root)")
@pytest.mark.parametrize("name", ["frr.conf", "internal-router.conf"])
def test_bgpd_accepts_the_example(name: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BGPD), "-C", "-f", str(ETC_FRR / name), "-u", "root", "-g", "frrvty",
         "--vty_socket", str(tmp_path), "-z", str(tmp_path / "zserv.api"), "-P", "0",
         "-p", "0"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    # the dry run exits 0 even for unknown lines: read what it says
    assert out.returncode == 0 and "No such command" not in text \
        and "Unknown command" not in text, text


def test_gateway_example_matches_routes_defaults() -> None:
    text = (ETC_FRR / "frr.conf").read_text()
    defaults = RoutesSettings()
    assert defaults.table == 254 and "redistribute kernel" in text  # main table: kernel
    assert f"number {defaults.protocol}" in text
