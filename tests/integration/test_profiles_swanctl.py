"""strongSwan's own parser reads what `swand client add` writes (no root, no charon).

Stock `swanctl` loads the gateway's swanctl.conf (with the `conf.d/` files `--static-ip`
writes) and each client's Linux profile into a recording fake VICI socket: a file charon
could not parse fails the load, and the recorded `load-conn` names show the section names
strongSwan saw. Issue 12 item 11: a client name with a dot made both unparseable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from swand.cli import main
from swand.core.profiles.linux import BLOCK_IPV6_UPDOWN
from swand.lab.fake_vici import RecordingVici

ETC_SWANCTL = Path(__file__).resolve().parents[2] / "etc" / "swanctl" / "swanctl.conf"
NAMES = ("home.t520", "a@b.c", "n" * 30 + "." + "x" * 28 + "@b.c")


def swanctl_load(fake: RecordingVici, conf: Path, what: str) -> list[str]:
    """`swanctl WHAT --file CONF` into the fake; the names of the loaded conns/pools."""
    fake.log.clear()
    noprompt = ["--noprompt"] if what == "--load-all" else []
    proc = subprocess.run(
        ["swanctl", what, *noprompt, "--uri", f"unix://{fake.path}", "--file", str(conf)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [name for command, msg in fake.log if command in ("load-conn", "load-pool")
            for name in msg]


def test_swanctl_parses_the_gateway_and_linux_files_of_dotted_names(tmp_path: Path) -> None:
    if shutil.which("swanctl") is None:
        pytest.fail("swanctl is not installed (dev.sh installs strongswan-swanctl)")
    gwdir = tmp_path / "swanctl"
    (gwdir / "conf.d").mkdir(parents=True)
    shutil.copy(ETC_SWANCTL, gwdir / "swanctl.conf")
    assert main(["pki", "--swanctl-dir", str(gwdir), "init", "--dn", "C=CH, O=t, CN=t CA"]) == 0
    assert main(["pki", "--swanctl-dir", str(gwdir), "gateway", "--id", "vpn.example.org"]) == 0
    pw = tmp_path / "pw"
    pw.write_text("a-password\n")
    out = tmp_path / "out"
    for i, name in enumerate(NAMES):
        assert main(["client", "--swanctl-dir", str(gwdir), "add", name, "--out", str(out),
                     "--static-ip", f"10.8.0.{i + 2}", "--platform", "linux",
                     "--password-file", str(pw)]) == 0
    fake = RecordingVici(tmp_path / "fake.vici")
    try:
        loaded = swanctl_load(fake, gwdir / "swanctl.conf", "--load-all")
        sections = [n.replace(".", "_") for n in NAMES]
        for section in sections:
            assert loaded.count(section) == 2, (section, loaded)  # its connection and pool
        assert "roadwarriors" in loaded and "rw_pool" in loaded
        for name in NAMES:
            assert swanctl_load(fake, out / f"{name}.swanctl.conf", "--load-conns") == \
                ["vpn-example-org"]
        # the IPv6 block of an IPv4-only gateway's profile reaches charon verbatim
        (msg,) = [m for c, m in fake.log if c == "load-conn"]
        child = msg["vpn-example-org"]["children"]["vpn-example-org"]
        assert child["updown"] == BLOCK_IPV6_UPDOWN.encode()
    finally:
        fake.close()
