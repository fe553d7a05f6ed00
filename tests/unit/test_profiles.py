"""Client profiles derived from the gateway's swanctl.conf (pure, no files or crypto)."""

from __future__ import annotations

import base64
import dataclasses
import json
import plistlib
import re
from pathlib import Path

import pytest

from swand.core import profiles
from swand.core.profiles import GatewayInfo, ProfileError
from swand.core.settings import parse_file, parse_text

ETC_SWANCTL = Path(__file__).resolve().parents[2] / "etc" / "swanctl" / "swanctl.conf"

GATEWAY = """
connections {
    rw {
        proposals = aes256gcm16-prfsha384-ecp384, aes256-sha256-modp2048
        pools = rw_pool
        local { auth = pubkey
                certs = gateway.pem
                id = vpn.example.org }
        remote { auth = pubkey }
        children { rw { local_ts = 0.0.0.0/0
                        esp_proposals = aes256gcm16-ecp384 } }
    }
    home {
        pools = home_pool
        local { auth = pubkey
                id = vpn.example.org }
        remote { auth = pubkey
                 id = "C=CH, O=x, CN=home" }
        children { home { esp_proposals = aes128gcm16 } }
    }
}
pools {
    rw_pool { addrs = 10.8.0.128/25
              dns = 1.1.1.1, 1.0.0.1 }
    home_pool { addrs = 10.8.0.1/32 }
}
"""

CLIENT = profiles.ClientInfo(
    name="alice", dn="C=CH, O=x, CN=alice", san="alice", p12=b"\x30\x82p12-bytes",
    ca_der=b"\x30\x82ca-der", ca_common_name="x Root CA", key_type="ECDSA384",
)


def gw_from(text: str, **kw: str) -> GatewayInfo:
    return profiles.gateway_from_settings(parse_text(text), **kw)


def suite_in(suite: str, proposal: str, is_ike: bool) -> bool:
    """Every algorithm of the one-suite `suite` is offered by `proposal`."""
    one = profiles.parse_proposal(suite, is_ike)
    gw = profiles.parse_proposal(proposal, is_ike)
    return (set(one.encryption) <= set(gw.encryption) and set(one.integrity) <= set(gw.integrity)
            and set(one.prfs) <= set(gw.prfs) and set(one.dh) <= set(gw.dh))


def test_gateway_facts_come_from_the_road_warrior_connection() -> None:
    gw = gw_from(GATEWAY)
    assert gw.conn_name == "rw"  # `home` is pinned to one identity: not the road warrior
    assert gw.identity == gw.address == "vpn.example.org"
    assert gw.ike_proposals == ("aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048")
    assert gw.esp_proposals == ("aes256gcm16-ecp384",)
    assert gw.pool_addrs == ("10.8.0.128/25",)
    assert gw.dns == ("1.1.1.1", "1.0.0.1")
    assert gw.cert_file == "gateway.pem"


def test_reference_gateway_config() -> None:
    gw = profiles.gateway_from_settings(parse_file(ETC_SWANCTL))
    assert gw.conn_name == "roadwarriors"
    assert gw.identity == "vpn.example.org"
    win = profiles.windows_params(gw)
    assert win.as_ps_args() == {
        "AuthenticationTransformConstants": "GCMAES256",
        "CipherTransformConstants": "GCMAES256",
        "EncryptionMethod": "AES256",
        "IntegrityCheckMethod": "SHA384",
        "DHGroup": "ECP384",
        "PfsGroup": "ECP384",
    }


def test_reference_config_windows_comment_is_what_client_add_writes() -> None:
    """Issue 12 item 14: the comment told Windows users `-EncryptionMethod GCMAES256`,
    which offers IKE aes256gcm16-prfsha384-ecp384, not in the gateway's proposals
    (NO_PROPOSAL_CHOSEN). It must say what `client add` puts in NAME.ps1."""
    lines = ETC_SWANCTL.read_text().splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("#   Set-VpnConnectionIPsecConfiguration"))
    comment = lines[start].removeprefix("#   Set-VpnConnectionIPsecConfiguration")
    for line in lines[start + 1:]:
        if not line.startswith("#     -"):
            break
        comment += " " + line.removeprefix("#")
    in_comment = dict(re.findall(r"-(\w+) (\w+)", comment))
    gw = profiles.gateway_from_settings(parse_file(ETC_SWANCTL))
    in_script = profiles.parse_windows_script(profiles.windows_script(gw, CLIENT))
    assert in_comment == in_script == profiles.windows_params(gw).as_ps_args()


def test_overrides_and_errors_name_the_connection() -> None:
    gw = gw_from(GATEWAY, address="192.0.2.1")
    assert gw.address == "192.0.2.1" and gw.identity == "vpn.example.org"
    with pytest.raises(ProfileError, match="no connection 'nope'"):
        gw_from(GATEWAY, conn_name="nope")
    two = GATEWAY.replace("id = \"C=CH, O=x, CN=home\"", "")
    with pytest.raises(ProfileError, match="candidates with pools and pubkey clients: rw, home"):
        gw_from(two)
    with pytest.raises(ProfileError, match="unknown algorithm keyword 'aes257'"):
        gw_from(GATEWAY.replace("aes256-sha256-modp2048", "aes257-sha256-modp2048"))
    with pytest.raises(ProfileError, match="local id is not a plain name"):
        gw_from(GATEWAY.replace("id = vpn.example.org }\n        remote { auth = pubkey }",
                                "id = *.example.org }\n        remote { auth = pubkey }"))


@pytest.mark.parametrize(
    ("ike", "esp", "expected"),
    [
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384",
         dict(EncryptionMethod="GCMAES256", IntegrityCheckMethod="SHA384", DHGroup="ECP384",
              CipherTransformConstants="GCMAES256",
              AuthenticationTransformConstants="GCMAES256", PfsGroup="ECP384")),
        ("aes256-sha384-prfsha384-ecp384", "aes256gcm16-ecp384",
         dict(EncryptionMethod="AES256", IntegrityCheckMethod="SHA384", DHGroup="ECP384",
              CipherTransformConstants="GCMAES256",
              AuthenticationTransformConstants="GCMAES256", PfsGroup="ECP384")),
        ("aes128-sha256-modp2048", "aes128-sha256",
         dict(EncryptionMethod="AES128", IntegrityCheckMethod="SHA256", DHGroup="Group14",
              CipherTransformConstants="AES128",
              AuthenticationTransformConstants="SHA256128", PfsGroup="None")),
        # the first suite Windows cannot do (curve25519, sha512) is skipped
        ("aes256-sha512-curve25519, aes256-sha1-modp1024", "aes256-sha1-modp2048",
         dict(EncryptionMethod="AES256", IntegrityCheckMethod="SHA1", DHGroup="Group2",
              CipherTransformConstants="AES256",
              AuthenticationTransformConstants="SHA196", PfsGroup="PFS2048")),
    ],
)
def test_windows_parameters_equal_the_gateway_proposals(
    ike: str, esp: str, expected: dict[str, str],
) -> None:
    gw = GatewayInfo("vpn.example.org", "vpn.example.org",
                     profiles.split_list(ike), profiles.split_list(esp))
    params = profiles.windows_params(gw)
    assert params.as_ps_args() == expected
    script = profiles.windows_script(gw, CLIENT)
    assert profiles.parse_windows_script(script) == expected
    assert profiles.windows_suites_from_params(expected) == (
        params.ike.keywords(), params.esp.keywords())
    # the suites the script stands for are ones the gateway's proposals contain
    assert any(suite_in(params.ike.keywords(), p, True) for p in gw.ike_proposals)
    assert any(suite_in(params.esp.keywords(), p, False) for p in gw.esp_proposals)
    assert "-TunnelType IKEv2 -AuthenticationMethod MachineCertificate" in script
    assert "Import-PfxCertificate" in script and "alice.p12" in script
    assert "DisableSmartNameResolution" in script


@pytest.mark.parametrize(
    ("ike", "esp", "why"),
    [
        ("aes256-sha512-curve25519", "aes256gcm16", "IKE"),
        ("chacha20poly1305-prfsha256-ecp256", "aes256gcm16", "IKE"),
        ("aes256gcm16-prfsha512-ecp384", "aes256gcm16", "IKE"),
        ("aes256-sha256-modp3072", "aes256gcm16", "IKE"),
        ("aes256-sha256-modp2048", "aes256-sha384", "ESP"),
        ("aes256-sha256-modp2048", "chacha20poly1305", "ESP"),
        ("aes256-sha256-modp2048", "aes256gcm16-curve25519", "ESP"),
        ("aes256-sha256-modp2048", "aes256gcm16-esn", "ESP"),
    ],
)
def test_error_when_windows_cannot_match(ike: str, esp: str, why: str) -> None:
    gw = GatewayInfo("vpn.example.org", "vpn.example.org", (ike,), (esp,))
    with pytest.raises(ProfileError, match=f"Windows cannot match the gateway's {why}"):
        profiles.windows_params(gw)


def test_windows_key_curve_follows_the_ike_group() -> None:
    base = GatewayInfo("gw", "gw", ("aes256-sha256-ecp256",), ("aes256gcm16",))
    assert profiles.windows_curve_for(base) == "secp256r1"
    ecp384 = dataclasses.replace(base, ike_proposals=("aes256-sha384-ecp384",))
    assert profiles.windows_curve_for(ecp384) == "secp384r1"


@pytest.mark.parametrize(
    ("ike", "esp"),
    [
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16-ecp384"),
        ("aes256-sha384-prfsha384-ecp384", "aes256gcm16"),
        ("aes128-sha256-modp2048", "aes128-sha256-modp2048"),
        ("chacha20poly1305-prfsha256-curve25519", "chacha20poly1305-curve25519"),
    ],
)
def test_mobileconfig_round_trip_equals_the_gateway_proposals(ike: str, esp: str) -> None:
    gw = GatewayInfo("vpn.example.org", "vpn.example.org", (ike,), (esp,))
    data = profiles.mobileconfig(gw, CLIENT)
    doc = plistlib.loads(data)
    assert doc["PayloadType"] == "Configuration"
    kinds = [p["PayloadType"] for p in doc["PayloadContent"]]
    assert kinds == ["com.apple.security.pkcs12", "com.apple.security.root",
                     "com.apple.vpn.managed"]
    p12, root, vpn = doc["PayloadContent"]
    assert p12["PayloadContent"] == CLIENT.p12 and root["PayloadContent"] == CLIENT.ca_der
    assert "Password" not in p12  # the device asks for it
    ikev2 = vpn["IKEv2"]
    assert ikev2["PayloadCertificateUUID"] == p12["PayloadUUID"]
    assert ikev2["RemoteAddress"] == ikev2["RemoteIdentifier"] == "vpn.example.org"
    assert ikev2["LocalIdentifier"] == "alice"
    assert ikev2["AuthenticationMethod"] == "Certificate"
    assert ikev2["CertificateType"] == "ECDSA384"
    assert ikev2["OnDemandEnabled"] == 0 and ikev2["DisableMOBIKE"] == 0
    assert ikev2["EnablePFS"] == (1 if "-" in esp else 0)
    ike_back, esp_back = profiles.apple_suites_from_plist(data)
    # what Apple will offer, read back from the plist, is a suite of the gateway's
    assert suite_in(ike_back, ike, is_ike=True)
    assert suite_in(esp_back, esp, is_ike=False)
    params = profiles.apple_params(gw)
    assert ike_back == params.ike.keywords() and esp_back == params.esp.keywords()
    # regenerating gives the same UUIDs, so the device replaces instead of duplicating
    assert plistlib.loads(profiles.mobileconfig(gw, CLIENT))["PayloadUUID"] == doc["PayloadUUID"]


def test_mobileconfig_ike_dict_values() -> None:
    gw = GatewayInfo("vpn.example.org", "vpn.example.org", ("aes256gcm16-prfsha384-ecp384",),
                     ("aes256gcm16-ecp384",))
    ikev2 = plistlib.loads(profiles.mobileconfig(gw, CLIENT))["PayloadContent"][2]["IKEv2"]
    assert ikev2["IKESecurityAssociationParameters"] == {
        "EncryptionAlgorithm": "AES-256-GCM", "IntegrityAlgorithm": "SHA2-384",
        "DiffieHellmanGroup": 20, "LifeTimeInMinutes": 1440,
    }
    assert ikev2["ChildSecurityAssociationParameters"]["EncryptionAlgorithm"] == "AES-256-GCM"
    assert ikev2["ChildSecurityAssociationParameters"]["DiffieHellmanGroup"] == 20


def test_apple_error_when_no_suite_matches() -> None:
    gw = GatewayInfo("gw", "gw", ("aes256-aescmac-ecp384",), ("aes256gcm16",))
    with pytest.raises(ProfileError, match="Apple clients cannot match the gateway's IKE"):
        profiles.mobileconfig(gw, CLIENT)


def test_sswan_has_only_keys_the_android_app_reads() -> None:
    gw = gw_from(GATEWAY)
    doc = profiles.sswan_profile(gw, CLIENT)
    assert profiles.validate_sswan(doc) == []
    parsed = json.loads(profiles.sswan_text(doc))
    assert parsed["type"] == "ikev2-cert"
    assert parsed["remote"] == {
        "addr": "vpn.example.org", "id": "vpn.example.org",
        "cert": base64.b64encode(CLIENT.ca_der).decode(),
    }
    assert base64.b64decode(parsed["local"]["p12"]) == CLIENT.p12
    assert parsed["local"]["id"] == "alice"
    assert parsed["ike-proposal"] == "aes256gcm16-prfsha384-ecp384"
    assert parsed["esp-proposal"] == "aes256gcm16-ecp384"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d.pop("uuid"), "uuid: required"),
        (lambda d: d.update(uuid="nope"), "uuid: not an RFC 4122 UUID"),
        (lambda d: d.update(type="ikev2-psk"), "type: 'ikev2-psk' not one of"),
        (lambda d: d["remote"].pop("addr"), "remote.addr: required"),
        (lambda d: d["remote"].update(address="x"), "remote.address: not read by the app"),
        (lambda d: d.update(ike_proposal="x"), "ike_proposal: not read by the app"),
        (lambda d: d["local"].pop("p12"), "local.p12: an ikev2-cert profile needs"),
        (lambda d: d.update({"esp-proposal": "aes256-foo"}), "unknown algorithm keyword"),
        (lambda d: d.update({"split-tunneling": {"block-ip6": True}}),
         "split-tunneling.block-ip6: not read by the app"),
        (lambda d: d.update(proxy={"port": 8080}), "proxy.host: required"),
        (lambda d: d.update(proxy="proxy:8080"), "proxy: must be an object"),
    ],
)
def test_sswan_validator_catches_what_the_app_would_reject(mutate, problem) -> None:  # type: ignore[no-untyped-def]
    doc = profiles.sswan_profile(gw_from(GATEWAY), CLIENT)
    mutate(doc)
    assert any(problem in p for p in profiles.validate_sswan(doc)), profiles.validate_sswan(doc)


def test_sswan_leaves_charons_default_proposals_to_the_app() -> None:
    """`proposals = default` (or none) is a list charon expands, not a proposal the app's
    parser accepts: the keys are left out and the app uses its own defaults."""
    gw = GatewayInfo("gw", "gw", ike_proposals=("default",), esp_proposals=("default",))
    doc = profiles.sswan_profile(gw, CLIENT)
    assert "ike-proposal" not in doc and "esp-proposal" not in doc
    assert profiles.validate_sswan(doc) == []


def test_sswan_validator_knows_every_key_the_importer_reads() -> None:
    """Issue 12 item 15: `ipv6-transport`, `local.shared_secret` and `proxy` are read by
    the app's importer today; a profile using them is valid."""
    doc = profiles.sswan_profile(gw_from(GATEWAY), CLIENT)
    doc["ipv6-transport"] = True
    doc["local"]["shared_secret"] = "not-a-real-secret"
    doc["proxy"] = {"host": "proxy.example.org", "port": 3128, "exclusions": ["10.0.0.0/8"]}
    doc["split-tunneling"] = {"subnets": ["10.0.0.0/8"], "excluded": ["10.1.0.0/16"],
                              "block-ipv4": False, "block-ipv6": True}
    assert profiles.validate_sswan(doc) == []


def test_linux_profile_parses_and_carries_the_suites() -> None:
    gw = gw_from(GATEWAY)
    text = profiles.linux_swanctl_conf(gw, CLIENT, p12_password='p"w d', encap=True)
    root = parse_text(text)
    conn = root.section("connections.vpn-example-org")
    assert conn is not None
    assert conn.get("vips") == "0.0.0.0"
    assert conn.get("remote_addrs") == "vpn.example.org"
    assert conn.get("remote.id") == "vpn.example.org"  # exact: INITIAL_CONTACT is sent
    assert conn.get("local.id") == "alice"
    assert conn.get("proposals") == ",".join(gw.ike_proposals)
    assert conn.get("mobike") == "yes" and conn.get("encap") == "yes"
    assert conn.get("keyingtries") == "0"
    child = conn.section("children.vpn-example-org")
    assert child is not None
    assert child.get("esp_proposals") == "aes256gcm16-ecp384"
    assert (child.get("start_action"), child.get("dpd_action"), child.get("close_action")) == \
        ("start", "restart", "start")
    assert root.get("secrets.pkcs12-alice.secret") == 'p"w d'
    assert root.get("secrets.pkcs12-alice.file") == "alice.p12"
    snippet = profiles.keepalive_snippet(gw)
    import tomllib
    assert tomllib.loads(snippet)["keepalive"]["conns"] == ["vpn-example-org"]


def test_static_lease_conf_inherits_the_road_warrior_connection() -> None:
    gw = gw_from(GATEWAY)
    lease = profiles.StaticLease("alice", "10.8.0.2", "C=CH, O=x, CN=alice")
    text = profiles.gateway_static_conf(gw, lease)
    # parsed together with the gateway's file, as charon would see it via conf.d
    root = parse_text(GATEWAY + text)
    pinned = root.section("connections.alice")
    assert pinned is not None
    assert pinned.get("remote.id") == "C=CH, O=x, CN=alice"
    assert pinned.get("pools") == "alice"
    assert pinned.get("proposals") == "aes256gcm16-prfsha384-ecp384, aes256-sha256-modp2048"
    assert pinned.get("local.certs") == "gateway.pem"
    assert root.get("pools.alice.addrs") == "10.8.0.2"
    assert root.get("pools.alice.dns") == "1.1.1.1, 1.0.0.1"
    # the pinned connections do not confuse the road-warrior detection
    assert profiles.gateway_from_settings(root).conn_name == "rw"


def test_static_ip_must_be_outside_the_dynamic_pool() -> None:
    gw = gw_from(GATEWAY)
    assert profiles.check_static_ip(gw, "10.8.0.2") == "10.8.0.2"
    with pytest.raises(ProfileError, match=r"inside the dynamic pool 10\.8\.0\.128/25"):
        profiles.check_static_ip(gw, "10.8.0.200")
    with pytest.raises(ProfileError, match="not an IP address"):
        profiles.check_static_ip(gw, "ten")


def test_linux_profile_refuses_a_wildcard_gateway_id() -> None:
    gw = GatewayInfo("192.0.2.1", "*.example.org")
    with pytest.raises(ProfileError, match="INITIAL_CONTACT"):
        profiles.linux_swanctl_conf(gw, CLIENT, p12_password="x")


@pytest.mark.parametrize("name", ["home.t520", "a@b.c", "n" * 30 + "." + "x" * 28 + "@b.c"])
def test_every_artifact_of_a_dotted_name_parses(name: str) -> None:
    """Issue 12 item 11, at the renderers: swanctl section names lose the dot, file
    names keep it."""
    gw = gw_from(GATEWAY)
    client = dataclasses.replace(CLIENT, name=name, san=name)
    section = name.replace(".", "_")
    assert profiles.section_name(name) == section
    ps1 = profiles.windows_script(gw, client)
    assert f"Join-Path $PSScriptRoot '{name}.p12'" in ps1
    assert profiles.parse_windows_script(ps1)["DHGroup"] == "ECP384"
    assert profiles.validate_sswan(profiles.sswan_profile(gw, client)) == []
    linux = parse_text(profiles.linux_swanctl_conf(gw, client, p12_password="pw"))
    assert linux.get(f"secrets.pkcs12-{section}.file") == f"{name}.p12"
    lease = profiles.StaticLease(name, "10.8.0.2", name)
    both = parse_text(GATEWAY + profiles.gateway_static_conf(gw, lease))
    assert both.get(f"connections.{section}.pools") == section
    assert both.get(f"pools.{section}.addrs") == "10.8.0.2"
    with pytest.raises(ProfileError, match="already has a connection or pool named 'rw'"):
        profiles.gateway_static_conf(gw, profiles.StaticLease("rw", "10.8.0.2", "x"))


# --- IPv6: tunnelled when the gateway carries it, blocked when it does not -------------

GATEWAY6 = GATEWAY.replace(
    "local_ts = 0.0.0.0/0", "local_ts = 0.0.0.0/0, ::/0",
).replace("rw_pool { addrs = 10.8.0.128/25", "rw_pool { addrs = 10.8.0.128/25, fd00:8::/112")


@pytest.mark.parametrize("dual_stack", [False, True], ids=["ipv4-only", "dual-stack"])
def test_every_profile_keeps_ipv6_off_the_bare_network(dual_stack: bool) -> None:
    """Issue 12 item 12 / issue 13: a dual-stack client of an IPv4-only gateway sent all
    IPv6 around the tunnel. Each profile now tunnels IPv6 when the gateway does and
    blocks it while connected when it does not."""
    gw = gw_from(GATEWAY6 if dual_stack else GATEWAY)
    assert gw.tunnels_ipv6 is dual_stack
    # Android: the app lets IPv6 bypass a VPN without IPv6 unless told to block it
    doc = profiles.sswan_profile(gw, CLIENT)
    assert profiles.validate_sswan(doc) == []
    assert doc.get("split-tunneling") == (None if dual_stack else {"block-ipv6": True})
    # Windows: both halves of IPv6 into the tunnel either way (Algo's routes)
    ps1 = profiles.windows_script(gw, CLIENT)
    routes = [line for line in ps1.splitlines() if line.startswith("Add-VpnConnectionRoute")]
    assert routes == [
        f"Add-VpnConnectionRoute -ConnectionName 'vpn.example.org' -DestinationPrefix "
        f"'{prefix}' -AllUserConnection" for prefix in ("::/1", "8000::/1")
    ]
    assert ps1.index("Add-VpnConnection ") < ps1.index(routes[0])
    # Apple: all traffic through the tunnel when it has no IPv6, the LAN excepted
    vpn = plistlib.loads(profiles.mobileconfig(gw, CLIENT))["PayloadContent"][2]["IKEv2"]
    if dual_stack:
        assert "IncludeAllNetworks" not in vpn and "ExcludeLocalNetworks" not in vpn
    else:
        assert (vpn["IncludeAllNetworks"], vpn["ExcludeLocalNetworks"]) == (1, 1)
    # Linux: both families requested and routed, or IPv6 blocked by the child's updown
    root = parse_text(profiles.linux_swanctl_conf(gw, CLIENT, p12_password="pw"))
    conn = root.section("connections.vpn-example-org")
    assert conn is not None
    child = conn.section("children.vpn-example-org")
    assert child is not None
    if dual_stack:
        assert conn.get("vips") == "0.0.0.0, ::"
        assert child.get("remote_ts") == "0.0.0.0/0,::/0"
        assert child.get("updown") is None
    else:
        assert conn.get("vips") == "0.0.0.0"
        assert child.get("remote_ts") == "0.0.0.0/0"
        updown = child.get("updown") or ""
        assert "up-*) ip -6 route replace unreachable ::/1; " \
            "ip -6 route replace unreachable 8000::/1;;" in updown
        assert "down-*) ip -6 route del unreachable ::/1; " \
            "ip -6 route del unreachable 8000::/1;;" in updown


@pytest.mark.parametrize(("text", "why"), [
    (GATEWAY.replace("local_ts = 0.0.0.0/0", "local_ts = 0.0.0.0/0, ::/0"),
     r"local_ts has IPv6 \(0\.0\.0\.0/0, ::/0\) but the connection's pools have no IPv6"),
    (GATEWAY.replace("addrs = 10.8.0.128/25", "addrs = 10.8.0.128/25, fd00:8::/112"),
     "pools hand out IPv6 addresses but connections.rw.children.rw.local_ts"),
])
def test_half_an_ipv6_setup_is_refused_naming_the_file(text: str, why: str) -> None:
    """A ::/0 selector without a v6 pool gives clients no IPv6 address (they would leak
    it); a v6 pool without a v6 selector hands out addresses nothing can use."""
    with pytest.raises(ProfileError, match=why) as err:
        gw_from(text)
    assert str(err.value).startswith("<string>:")


def test_ipv6_selector_without_a_readable_pool_follows_the_selector() -> None:
    """A pool another plugin provides (attr-sql, dhcp) cannot be read: the selector
    decides."""
    text = GATEWAY6.replace("pools = rw_pool", "pools = sql_pool")
    assert gw_from(text).tunnels_ipv6


def test_a_pinned_client_of_a_dual_stack_gateway_keeps_its_ipv6_address() -> None:
    """The pinned connection overrides `pools`; with only the one-address IPv4 pool the
    client would get no IPv6 address and (the gateway tunnelling IPv6, its profiles not
    blocking it) send IPv6 around the tunnel. It keeps the road warriors' IPv6 pool."""
    gw = gw_from(GATEWAY6)
    assert (gw.ipv4_pools, gw.ipv6_pools) == (("rw_pool",), ("rw_pool",))
    text = GATEWAY6.replace("rw_pool { addrs = 10.8.0.128/25, fd00:8::/112",
                            "rw_pool { addrs = 10.8.0.128/25 }\n    rw6 { addrs = fd00:8::/112")
    text = text.replace("pools = rw_pool", "pools = rw_pool, rw6")
    gw = gw_from(text)
    assert (gw.ipv4_pools, gw.ipv6_pools) == (("rw_pool",), ("rw6",))
    root = parse_text(text + profiles.gateway_static_conf(
        gw, profiles.StaticLease("alice", "10.8.0.2", "alice")))
    assert root.get("connections.alice.pools") == "alice, rw6"
    root = parse_text(text + profiles.gateway_static_conf(
        gw, profiles.StaticLease("bob", "fd00:9::2", "bob")))
    assert root.get("connections.bob.pools") == "bob, rw_pool"
    # an IPv4-only gateway: the pinned pool alone, and no IPv6 address to pin
    v4 = gw_from(GATEWAY)
    root = parse_text(GATEWAY + profiles.gateway_static_conf(
        v4, profiles.StaticLease("carol", "10.8.0.3", "carol")))
    assert root.get("connections.carol.pools") == "carol"
    with pytest.raises(ProfileError, match="tunnels no IPv6"):
        profiles.check_static_ip(v4, "fd00:9::2")
