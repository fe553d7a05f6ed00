"""`swand check`'s read-only probes of the system (forwarding, NAT, MSS clamping) inside
a lab gateway. Moved from tests/unit: it needs root, namespaces and charon."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from swand.commands.demo import install_gateway_config
from swand.lab import Lab

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("charon-systemd") is None,
                    reason="needs root and charon-systemd")
def test_probes_in_a_gateway_namespace(tmp_path: Path) -> None:
    """`swand check` inside a lab gateway with swand's firewall off: forwarding, NAT and
    MSS missing are warned about; once the administrator adds them (NAT in the legacy
    tables, MSS clamping with the nft-based iptables) the warnings go. The probes only
    read: the rule set is the same before and after."""
    with Lab(clients=1, gateway_id="vpn.example.org") as lab:
        gw = lab.gateway
        install_gateway_config(ROOT / "etc", Path(gw.swanctl_dir))
        toml = tmp_path / "swand.toml"
        toml.write_text("[firewall]\nenabled = false\n")
        argv = [sys.executable, "-m", "swand", "check", "-c", str(toml), "--swanctl-dir",
                str(gw.swanctl_dir), "--json"]

        def check() -> tuple[int, set[str]]:
            proc = gw.run(argv, check=False)
            doc = json.loads(proc.stdout)
            return proc.returncode, {f["code"] for f in doc["findings"]}

        gw.sysctl("net.ipv4.ip_forward", 0)
        before = gw.run("iptables-legacy-save; iptables-save; nft list ruleset").stdout
        code, found = check()
        assert code == 0, found  # warnings only
        assert {"system-ip-forward", "system-nat", "system-mss"} <= found
        after = gw.run("iptables-legacy-save; iptables-save; nft list ruleset").stdout
        strip = "\n".join(line for line in before.splitlines() if not line.startswith("#"))
        assert strip == "\n".join(line for line in after.splitlines()
                                  if not line.startswith("#"))

        lab.gateway_nat(source="10.8.0.0/24")
        gw.run("iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN "
               "-j TCPMSS --clamp-mss-to-pmtu")
        code, found = check()
        assert code == 0
        assert not {"system-ip-forward", "system-nat", "system-mss"} & found, found
