"""Lab: a client made only by `swand client add` connects; `swand client revoke` ends it.

The gateway's credentials come from `swand pki init` / `swand pki gateway`, the client's
from `swand client add --platform linux` (its p12 and NAME.swanctl.conf, nothing else):
the lab's own CA material is removed from both hosts first. Each test runs against charon
5.9 and 6.0 (`SWAND_LAB_VERSIONS`). Clients are loaded by stock `swanctl --load-all`
(proving the profile is plain swanctl.conf), and in the static-IP test by `swand apply`
with the `NAME.swand.toml` snippet; the gateway by `swand apply` (swanctl as long as
that command is not implemented).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swand.cli import main
from swand.lab import Lab, configs
from swand.lab.lab import GATEWAY_ADDRESS
from swand.lab.util import LabError, wait_for

pytestmark = pytest.mark.lab

CA_DN = "C=CH, O=swand clients test, CN=swand clients test Root CA"


def wipe_lab_credentials(swanctl_dir: Path) -> None:
    """Remove what the lab's own CA put there, so only swand-made material remains."""
    for folder in ("x509", "x509ca", "private", "pkcs12", "x509crl"):
        shutil.rmtree(swanctl_dir / folder, ignore_errors=True)


def swand_apply(host, toml_text: str, toml: Path) -> None:  # type: ignore[no-untyped-def]
    """`swand apply -c TOML` against the host's charon and swanctl folder."""
    toml.write_text(f'[charon]\nvici = "{host.vici_uri}"\n[swanctl]\ndir = "{host.swanctl_dir}"\n'
                    + toml_text)
    proc = subprocess.run(
        [sys.executable, "-m", "swand", "apply", "-c", str(toml)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    if proc.returncode == 2 and "not implemented" in proc.stderr:
        host.swanctl("--load-all")  # the loader has not landed yet
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr


def load_gateway(lab: Lab, tmp_path: Path) -> None:
    swand_apply(lab.gateway, "[firewall]\nenabled = false\n", tmp_path / "gateway.toml")


def add_linux_client(lab: Lab, name: str, out: Path) -> None:
    gwdir = lab.gateway.swanctl_dir
    pw = out / f"{name}.pw"
    pw.write_text(f"{name}-secret-password\n")
    assert main(["client", "--swanctl-dir", str(gwdir), "add", name, "--platform", "linux",
                 "--out", str(out), "--gateway", GATEWAY_ADDRESS, "--encap",
                 "--password-file", str(pw)]) == 0


def install_linux_client(host, name: str, out: Path) -> None:  # type: ignore[no-untyped-def]
    """What docs/clients.md tells a Linux user to do: p12 to pkcs12/, conf to conf.d/."""
    d = host.swanctl_dir
    wipe_lab_credentials(d)
    (d / "pkcs12").mkdir(parents=True)
    shutil.copy(out / f"{name}.p12", d / "pkcs12" / f"{name}.p12")
    conf = (out / f"{name}.swanctl.conf").read_text()
    # the lab's charons are fast: short DPD so a revoked client notices quickly
    host.write_swanctl_conf(conf.replace("dpd_delay = 30s", "dpd_delay = 2s"))
    host.swanctl("--load-all")


def test_client_from_swand_client_add_connects_and_revocation_refuses_it(
    versioned_lab: Lab, tmp_path: Path,
) -> None:
    lab = versioned_lab
    gw, alice_host, bob_host = lab.gateway, lab.client(1), lab.client(2)
    wipe_lab_credentials(gw.swanctl_dir)
    gw.write_swanctl_conf(
        configs.gateway_conf(gateway_id=lab.gateway_id) + "include conf.d/*.conf\n"
    )
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id,
                 "--san", GATEWAY_ADDRESS]) == 0
    load_gateway(lab, tmp_path)

    add_linux_client(lab, "alice", tmp_path)
    add_linux_client(lab, "bob", tmp_path)
    conn = "192-0-2-1"  # the client-side connection is named after the gateway address
    install_linux_client(alice_host, "alice", tmp_path)
    # start_action = start: loading is enough, no initiate
    sa = alice_host.wait_for_sa(conn, timeout=20)
    assert sa["remote-id"] == lab.gateway_id
    vip = alice_host.virtual_ips()[0]
    assert vip.startswith("10.8.0.")
    gw_sa = gw.wait_for_sa("rw", timeout=10)
    assert gw_sa["remote-id"] == "alice"  # the SAN, as the profile says

    install_linux_client(bob_host, "bob", tmp_path)
    bob_host.wait_for_sa(conn, timeout=20)

    # revoke alice: CRL into charon, her IKE SA terminated at once
    started = time.monotonic()
    assert main(["client", "--swanctl-dir", gwdir, "--vici", gw.vici_uri,
                 "revoke", "alice"]) == 0
    revoke_seconds = time.monotonic() - started
    assert not [s for s in gw.list_sas() if s.get("remote-id") == "alice"
                and s.get("state") == "ESTABLISHED"]
    # alice retries (close_action = start) and is refused: the CRL names her certificate
    gw.wait_for_log("certificate was revoked", timeout=20)
    time.sleep(3)
    assert not [s for s in gw.list_sas() if s.get("remote-id") == "alice"
                and s.get("state") == "ESTABLISHED"]
    assert not [s for s in alice_host.list_sas() if s.get("state") == "ESTABLISHED"]
    # bob is untouched and can still (re)connect with the CRL loaded
    assert [s for s in gw.list_sas() if s.get("remote-id") == "bob"]
    bob_host.swanctl("--terminate", "--ike", conn, check=False)
    bob_host.initiate(conn)  # a local terminate is not a close: no automatic restart
    wait_for(lambda: [s for s in gw.list_sas() if s.get("remote-id") == "bob"
                      and s.get("state") == "ESTABLISHED"], 20,
             message=lambda: f"bob back on the gateway; {gw.log_tail()}")
    print(f"revoke took {revoke_seconds:.2f}s")

    # the revocation survives a charon restart: the loader reads x509crl/ like any
    # credential, so alice stays out and bob (DPD -> restart) comes back
    gw.restart_charon()
    refusals = gw.log().count("certificate was revoked")
    load_gateway(lab, tmp_path)
    wait_for(lambda: [s for s in gw.list_sas() if s.get("remote-id") == "bob"
                      and s.get("state") == "ESTABLISHED"], 30,
             message=lambda: f"bob back after the gateway restart; {gw.log_tail()}")
    # an AUTHENTICATION_FAILED is final for charon (keyingtries counts timeouts only):
    # alice tries once more by hand
    with pytest.raises(LabError):
        alice_host.initiate(conn, timeout=10)
    assert gw.log().count("certificate was revoked") > refusals
    assert not [s for s in gw.list_sas() if s.get("remote-id") == "alice"
                and s.get("state") == "ESTABLISHED"]


def test_static_ip_client_gets_its_address_through_the_pinned_connection(
    make_lab, charon_version: str, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, host = lab.gateway, lab.client(1)
    wipe_lab_credentials(gw.swanctl_dir)
    gw.write_swanctl_conf(
        configs.gateway_conf(gateway_id=lab.gateway_id) + "include conf.d/*.conf\n"
    )
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id]) == 0
    pw = tmp_path / "pw"
    pw.write_text("t14-secret-password\n")
    assert main(["client", "--swanctl-dir", gwdir, "add", "t14", "--static-ip", "10.8.0.2",
                 "--platform", "linux", "--out", str(tmp_path), "--gateway", GATEWAY_ADDRESS,
                 "--encap", "--password-file", str(pw)]) == 0
    assert (gw.swanctl_dir / "conf.d" / "t14.conf").exists()
    load_gateway(lab, tmp_path)  # "the next reload": the pinned connection and its pool
    assert "t14" in gw.list_conns()
    # the client is loaded by swand itself, with the swand.toml snippet the profile came with
    d = host.swanctl_dir
    wipe_lab_credentials(d)
    (d / "pkcs12").mkdir(parents=True)
    shutil.copy(tmp_path / "t14.p12", d / "pkcs12" / "t14.p12")
    host.write_swanctl_conf((tmp_path / "t14.swanctl.conf").read_text())
    snippet = (tmp_path / "t14.swand.toml").read_text()
    assert 'conns = ["192-0-2-1"]' in snippet
    swand_apply(host, snippet, tmp_path / "client.toml")
    host.wait_for_sa("192-0-2-1", timeout=20)
    assert host.virtual_ips() == ["10.8.0.2"]
    sa = gw.wait_for_sa("t14", timeout=10)  # matched the pinned connection, by DN
    assert sa["remote-id"] == "C=CH, O=swand clients test, CN=t14"


#: the first suites are ones Windows cannot negotiate: the profiles must pick the others
PICKY_IKE = "aes256gcm16-prfsha512-curve25519, aes256-sha384-prfsha384-ecp384"
PICKY_ESP = "chacha20poly1305, aes256gcm16-ecp384"


def test_each_platform_profile_offers_what_the_gateway_accepts(
    make_lab, charon_version: str, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A strongSwan client offers exactly the one suite and identity each platform's
    profile makes that platform offer (read back from the ps1, mobileconfig and sswan
    files), and the gateway accepts every one of them."""
    import dataclasses
    import json

    from swand.core import profiles
    from swand.core.settings import parse_file

    lab = make_lab(clients=1, charon=charon_version)
    gw, host = lab.gateway, lab.client(1)
    wipe_lab_credentials(gw.swanctl_dir)
    conf = configs.gateway_conf(gateway_id=lab.gateway_id)
    conf = conf.replace(f"proposals = {configs.IKE_PROPOSAL}", f"proposals = {PICKY_IKE}")
    conf = conf.replace(f"esp_proposals = {configs.ESP_PROPOSAL}", f"esp_proposals = {PICKY_ESP}")
    gw.write_swanctl_conf(conf)
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id]) == 0
    pw = tmp_path / "pw"
    pw.write_text("emu-secret-password\n")
    assert main(["client", "--swanctl-dir", gwdir, "add", "emu", "--out", str(tmp_path),
                 "--gateway", GATEWAY_ADDRESS, "--encap", "--password-file", str(pw)]) == 0
    load_gateway(lab, tmp_path)

    dn = "C=CH, O=swand clients test, CN=emu"
    win_ike, win_esp = profiles.windows_suites_from_params(
        profiles.parse_windows_script((tmp_path / "emu.ps1").read_text()))
    apple_ike, apple_esp = profiles.apple_suites_from_plist(
        (tmp_path / "emu.mobileconfig").read_bytes())
    sswan = json.loads((tmp_path / "emu.sswan").read_text())
    offers = {
        "windows": (win_ike, win_esp, dn),
        "apple": (apple_ike, apple_esp, "emu"),
        "android": (sswan["ike-proposal"], sswan["esp-proposal"], sswan["local"]["id"]),
    }
    assert win_ike == "aes256-sha384-prfsha384-ecp384" and win_esp == "aes256gcm16-ecp384"
    gwinfo = profiles.gateway_from_settings(parse_file(gw.swanctl_dir / "swanctl.conf"),
                                            address=GATEWAY_ADDRESS)
    client = profiles.ClientInfo("emu", dn, "emu", b"", b"", "x")
    d = host.swanctl_dir
    wipe_lab_credentials(d)
    (d / "pkcs12").mkdir(parents=True)
    shutil.copy(tmp_path / "emu.p12", d / "pkcs12" / "emu.p12")
    for platform, (ike, esp, identity) in offers.items():
        one = dataclasses.replace(gwinfo, ike_proposals=(ike,), esp_proposals=(esp,))
        host.write_swanctl_conf(profiles.linux_swanctl_conf(
            one, client, p12_password="emu-secret-password", encap=True, local_id=identity))
        host.swanctl("--load-all")
        sa = host.wait_for_sa("192-0-2-1", timeout=20)
        child = next(iter(sa["child-sas"].values()))
        print(f"{platform}: IKE {sa['encr-alg']}-{sa.get('integ-alg', '')}-{sa['prf-alg']}-"
              f"{sa['dh-group']}, ESP {child['encr-alg']} as {identity}")
        assert [s["remote-id"] for s in gw.list_sas()] == [identity], platform
        host.swanctl("--terminate", "--ike", "192-0-2-1")
        host.write_swanctl_conf("")  # unload, so the next load starts it afresh
        host.swanctl("--load-all")
        wait_for(lambda: not gw.list_sas(), 10, message=f"{platform} SA gone")


def test_dual_stack_client_of_an_ipv4_only_gateway_sends_no_ipv6_around_the_tunnel(
    make_lab, charon_version: str, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Issue 13's leak test: the client has IPv6 on its uplink, the gateway tunnels IPv4
    only. Configured from nothing but its generated Linux profile, the client sends no
    IPv6 packet to the v6 web host on its uplink while connected (tcpdump: 0 packets);
    IPv4 goes through the tunnel; IPv6 comes back when the tunnel is taken down."""
    from swand.lab.charon import DEFAULT_PLUGINS
    from swand.lab.lab import INTERNET_HOST, INTERNET_HOST6

    lab = make_lab(clients=1, charon=charon_version, ipv6=True,
                   plugins=(*DEFAULT_PLUGINS, "updown"))  # Debian's charon loads updown
    gw, host = lab.gateway, lab.client(1)
    wipe_lab_credentials(gw.swanctl_dir)
    gw.write_swanctl_conf(configs.gateway_conf(gateway_id=lab.gateway_id))  # IPv4 only
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id,
                 "--san", GATEWAY_ADDRESS]) == 0
    load_gateway(lab, tmp_path)
    lab.gateway_nat()
    add_linux_client(lab, "dana", tmp_path)
    conn = "192-0-2-1"

    def ipv6_routes() -> str:
        return str(host.run(["ip", "-6", "route", "show", "table", "main"]).stdout)

    # without the tunnel the v6 web host is reachable on the bare uplink: what would leak
    assert host.ping(INTERNET_HOST6)
    install_linux_client(host, "dana", tmp_path)
    host.wait_for_sa(conn, timeout=20)
    wait_for(lambda: "unreachable 8000::/1" in ipv6_routes(), 10,
             message=lambda: f"IPv6 blocked by the profile's updown; {host.log_tail()}")
    with host.tcpdump("eth0", f"ip6 and host {INTERNET_HOST6}") as capture:
        assert not host.ping(INTERNET_HOST6)
        tcp = host.run([sys.executable, "-c",
                        "import socket, sys; socket.create_connection((sys.argv[1], 80), 2)",
                        INTERNET_HOST6], check=False)
        assert tcp.returncode != 0 and "No route to host" in tcp.stderr, tcp.stderr
        assert host.ping(INTERNET_HOST)  # IPv4 through the tunnel still works
    leaked = capture.stop()
    print(f"IPv6 packets to {INTERNET_HOST6} on the client's uplink while connected: "
          f"{len(leaked)}")
    assert leaked == []

    # the tunnel goes down (a local terminate: no restart): the block goes with it
    host.swanctl("--terminate", "--ike", conn)
    wait_for(lambda: "unreachable" not in ipv6_routes(), 10,
             message=lambda: f"IPv6 unblocked after the tunnel; {ipv6_routes()}")
    assert host.ping(INTERNET_HOST6)


def test_client_of_a_dual_stack_gateway_tunnels_ipv6_from_its_profile(
    make_lab, charon_version: str, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The other kind of gateway: it tunnels ::/0 and hands out IPv6 addresses. The
    client's generated Linux profile asks for both families and reaches the v6 web host
    through the tunnel (NAT66 on the gateway): nothing in the clear on its uplink. A
    client pinned with --static-ip keeps drawing its IPv6 address from the pool."""
    from swand.lab.lab import INTERNET_HOST6

    lab = make_lab(clients=2, charon=charon_version, ipv6=True)
    gw, host = lab.gateway, lab.client(1)
    wipe_lab_credentials(gw.swanctl_dir)
    gw.write_swanctl_conf(configs.gateway_conf(gateway_id=lab.gateway_id,
                                               pool6="fd00:8::1000/116")
                          + "include conf.d/*.conf\n")
    gwdir = str(gw.swanctl_dir)
    assert main(["pki", "--swanctl-dir", gwdir, "init", "--dn", CA_DN]) == 0
    assert main(["pki", "--swanctl-dir", gwdir, "gateway", "--id", lab.gateway_id,
                 "--san", GATEWAY_ADDRESS]) == 0
    load_gateway(lab, tmp_path)
    lab.gateway_nat(source6="fd00:8::/64")
    add_linux_client(lab, "erin", tmp_path)
    assert "vips = 0.0.0.0, ::" in (tmp_path / "erin.swanctl.conf").read_text()
    install_linux_client(host, "erin", tmp_path)
    host.wait_for_sa("192-0-2-1", timeout=20)
    wait_for(lambda: len(host.virtual_ips()) == 2, 10, message="both virtual IPs")
    vip6 = next(ip for ip in host.virtual_ips() if ":" in ip)
    assert vip6.startswith("fd00:8::")
    with host.tcpdump("eth0", f"ip6 and host {INTERNET_HOST6}") as capture:
        assert host.ping(INTERNET_HOST6)  # from the virtual IP: table 220 says so
    assert capture.stop() == []  # it went through the tunnel, not the bare uplink

    pinned = lab.client(2)
    pw = tmp_path / "frank.pw"
    pw.write_text("frank-secret-password\n")
    assert main(["client", "--swanctl-dir", gwdir, "add", "frank", "--static-ip", "10.8.0.2",
                 "--platform", "linux", "--out", str(tmp_path), "--gateway", GATEWAY_ADDRESS,
                 "--encap", "--password-file", str(pw)]) == 0
    load_gateway(lab, tmp_path)
    install_linux_client(pinned, "frank", tmp_path)
    pinned.wait_for_sa("192-0-2-1", timeout=20)
    wait_for(lambda: len(pinned.virtual_ips()) == 2, 10, message="the pinned client's VIPs")
    assert "10.8.0.2" in pinned.virtual_ips()
    assert any(ip.startswith("fd00:8::") for ip in pinned.virtual_ips())
    assert gw.wait_for_sa("frank", timeout=10)["remote-id"] == \
        "C=CH, O=swand clients test, CN=frank"
