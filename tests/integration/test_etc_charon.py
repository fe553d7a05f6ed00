"""The example swanctl.conf files in etc/ load into a real charon with
`swanctl --load-all`. Moved from tests/unit: it needs root, a namespace and charon."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swand.lab.charon import Charon
from swand.lab.pki import LabCA, write_private

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("swanctl") is None, reason="needs root and swanctl"
)


@pytest.mark.lab
@needs_root
@pytest.mark.parametrize(
    ("folder", "cert_name", "expected_conns", "expected_pools"),
    [
        ("swanctl", "gateway", ["roadwarriors", "t520"], {"rw_pool": 126, "t520_pool": 1}),
        ("swanctl-client", "t520", ["home"], {}),
    ],
)
def test_swanctl_conf_loads_into_charon(
    tmp_path: Path, folder: str, cert_name: str, expected_conns: list[str],
    expected_pools: dict[str, int],
) -> None:

    ns = f"swetc{os.getpid() % 100000}{folder[-1]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    charon = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        charon = Charon(ns, tmp_path)
        sw = charon.swanctl_dir
        shutil.copytree(ETC / folder, sw)
        # stand-in credentials under the file names the configs use
        ca = LabCA()
        (sw / "x509ca").mkdir(exist_ok=True)
        (sw / "x509ca" / "ca.pem").write_bytes(ca.cert_pem)
        gateway = cert_name == "gateway"
        issued = ca.issue(
            cert_name, dns=("vpn.example.org",) if gateway else (), server=gateway,
        )
        (sw / "x509").mkdir(exist_ok=True)
        (sw / "x509" / f"{cert_name}.pem").write_bytes(issued.cert_pem)
        write_private(sw / "private" / f"{cert_name}.pem", issued.key_pem)
        charon.start()

        def swanctl(*args: str) -> str:
            proc = subprocess.run(
                ["ip", "netns", "exec", ns, "swanctl", *args, "--uri", charon.vici_uri],
                env=charon.env(), capture_output=True, text=True, timeout=30,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return proc.stdout

        out = swanctl("--load-all", "--file", str(sw / "swanctl.conf"))
        # missing optional credential folders are reported as "opening directory ...
        # failed"; anything else failing is a broken example
        problems = [
            line for line in out.splitlines()
            if "fail" in line and not line.startswith("opening directory")
        ]
        assert not problems, out
        listed = swanctl("--list-conns")
        for name in expected_conns:
            assert f"{name}: IKEv2" in listed
        pools = swanctl("--list-pools")
        for name, size in expected_pools.items():
            assert re.search(rf"^{name}\s.*/ {size}$", pools, re.M), pools
    finally:
        if charon is not None:
            charon.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
