"""The reference setup from imported configuration: docs/service.md's gateway and t520
ipsec.conf, run through `swand import` and loaded by swand into the lab's gateway and
second client; t520 gets 10.8.0.1, a road warrior connects and reaches the internet host
through the gateway's NAT.

Lab adaptations, each a line appended to or replaced in the documented files: the lab's
ids and addresses, and `forceencaps=yes` (the lab kernel has no ESP: libipsec needs
UDP encapsulation). And one outside them: the gateway gets 10.8.0.2/32 on lo. t520 asks
for 10.8.0.0/24 (`rightsubnet`), so the gateway's CHILD_SA for it is 10.8.0.0/24 ===
10.8.0.1/32; kernel-libipsec routes that into its TUN device with a source address from
10.8.0.0/24 and, finding none, fails the CHILD_SA ("error installing route with
policy", TS_UNACCEPTABLE to t520): t520 got 10.8.0.1 but no tunnel, and the road
warrior's ping to it went out to the internet. Kernel ESP (kernel-netlink) installs the
policies without such a route, so a real gateway needs no address there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from swand.lab import configs, wait_for
from swand.lab.lab import GATEWAY_ADDRESS, INTERNET_HOST

RW_POOL = "10.8.0.128/25"
#: the gateway's address inside t520's remote_ts, for kernel-libipsec (see above)
GATEWAY_VPN_ADDRESS = "10.8.0.2"
REPO = Path(__file__).resolve().parents[2]


def etc_for(host: Any, conf: str, secrets: str, cert: str, key: str, into: Path) -> Path:
    """An /etc with ipsec.conf, ipsec.secrets and ipsec.d holding `host`'s lab
    credentials (installed by the lab in its swanctl folder) under the documented names."""
    into.mkdir(parents=True)
    (into / "ipsec.conf").write_text(conf)
    (into / "ipsec.secrets").write_text(secrets)
    src, own = host.swanctl_dir, f"{host.cert.name}.pem"
    for source, target in ((f"x509/{own}", f"certs/{cert}"), (f"private/{own}",
                           f"private/{key}"), ("x509ca/lab-ca.pem", "cacerts/ca.pem")):
        (into / "ipsec.d" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / source, into / "ipsec.d" / target)
    return into / "ipsec.conf"


def swand(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swand", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.lab
def test_reference_setup_runs_from_imported_configuration(
        make_lab: Any, charon_version: str, tmp_path: Path) -> None:
    lab = make_lab(clients=2, charon=charon_version)
    gw, rw, t520 = lab.gateway, lab.client(1), lab.client(2)
    assert t520.ike_id is not None
    conf, secrets = configs.reference_ipsec_files("gateway")
    conf = (conf.replace("@vpn.example.org", f"@{lab.gateway_id}")
            .replace('"C=CH, O=swand lab, CN=t520"', t520.ike_id)
            .replace("    rekey=no\n", "    rekey=no\n    forceencaps=yes\n"))
    gw_etc = etc_for(gw, conf, secrets, "gateway.pem", "gateway.pem", tmp_path / "gw")
    conf, secrets = configs.reference_ipsec_files("t520")
    conf = (conf.replace('"C=CH, O=swand lab, CN=t520"', t520.ike_id)
            .replace("right=vpn.example.org", f"right={GATEWAY_ADDRESS}")
            .replace("@vpn.example.org", f"@{lab.gateway_id}")
            .replace("    mobike=yes\n", "    mobike=yes\n    forceencaps=yes\n"))
    t520_etc = etc_for(t520, conf, secrets, "t520.pem", "t520.pem", tmp_path / "t520")

    folders = {}
    for name, etc in (("gateway", gw_etc), ("t520", t520_etc)):
        out = tmp_path / f"{name}-swanctl"
        proc = swand("import", "--ipsec-conf", str(etc), "--out", str(out))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "todo" not in proc.stdout and "error" not in proc.stdout
        # the gateway with its imported fragment, t520 with the client's swand.toml
        toml = out / "swand.toml" if name == "gateway" else REPO / "etc/swand/swand-client.toml"
        check = swand("check", "--no-system", "--swanctl-dir", str(out), "-c", str(toml))
        assert check.returncode == 0, check.stdout + check.stderr
        folders[name] = out
    assert "[firewall]" in (folders["gateway"] / "swand.toml").read_text()

    gw.run(["ip", "addr", "add", f"{GATEWAY_VPN_ADDRESS}/32", "dev", "lo"])
    # the gateway and t520 load their imported folders through swand
    for host, name in ((gw, "gateway"), (t520, "t520")):
        proc = swand("apply", "--no-firewall", "--swanctl-dir", str(folders[name]),
                     "--vici", host.vici_uri)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    lab.gateway_nat()
    gw.sysctl("net.ipv4.ip_forward", 1)
    # t520 starts its tunnel by itself (auto=start) and is pinned to 10.8.0.1
    assert wait_for(t520.virtual_ips, 20, message=lambda: f"t520's VIP; {t520.log_tail()}"
                    ) == ["10.8.0.1"]
    assert wait_for(lambda: "INSTALLED" in gw.swanctl("--list-sas", "--ike", "t520").stdout,
                    10, message=lambda: f"the gateway's CHILD_SA for t520; {gw.log_tail()}")
    lab.configure_clients([rw])
    vip = lab.connect(rw)
    assert ip_address(vip) in ip_network(RW_POOL)
    with lab.router.tcpdump("gw0", "icmp or udp port 4500") as cap:
        assert wait_for(lambda: rw.ping(INTERNET_HOST), 10, message="ping through the NAT")
    seen = "\n".join(cap.lines())
    assert f"{GATEWAY_ADDRESS} > {INTERNET_HOST}: ICMP echo request" in seen  # masqueraded
    assert vip not in seen
    # road warrior to t520: in the gateway's tunnel for one, out through t520's
    assert wait_for(lambda: rw.ping("10.8.0.1"), 10, message="road warrior to t520")
