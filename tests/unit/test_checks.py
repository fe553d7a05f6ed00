"""`swand check`: for each finding a minimal configuration that triggers it and one that
does not. Certificates are made here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swand.cli import main
from swand.core import checks, profiles
from swand.core.checks import CheckInput, CredentialFile, SystemFacts

settings = pytest.importorskip("swand.core.settings")
if not hasattr(settings, "parse_text"):  # pragma: no cover - until the parser lands
    pytest.skip("settings parser not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

# --- certificates -----------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swand test"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


class CA:
    def __init__(self, cn: str = "test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        self.name = _name(cn)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 400 * DAY).not_valid_after(NOW + 4000 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA384())
        )

    def issue(
        self, cn: str, *, dns: tuple[str, ...] = (), server: bool = True,
        ike_intermediate: bool = True, curve: ec.EllipticCurve | None = None,
        not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM)."""
        key = ec.generate_private_key(curve or ec.SECP384R1())
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server and ike_intermediate:
            ekus.append(checks.IKE_INTERMEDIATE)
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - DAY)
            .not_valid_after(not_after or NOW + 365 * DAY)
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        )
        if dns:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        cert = builder.sign(self.key, hashes.SHA384())
        return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def gateway(ca: CA) -> tuple[bytes, bytes]:
    return ca.issue("gateway", dns=("vpn.example.org",))


# --- configurations ---------------------------------------------------------------------

GATEWAY_CONF = """
connections {
    rw {
        version = 2
        proposals = %(proposals)s
        rekey_time = 0
        pools = rw_pool
        local {
            auth = pubkey
            certs = gateway.pem
            id = %(local_id)s
        }
        remote {
            auth = pubkey
        }
        children {
            rw {
                local_ts = 0.0.0.0/0
                esp_proposals = %(esp)s
                rekey_time = 0
            }
        }
    }
}
pools {
    rw_pool {
        addrs = 10.8.0.128/25
    }
}
"""


def conf(
    proposals: str = "aes256-sha384-prfsha384-ecp384", esp: str = "aes256gcm16-ecp384",
    local_id: str = "vpn.example.org", extra: str = "",
) -> str:
    return GATEWAY_CONF % {"proposals": proposals, "esp": esp, "local_id": local_id} + extra


def make_input(
    text: str, gateway: tuple[bytes, bytes] | None, ca: CA | None, *,
    certs: tuple[CredentialFile, ...] = (), key_mode: int = 0o600, windows: str = "auto",
    key: bytes | None = None,
) -> CheckInput:
    tree = settings.parse_text(text, "swanctl.conf")
    own: tuple[CredentialFile, ...] = ()
    keys: tuple[CredentialFile, ...] = ()
    if gateway is not None:
        own = (CredentialFile("x509/gateway.pem", gateway[0]),)
        keys = (CredentialFile("private/gateway.pem", key or gateway[1], key_mode),)
    cas = (CredentialFile("x509ca/ca.pem", ca.pem),) if ca else ()
    return CheckInput(tree=tree, conf_file="swanctl.conf", certs=own + certs, cas=cas,
                      keys=keys, windows=windows, now=NOW)


def codes(findings: list[checks.Finding]) -> dict[str, str]:
    """code -> severity (the worst one if a code appears twice)."""
    out: dict[str, str] = {}
    for f in findings:
        if out.get(f.code) != "error":
            out[f.code] = f.severity
    return out


def run_all(inp: CheckInput, facts: SystemFacts | None = None,
            firewall_enabled: bool = True) -> dict[str, str]:
    return codes(checks.run_checks(inp, facts, firewall_enabled))


# --- a clean gateway --------------------------------------------------------------------


def test_clean_gateway_has_no_findings(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    assert checks.run_checks(make_input(conf(), gateway, ca)) == []


def test_reference_setup_is_clean(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    """etc/swanctl/swanctl.conf with matching credentials: nothing to report."""
    tree = settings.parse_file(ROOT / "etc" / "swanctl" / "swanctl.conf")
    inp = CheckInput(
        tree=tree, conf_file="swanctl.conf",
        certs=(CredentialFile("x509/gateway.pem", gateway[0]),),
        cas=(CredentialFile("x509ca/ca.pem", ca.pem),),
        keys=(CredentialFile("private/gateway.pem", gateway[1]),), now=NOW,
    )
    facts = SystemFacts(addresses=(ipaddress.ip_interface("192.0.2.1/24"),))
    assert checks.run_checks(inp, facts) == []


# --- proposals --------------------------------------------------------------------------


@pytest.mark.parametrize(("proposals", "esp", "bad"), [
    ("aes256-sha384-prfsha384-ecp384-foo", "aes256gcm16", "unknown algorithm keyword 'foo'"),
    ("aes256-sha384", "aes256gcm16", "key exchange"),
    ("aes256gcm16-ecp384", "aes256gcm16", "PRF"),
    ("aes256-ecp384", "aes256gcm16", "integrity"),
    ("aes256-sha384-ecp384", "aes256gcm16-aes256-sha256", "mixes AEAD"),
    ("aes256-sha384-ecp384", "aes256gcm17", "unknown"),
])
def test_invalid_proposals(ca: CA, gateway: tuple[bytes, bytes], proposals: str, esp: str,
                           bad: str) -> None:
    found = checks.check_proposals(make_input(conf(proposals, esp), gateway, ca))
    assert [f.code for f in found if f.code == "proposal-invalid"], found
    assert any(bad in f.message for f in found), found
    assert found[0].line > 0 and found[0].severity == "error"


@pytest.mark.parametrize(("proposals", "esp"), [
    ("aes256-sha384-prfsha384-ecp384", "aes256gcm16-ecp384"),
    ("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
    ("aes256gcm16-sha384-ecp384", "aes256gcm16-sha256"),  # charon takes these
    ("default", "default"),
    ("aes128-sha256-ecp256,aes256-sha384-ecp384-esn", "aes256-sha256-esn-noesn"),
])
def test_valid_proposals(ca: CA, gateway: tuple[bytes, bytes], proposals: str,
                         esp: str) -> None:
    assert checks.check_proposals(make_input(conf(proposals, esp), gateway, ca)) == []


def test_windows_ike_suite(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    text = conf(proposals="aes256-sha512-prfsha512-ecp521")
    assert codes(checks.check_proposals(make_input(text, gateway, ca))) == {
        "windows-ike": "warning"}
    assert codes(checks.check_proposals(make_input(text, gateway, ca, windows="yes"))) == {
        "windows-ike": "error"}
    assert checks.check_proposals(make_input(text, gateway, ca, windows="no")) == []
    # one Windows-capable proposal among several is enough
    ok = conf(proposals="aes256-sha512-prfsha512-ecp521, aes256-sha384-prfsha384-ecp384")
    assert checks.check_proposals(make_input(ok, gateway, ca)) == []


def test_windows_esp_suite(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    found = checks.check_proposals(make_input(conf(esp="aes256-sha384"), gateway, ca))
    assert codes(found) == {"windows-esp": "warning"}
    assert checks.check_proposals(make_input(conf(esp="aes256-sha256"), gateway, ca)) == []
    curve = checks.check_proposals(make_input(conf(esp="aes256gcm16-curve25519"), gateway, ca))
    assert codes(curve) == {"windows-esp": "warning"}


def test_windows_not_assumed_for_site_to_site(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    text = conf(proposals="aes256-sha512-ecp521").replace("pools = rw_pool", "")
    assert checks.check_proposals(make_input(text, gateway, ca)) == []


def test_client_cert_curve_must_match_ike_group(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    p256 = ca.issue("laptop", server=False, curve=ec.SECP256R1())[0]
    p384 = ca.issue("phone", server=False)[0]
    bad = make_input(conf(), gateway, ca, certs=(CredentialFile("x509/laptop.pem", p256),))
    found = checks.check_client_cert_curves(bad)
    assert codes(found) == {"cert-curve-dh": "warning"}
    assert "secp256r1" in found[0].message and "ecp256" in found[0].fix
    good = make_input(conf(), gateway, ca, certs=(CredentialFile("x509/phone.pem", p384),))
    assert checks.check_client_cert_curves(good) == []
    both = make_input(conf(proposals="aes256-sha384-prfsha384-ecp384-ecp256"), gateway, ca,
                      certs=(CredentialFile("x509/laptop.pem", p256),))
    assert checks.check_client_cert_curves(both) == []


def test_issued_client_certs_are_checked_too(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    """`swand client add` keeps what it issued in swand-clients/ (charon never loads it)."""
    p256 = ca.issue("laptop", server=False, curve=ec.SECP256R1())[0]
    inp = replace(make_input(conf(), gateway, ca),
                  clients=(CredentialFile("swand-clients/laptop.pem", p256),))
    found = checks.check_client_cert_curves(inp)
    assert codes(found) == {"cert-curve-dh": "warning"}
    assert "swand-clients/laptop.pem" in found[0].message
    # a connection pinned to another client's DN never sees the laptop's certificate
    pinned = conf().replace("auth = pubkey\n        }\n        children",
                            'auth = pubkey\n            id = "C=CH, O=swand test, CN=t520"'
                            "\n        }\n        children")
    assert 'CN=t520' in pinned
    inp = replace(make_input(pinned, gateway, ca),
                  clients=(CredentialFile("swand-clients/laptop.pem", p256),))
    assert checks.check_client_cert_curves(inp) == []


def test_client_side_curve(ca: CA) -> None:
    """On the client (the home server), its own certificate is the client certificate."""
    cert, key = ca.issue("t520", server=False, curve=ec.SECP256R1())
    text = (ROOT / "etc" / "swanctl-client" / "swanctl.conf").read_text()
    tree = settings.parse_text(text, "swanctl.conf")
    inp = CheckInput(tree=tree, conf_file="swanctl.conf",
                     certs=(CredentialFile("x509/t520.pem", cert),),
                     cas=(CredentialFile("x509ca/ca.pem", ca.pem),),
                     keys=(CredentialFile("private/t520.pem", key),), now=NOW)
    assert codes(checks.check_client_cert_curves(inp)) == {"cert-curve-dh": "warning"}
    cert384, _ = ca.issue("t520", server=False)
    inp = replace(inp, certs=(CredentialFile("x509/t520.pem", cert384),))
    assert checks.check_client_cert_curves(inp) == []


# --- rekeying ---------------------------------------------------------------------------


def test_rekey_time_on_road_warrior(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    text = conf().replace("rekey_time = 0", "rekey_time = 4h", 1)
    found = checks.check_rekey(make_input(text, gateway, ca))
    assert codes(found) == {"rekey-responder": "warning"}
    assert found[0].line == 6
    # unset means charon's default (4h IKE, 1h CHILD): both reported
    unset = conf().replace("rekey_time = 0\n", "")
    assert len(checks.check_rekey(make_input(unset, gateway, ca))) == 2
    assert checks.check_rekey(make_input(conf(), gateway, ca)) == []
    site = text.replace("pools = rw_pool", "")
    assert checks.check_rekey(make_input(site, gateway, ca)) == []


# --- the gateway certificate ------------------------------------------------------------


def test_local_id_not_in_san(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    found = run_all(make_input(conf(local_id="vpn.example.net"), gateway, ca))
    assert found == {"cert-id": "error"}
    assert run_all(make_input(conf(local_id="@vpn.example.org"), gateway, ca)) == {}
    # a DN id must be the subject
    assert run_all(make_input(conf(local_id='"C=CH, O=swand test, CN=gateway"'),
                              gateway, ca)) == {}
    assert run_all(make_input(conf(local_id='"C=CH, O=other, CN=gateway"'),
                              gateway, ca)) == {"cert-id": "error"}


def test_local_id_unset(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    text = conf().replace("id = vpn.example.org\n", "")
    found = checks.check_certificates(make_input(text, gateway, ca))
    assert codes(found) == {"cert-id-unset": "warning"}
    assert "id = vpn.example.org" in found[0].fix


def test_server_eku(ca: CA) -> None:
    no_server = ca.issue("gw", dns=("vpn.example.org",), server=False)
    found = codes(checks.check_certificates(make_input(conf(), no_server, ca)))
    assert found["cert-eku-server"] == "error"
    no_ike = ca.issue("gw", dns=("vpn.example.org",), ike_intermediate=False)
    assert codes(checks.check_certificates(make_input(conf(), no_ike, ca))) == {
        "cert-eku-ike-intermediate": "warning"}


def test_validity(ca: CA) -> None:
    def with_dates(nb: dt.datetime, na: dt.datetime) -> dict[str, str]:
        cert = ca.issue("gw", dns=("vpn.example.org",), not_before=nb, not_after=na)
        return codes(checks.check_certificates(make_input(conf(), cert, ca)))

    assert with_dates(NOW - 100 * DAY, NOW - DAY) == {"cert-expired": "error"}
    assert with_dates(NOW + DAY, NOW + 100 * DAY) == {"cert-not-yet-valid": "error"}
    assert with_dates(NOW - DAY, NOW + 10 * DAY) == {"cert-expiring": "warning"}
    assert with_dates(NOW - DAY, NOW + 31 * DAY) == {}


def test_chain_to_loaded_ca(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    other = CA("other CA")
    assert codes(checks.check_certificates(make_input(conf(), gateway, other))) == {
        "cert-chain": "error"}
    assert codes(checks.check_certificates(make_input(conf(), gateway, None))) == {
        "cert-chain": "error"}
    assert checks.check_certificates(make_input(conf(), gateway, ca)) == []


def test_private_key(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    other_key = ca.issue("x")[1]
    found = checks.check_certificates(make_input(conf(), gateway, ca, key=other_key))
    assert codes(found) == {"key-missing": "error"}
    encrypted = serialization.load_pem_private_key(gateway[1], None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"not-a-real-secret"))
    found = checks.check_certificates(make_input(conf(), gateway, ca, key=encrypted))
    assert codes(found) == {"key-unverified": "warning"}
    assert "not-a-real-secret" not in str(found)


def test_cert_missing(ca: CA) -> None:
    found = checks.check_certificates(make_input(conf(), None, ca))
    assert codes(found) == {"cert-missing": "error"}


@pytest.mark.parametrize(("mode", "expected"), [
    (0o644, {"key-mode": "error"}), (0o640, {"key-mode": "warning"}), (0o600, {}),
    (0o400, {}),
])
def test_key_mode(ca: CA, gateway: tuple[bytes, bytes], mode: int,
                  expected: dict[str, str]) -> None:
    assert codes(checks.check_key_modes(make_input(conf(), gateway, ca,
                                                   key_mode=mode))) == expected


# --- pools and identities ---------------------------------------------------------------


POOLS_EXTRA = """
pools {
    second {
        addrs = %s
    }
}
"""


def test_pools_overlap(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    bad = make_input(conf(extra=POOLS_EXTRA % "10.8.0.200-10.8.0.210"), gateway, ca)
    assert codes(checks.check_pools(bad)) == {"pool-overlap": "error"}
    ok = make_input(conf(extra=POOLS_EXTRA % "10.8.0.1/32"), gateway, ca)
    assert checks.check_pools(ok) == []
    # the network and broadcast addresses of a subnet are never handed out
    edge = make_input(conf(extra=POOLS_EXTRA % "10.8.0.255/32"), gateway, ca)
    assert checks.check_pools(edge) == []


def test_pool_holds_gateway_address(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    inp = make_input(conf(), gateway, ca)
    inside = SystemFacts(addresses=(ipaddress.ip_interface("10.8.0.130/32"),))
    assert codes(checks.check_pools(inp, inside)) == {"pool-gateway-address": "error"}
    lan = SystemFacts(addresses=(ipaddress.ip_interface("10.8.0.5/24"),))
    assert codes(checks.check_pools(inp, lan)) == {"pool-gateway-subnet": "warning"}
    elsewhere = SystemFacts(addresses=(ipaddress.ip_interface("192.0.2.1/24"),
                                       ipaddress.ip_interface("127.0.0.1/8")))
    assert checks.check_pools(inp, elsewhere) == []


PINNED = """
connections {
    %(name)s {
        pools = pin
        rekey_time = 0
        local {
            certs = gateway.pem
            id = vpn.example.org
        }
        remote {
            id = "%(rid)s"
        }
    }
}
pools {
    pin {
        addrs = 10.8.0.1
    }
}
"""


def test_single_address_pool_shared(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    one = PINNED % {"name": "t520", "rid": "C=CH, O=swand test, CN=t520"}
    assert checks.check_pools(make_input(one, gateway, ca)) == []
    two = one + (PINNED % {"name": "x220", "rid": "C=CH, O=swand test, CN=x220"}).split(
        "pools {")[0]
    assert codes(checks.check_pools(make_input(two, gateway, ca))) == {
        "pool-single-shared": "error"}
    anyone = PINNED % {"name": "t520", "rid": "%any"}
    assert codes(checks.check_pools(make_input(anyone, gateway, ca))) == {
        "pool-single-any": "warning"}


def test_two_connections_same_remote_id(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    a = PINNED % {"name": "t520", "rid": "C=CH, O=swand test, CN=t520"}
    b = (PINNED % {"name": "t520b", "rid": "C=CH,O=swand test,CN=t520"}).split("pools {")[0]
    found = checks.check_remote_ids(make_input(a + b, gateway, ca))
    assert codes(found) == {"remote-id-duplicate": "error"}
    assert "'t520'" in found[0].message
    c = (PINNED % {"name": "x220", "rid": "C=CH, O=swand test, CN=x220"}).split("pools {")[0]
    assert checks.check_remote_ids(make_input(a + c, gateway, ca)) == []
    # the reference setup: roadwarriors (%any) and t520 (a DN) do not collide
    assert checks.check_remote_ids(make_input(conf() + a.replace("pools = pin", ""),
                                              gateway, ca)) == []


# --- the running system, when swand's firewall is off -----------------------------------

IPTABLES_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.8.0.128/25 -o eth0 -j MASQUERADE
COMMIT
*mangle
-A FORWARD -s 10.8.0.128/25 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1360
COMMIT
"""
NFT_NAT = """table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.8.0.0/24 oifname "eth0" masquerade
    }
}
table inet filter {
    chain forward {
        tcp flags syn tcp option maxseg size set 1360
    }
}
"""


def test_system_when_firewall_off(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    inp = make_input(conf(), gateway, ca)
    bare = SystemFacts(ip_forward=False, rulesets=("*nat\n:POSTROUTING ACCEPT [0:0]\n",))
    assert codes(checks.check_system(inp, bare, firewall_enabled=False)) == {
        "system-ip-forward": "warning", "system-nat": "warning", "system-mss": "warning"}
    assert all("yourself" in f.message for f in
               checks.check_system(inp, bare, firewall_enabled=False))
    for ruleset in (IPTABLES_NAT, NFT_NAT):
        done = SystemFacts(ip_forward=True, rulesets=(ruleset,))
        assert checks.check_system(inp, done, firewall_enabled=False) == []
    other_pool = SystemFacts(ip_forward=True, rulesets=(IPTABLES_NAT.replace(
        "10.8.0.128/25", "192.168.0.0/24"),))
    assert codes(checks.check_system(inp, other_pool, firewall_enabled=False)) == {
        "system-nat": "warning"}
    # swand's firewall on: swand does all this itself; unknown facts: no guessing
    assert checks.check_system(inp, bare, firewall_enabled=True) == []
    assert checks.check_system(inp, SystemFacts(), firewall_enabled=False) == []


def test_client_without_pools_needs_no_forwarding(ca: CA) -> None:
    text = (ROOT / "etc" / "swanctl-client" / "swanctl.conf").read_text()
    inp = CheckInput(tree=settings.parse_text(text, "swanctl.conf"), conf_file="swanctl.conf")
    bare = SystemFacts(ip_forward=False, rulesets=("",))
    assert checks.check_system(inp, bare, firewall_enabled=False) == []


# --- the command --------------------------------------------------------------------------


@pytest.fixture
def swanctl_dir(tmp_path: Path, ca: CA, gateway: tuple[bytes, bytes]) -> Path:
    d = tmp_path / "swanctl"
    shutil.copytree(ROOT / "etc" / "swanctl", d)
    for sub in ("x509", "x509ca", "private"):
        (d / sub).mkdir(exist_ok=True)
    (d / "x509" / "gateway.pem").write_bytes(gateway[0])
    (d / "x509ca" / "ca.pem").write_bytes(ca.pem)
    key = d / "private" / "gateway.pem"
    key.write_bytes(gateway[1])
    os.chmod(key, 0o600)
    return d


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", "--no-system", *argv])
    return code, capsys.readouterr().out


def test_command_clean(swanctl_dir: Path, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir))
    # the test CA's certificate is valid around NOW (2026-06); what matters is no error
    assert code == 0, out
    assert "0 errors" in out


def test_command_errors_exit_1_and_json(swanctl_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    os.chmod(swanctl_dir / "private" / "gateway.pem", 0o644)
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["errors"] >= 1
    bad = [f for f in doc["findings"] if f["code"] == "key-mode"]
    assert bad and bad[0]["file"] == str(swanctl_dir / "private" / "gateway.pem")
    assert bad[0]["fix"].startswith("chmod 600")


def test_command_syntax_error_names_file_and_line(
    swanctl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    conf_file = swanctl_dir / "swanctl.conf"
    conf_file.write_text("connections {\n    rw {\n        version = 2\n")
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir))
    assert code == 1
    assert str(conf_file) + ":" in out and "error" in out


def test_command_reports_swand_toml_errors(
    swanctl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "swand.toml"
    cfg.write_text("[firewall]\nenabeld = false\n")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir))
    assert code == 1
    assert "enabeld" in out and str(cfg) in out


def test_command_reports_loader_errors(
    swanctl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (swanctl_dir / "x509" / "gateway.pem").unlink()
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir), "--json")
    assert code == 1
    doc = json.loads(out)
    assert any("gateway.pem" in f["message"] for f in doc["findings"]), doc


def test_command_unreadable_keys_are_one_clear_error(
    swanctl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a non-root user: no false "key missing", one error saying why."""
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.parent.name == "private":
            raise PermissionError(13, "Permission denied")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir), "--json")
    assert code == 1
    doc = json.loads(out)
    assert [f["code"] for f in doc["findings"]] == ["unreadable"]
    assert "Permission denied" in doc["findings"][0]["message"]


def test_command_certificate_by_absolute_path(
    swanctl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = tmp_path / "elsewhere.pem"
    (swanctl_dir / "x509" / "gateway.pem").rename(elsewhere)
    conf_file = swanctl_dir / "swanctl.conf"
    conf_file.write_text(conf_file.read_text().replace("certs = gateway.pem",
                                                       f"certs = {elsewhere}"))
    cfg = tmp_path / "swand.toml"
    cfg.write_text("")
    code, out = _check(capsys, "-c", str(cfg), "--swanctl-dir", str(swanctl_dir), "--json")
    doc = json.loads(out)
    assert code == 0, doc
    assert not [f for f in doc["findings"] if f["code"].startswith(("cert", "key", "load"))]


def test_charon6_key_exchanges_are_a_version_warning(ca: CA,
                                                     gateway: tuple[bytes, bytes]) -> None:
    text = conf(proposals="aes256-sha384-ecp384-ke1_mlkem768",
                esp="aes256gcm16-ecp384-ke1_mlkem768")
    found = checks.check_proposals(make_input(text, gateway, ca))
    assert codes(found) == {"proposal-charon6": "warning"}
    assert "charon 6.0" in found[0].message
    pure = checks.check_proposals(make_input(conf(proposals="aes256-sha384-mlkem768"),
                                             gateway, ca))
    assert "proposal-invalid" not in codes(pure)
    bogus = checks.check_proposals(make_input(conf(proposals="aes256-sha384-ecp384-ke1_foo"),
                                              gateway, ca))
    assert codes(bogus)["proposal-invalid"] == "error"


GROUPS = """
connections {
    %(name)s {
        pools = rw_pool
        rekey_time = 0
        local {
            certs = gateway.pem
            id = vpn.example.org
        }
        remote {
            auth = pubkey
            %(constraint)s
        }
    }
}
"""


def test_remote_id_constraints_and_address_pins_tell_connections_apart(
    ca: CA, gateway: tuple[bytes, bytes],
) -> None:
    a = GROUPS % {"name": "finance", "constraint": "groups = finance"}
    b = GROUPS % {"name": "sales", "constraint": "groups = sales"}
    assert checks.check_remote_ids(make_input(a + b, gateway, ca)) == []
    same = GROUPS % {"name": "sales", "constraint": "groups = finance"}
    assert codes(checks.check_remote_ids(make_input(a + same, gateway, ca))) == {
        "remote-id-duplicate": "warning"}  # %any: a warning, not an error
    # connections bound to a peer address are chosen by address first
    site = same.replace("pools = rw_pool", "remote_addrs = 203.0.113.7")
    assert checks.check_remote_ids(make_input(a + site, gateway, ca)) == []
    pinned = (PINNED % {"name": "carol", "rid": "%any"}).replace(
        "pools = pin", "pools = pin\n        remote_addrs = carol.example.org")
    assert checks.check_pools(make_input(pinned, gateway, ca)) == []


def test_client_certificate_chain_is_the_peers_business(ca: CA) -> None:
    """On a client, the local certificate may chain through intermediates the gateway
    holds: no cert-chain finding (validity and key are still checked)."""
    other = CA("another CA")
    cert, key = other.issue("t520", server=False)
    text = (ROOT / "etc" / "swanctl-client" / "swanctl.conf").read_text().replace(
        '"C=CH, O=swand lab, CN=t520"', '"C=CH, O=swand test, CN=t520"')
    inp = CheckInput(tree=settings.parse_text(text, "swanctl.conf"), conf_file="swanctl.conf",
                     certs=(CredentialFile("x509/t520.pem", cert),),
                     cas=(CredentialFile("x509ca/ca.pem", ca.pem),),
                     keys=(CredentialFile("private/t520.pem", key),), now=NOW)
    assert checks.check_certificates(inp) == []


def test_keepalive_names_must_exist(ca: CA) -> None:
    text = (ROOT / "etc" / "swanctl-client" / "swanctl.conf").read_text()
    tree = settings.parse_text(text, "swanctl.conf")
    ok = CheckInput(tree=tree, conf_file="swanctl.conf", keepalive=("home",))
    assert checks.check_keepalive(ok) == []
    typo = CheckInput(tree=tree, conf_file="swanctl.conf", keepalive=("hmoe",),
                      swand_toml="/etc/swand/swand.toml")
    found = checks.check_keepalive(typo)
    assert codes(found) == {"keepalive-unknown": "error"}
    assert found[0].file == "/etc/swand/swand.toml" and "home" in found[0].message


def test_shipped_client_pair_is_consistent(tmp_path: Path, ca: CA,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """etc/swand/swand-client.toml keeps up what etc/swanctl-client/swanctl.conf defines."""
    d = tmp_path / "swanctl"
    shutil.copytree(ROOT / "etc" / "swanctl-client", d)
    _, out = _check(capsys, "-c", str(ROOT / "etc" / "swand" / "swand-client.toml"),
                       "--swanctl-dir", str(d), "--json")
    doc = json.loads(out)
    assert "keepalive-unknown" not in {f["code"] for f in doc["findings"]}


@pytest.mark.parametrize("proposals", [
    "aes256-sha1-prfsha384-ecp384",  # Windows uses one hash for integrity and PRF
    "aes256gcm16-sha256-prfsha512-ecp384",  # AEAD: charon takes the explicit PRF only
])
def test_windows_ike_verdict_is_the_one_client_add_acts_on(
    ca: CA, gateway: tuple[bytes, bytes], proposals: str,
) -> None:
    found = checks.check_proposals(make_input(conf(proposals=proposals), gateway, ca))
    assert codes(found) == {"windows-ike": "warning"}
    with pytest.raises(profiles.ProfileError, match="Windows cannot match"):
        profiles.windows_params(profiles.GatewayInfo("gw", "gw", ike_proposals=(proposals,)))


def test_windows_esp_without_pfs(ca: CA, gateway: tuple[bytes, bytes]) -> None:
    """`modpnone`/`none` (no PFS) is valid and Windows' PfsGroup None: check and client
    add agree."""
    for esp in ("aes256gcm16-modpnone", "aes256-sha256-none"):
        assert checks.check_proposals(make_input(conf(esp=esp), gateway, ca)) == []
        params = profiles.windows_params(profiles.GatewayInfo("gw", "gw", esp_proposals=(esp,)))
        assert params.pfs_group == "None"


def test_windows_verdicts_agree_everywhere() -> None:
    """`swand check` warns exactly when `swand client add` cannot make a Windows profile."""
    for kind, parts in (
        ("ike", (["aes128", "aes256", "aes192gcm16", "aes256gcm16", "3des", "des",
                  "camellia256"],
                 ["", "sha1", "sha256", "sha384", "sha512", "md5", "sha256_96"],
                 ["", "prfsha256", "prfsha384", "prfsha512"],
                 ["ecp384", "modp2048", "curve25519", "ecp521"])),
        ("esp", (["aes128", "aes256gcm16", "aes192gcm16", "chacha20poly1305", "null"],
                 ["", "sha1", "sha256", "sha384", "md5"],
                 ["", "ecp384", "modp2048", "curve25519", "modpnone", "none"],
                 ["", "esn", "noesn"])),
    ):
        for combo in itertools.product(*parts):
            text = "-".join(t for t in combo if t)
            (p,) = checks.parse_proposals(text)
            if checks.proposal_problem(p, kind) is not None:
                continue
            gw = (profiles.GatewayInfo("gw", "gw", ike_proposals=(text,)) if kind == "ike"
                  else profiles.GatewayInfo("gw", "gw", esp_proposals=(text,)))
            try:
                profiles.windows_params(gw)
                client_add = True
            except profiles.ProfileError:
                client_add = False
            assert checks.windows_can_negotiate(p, kind) == client_add, (kind, text)
