"""Self-tests of the lab: it comes up, road warriors connect through it, and it leaves
nothing behind, even when a test fails or its owner is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from swand.lab import (
    INTERNET_HOST,
    INTERNET_HOST6,
    POOL,
    Lab,
    LabCA,
    LabError,
    list_netns,
    sweep_stale,
    wait_for,
)
from swand.lab.pki import IKE_INTERMEDIATE
from swand.lab.util import sh

pytestmark = pytest.mark.lab


def test_ca_issues_gateway_and_client_certificates() -> None:
    ca = LabCA()
    gw = ca.issue("gateway", dns=("vpn.lab.test",), ips=("192.0.2.1",), server=True,
                  common_name="vpn.lab.test")
    san = gw.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["vpn.lab.test"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    eku = gw.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and IKE_INTERMEDIATE in eku
    client = ca.issue("client1", emails=("client1@lab.test",), common_name="client1@lab.test")
    san = client.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["client1@lab.test"]
    assert b"PRIVATE KEY" in client.key_pem
    assert client.cert.signature_hash_algorithm is not None
    assert client.cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]


def test_lab_comes_up_and_goes_away(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(clients=2)
    assert lab.timings["up"] < 10, lab.timings
    names = {ns for ns in list_netns() if ns.startswith(lab.netns_prefix)}
    assert names == {h.netns for h in lab.hosts.values()}
    for h in lab.charon_hosts:
        assert h.version()["version"] == "5.9.8"
        assert h.charon_pid is not None
        key = h.swanctl_dir / "private" / f"{h.name}.pem"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        assert (h.swanctl_dir / "x509ca" / "lab-ca.pem").exists()
    assert [c.address for c in lab.clients] == ["198.51.100.11", "198.51.100.12"]
    c1 = lab.client(1)
    assert c1.ping("192.0.2.1")
    assert lab.gateway.ping(INTERNET_HOST)
    # the internet host cannot reach road warriors' virtual IPs: only NAT makes it work
    routes = lab.router.run(["ip", "route", "get", "10.8.0.129"], check=False)
    assert routes.returncode != 0 or "192.0.2" not in routes.stdout
    lab.down()
    assert lab.leftovers() == []
    assert not any(ns.startswith(lab.netns_prefix) for ns in list_netns())
    assert "timings" and lab.timings["down"] < 10


def test_road_warrior_reaches_internet_host_through_gateway_nat(rw_lab: Lab) -> None:
    lab = rw_lab
    c1 = lab.client(1)
    assert lab.gateway.version()["version"].startswith(lab.charon_version)
    vip = lab.connect(c1)
    assert ip_address(vip) in ip_network(POOL)
    gw_sa = lab.gateway.wait_for_sa("rw")
    assert gw_sa["remote-id"] == c1.ike_id
    assert gw_sa["remote-vips"] == [vip]
    with lab.router.tcpdump("gw0", "icmp or udp port 4500") as cap:
        assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping through ipsec0")
    seen = "\n".join(cap.lines())
    assert "192.0.2.1 > 203.0.113.10: ICMP echo request" in seen  # masqueraded
    assert "198.51.100.11.4500 > 192.0.2.1.4500: UDP" in seen  # ESP in UDP
    assert vip not in seen


def test_without_gateway_nat_the_internet_host_is_unreachable(versioned_lab: Lab) -> None:
    lab = versioned_lab
    lab.configure_gateway_with_swanctl()
    lab.configure_clients()
    lab.gateway.sysctl("net.ipv4.ip_forward", 1)
    c1 = lab.client(1)
    lab.connect(c1)
    assert not c1.ping(INTERNET_HOST, timeout=1)
    lab.gateway_nat()
    assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping after NAT")


def test_two_clients_and_a_changing_home_address(lab: Lab) -> None:
    lab.configure_gateway_with_swanctl()
    lab.configure_clients()
    lab.gateway_nat()
    c1, c2 = lab.clients
    vips = {lab.connect(c1), lab.connect(c2)}
    assert len(vips) == 2
    c1.set_address("198.51.100.99")
    assert c1.address == "198.51.100.99"

    def moved() -> bool:
        return any(sa["remote-host"] == "198.51.100.99" for sa in lab.gateway.list_sas())

    wait_for(moved, 15, message=lambda: f"MOBIKE update; {c1.log_tail()}")
    assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping from new address")


def test_kill9_and_restart_of_a_charon(lab: Lab) -> None:
    gw = lab.gateway
    old = gw.charon_pid
    gw.kill9()
    assert gw.charon_pid is None
    assert gw.vici_socket.exists()  # a crash leaves the socket file behind
    version = gw.start_charon()
    assert version["version"] == "5.9.8"
    assert gw.charon_pid not in (None, old)
    gw.restart_charon()
    assert "charon-systemd" in gw.log() or gw.log()


def test_teardown_runs_when_the_test_body_fails() -> None:
    lab = Lab(clients=1)
    with pytest.raises(RuntimeError), lab:
        lab.gateway.run("sleep 300 >/dev/null 2>&1 &")  # a stray process in a namespace
        raise RuntimeError("test failed")
    assert lab.leftovers() == []


def test_stale_lab_of_a_killed_owner_is_swept() -> None:
    script = textwrap.dedent("""
        import os, sys
        from swand.lab import Lab
        lab = Lab(clients=1).up()
        print(lab.id, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    lab_id = proc.stdout.strip()
    assert lab_id, proc.stderr
    assert any(ns.startswith(f"swl-{lab_id}-") for ns in list_netns())
    # PR_SET_PDEATHSIG: the dead owner's charons went with it
    wait_for(lambda: not _charons_of(lab_id), 5, message=f"charons of lab {lab_id} to die")
    removed = sweep_stale()
    assert any(f"swl-{lab_id}-" in r for r in removed), removed
    assert not any(ns.startswith(f"swl-{lab_id}-") for ns in list_netns())
    assert not os.path.exists(f"/run/swand-lab/{lab_id}")


def test_charon_60_without_a_tree_fails_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SWAND_LAB_TRIXIE", str(tmp_path))
    lab = Lab(clients=1, charon="6.0")
    with pytest.raises(LabError, match="not a complete trixie tree"):
        lab.up()
    assert lab.leftovers() == []


def test_unknown_charon_version_is_refused() -> None:
    with pytest.raises(LabError, match=r"one of 5\.9, 6\.0"):
        Lab(clients=0, charon="4.6").up()


def _charons_of(lab_id: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"/run/swand-lab/{lab_id}/".encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_sigterm_to_the_owner_tears_the_lab_down() -> None:
    script = textwrap.dedent("""
        import time
        from swand.lab import Lab
        lab = Lab(clients=1).up()
        print(lab.id, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.stdout is not None
    lab_id = proc.stdout.readline().strip()
    assert lab_id and any(ns.startswith(f"swl-{lab_id}-") for ns in list_netns())
    proc.terminate()
    assert proc.wait(30) == 128 + 15
    assert not any(ns.startswith(f"swl-{lab_id}-") for ns in list_netns())
    assert not os.path.exists(f"/run/swand-lab/{lab_id}")
    assert not _charons_of(lab_id)


@pytest.mark.parametrize(("gateway", "client"), [("5.9", "6.0"), ("6.0", "5.9")])
def test_mixed_versions_interoperate(make_lab: Callable[..., Lab], gateway: str,
                                     client: str) -> None:
    lab = make_lab(clients=1, charon=gateway, client_charon=client)
    c1 = lab.client(1)
    assert lab.gateway.version()["version"].startswith(gateway)
    assert c1.version()["version"].startswith(client)
    lab.configure_gateway_with_swanctl()
    lab.configure_clients()
    lab.gateway_nat()
    lab.connect(c1)
    assert wait_for(lambda: c1.ping(INTERNET_HOST), 10, message="ping through ipsec0")


def test_an_extra_host_has_its_own_empty_charon(lab: Lab) -> None:
    ref = lab.add_host("ref", charon="6.0")
    assert ref.version()["version"].startswith("6.0")
    assert ref.list_conns() == {}
    assert not any(ref.swanctl_dir.iterdir())
    ref.write_swanctl_conf("connections { a { children { a { } } } }\n")
    ref.swanctl("--load-conns")
    assert list(ref.list_conns()) == ["a"]
    assert lab.gateway.list_conns() == {}


def test_ipv6_virtual_ips_and_nat66(make_lab: Callable[..., Lab], charon_version: str
                                   ) -> None:
    lab = make_lab(charon=charon_version, ipv6=True)
    assert lab.client(2).address6 == "2001:db8:100::12"
    lab.configure_gateway_with_swanctl(pool6="fd00:8::1000/116")
    lab.configure_clients(ipv6=True)
    lab.gateway_nat(source6="fd00:8::/64")
    c1 = lab.client(1)
    assert c1.address6 == "2001:db8:100::11"
    assert c1.ping(lab.gateway.address6 or "")
    lab.connect(c1)
    vips = wait_for(lambda: len(c1.virtual_ips()) == 2 and c1.virtual_ips(), 10,
                    message="two virtual IPs")
    assert any(ip_address(v) in ip_network("fd00:8::1000/116") for v in vips)
    assert wait_for(lambda: c1.ping(INTERNET_HOST6), 10, message="ping6 through ipsec0")


def test_disconnect_makes_the_gateway_see_a_dead_peer(lab: Lab) -> None:
    lab.configure_gateway_with_swanctl()
    lab.configure_clients()
    c1 = lab.client(1)
    lab.connect(c1)
    lab.gateway.wait_for_sa("rw")
    lab.disconnect(c1)
    # dpd_delay 2s + 2 retransmits (1.0 s, then 1.2 s later) ~ 6 s
    wait_for(lambda: not lab.gateway.list_sas(), 15,
             message=lambda: f"DPD on the gateway; {lab.gateway.log_tail()}")
    lab.reconnect(c1)
    assert c1.ping("192.0.2.1")


def test_chrooted_swanctl_reads_a_bound_host_folder(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "corpus-host"
    folder.mkdir()
    (folder / "swanctl.conf").write_text("connections { b { children { b { } } } }\n")
    ref = lab.add_host("ref6", charon="6.0", binds=[str(tmp_path)])
    out = ref.swanctl("--load-conns", "--file", str(folder / "swanctl.conf"))
    assert "loaded connection 'b'" in out.stdout
    assert list(ref.list_conns()) == ["b"]
    # read-only: the chrooted side cannot change the host's files
    assert ref.charon is not None
    probe = sh([*ref.charon.argv("/usr/bin/touch"), str(folder / "x")], check=False)
    assert probe.returncode != 0 and not (folder / "x").exists()
    assert "Read-only" in probe.stderr


def test_http_get_inside_a_namespace(lab: Lab) -> None:
    server = lab.gateway.popen([sys.executable, "-m", "http.server", "--bind", "192.0.2.1",
                                "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = wait_for(lambda: _try_get(lab, "http://192.0.2.1:8080/"), 10, message="http")
    assert "Directory listing" in body
    server.terminate()


def _try_get(lab: Lab, url: str) -> str:
    try:
        return lab.client(1).http_get(url, timeout=1)
    except LabError:
        return ""
