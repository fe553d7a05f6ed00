"""`swand pki` and `swand client` on files: certificates, PKCS#12, modes, CRL (no charon)."""

from __future__ import annotations

import base64
import json
import os
import plistlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from swand.adapters import pki_files
from swand.adapters.pki_files import IKE_INTERMEDIATE, PkiError, SwanctlPki
from swand.cli import main
from swand.core import profiles
from swand.core.settings import parse_file

ETC_SWANCTL = Path(__file__).resolve().parents[2] / "etc" / "swanctl" / "swanctl.conf"
CA_DN = "C=CH, O=swand test, CN=swand test Root CA"
NO_VICI = "unix:///nonexistent/charon.vici"

#: PKCS#12 algorithms every client platform imports: Windows 7+/Server 2012+, Android's
#: KeyChain on every version the strongSwan app supports, iOS/macOS of any age
LEGACY_ALGORITHMS = {"pbeWithSHA1And3-KeyTripleDES-CBC"}
#: OpenSSL 3's default; Windows 10 1709+, Android 12+ (Conscrypt), iOS 17 / macOS 14+
MODERN_ALGORITHMS = {"PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def swanctl(tmp_path: Path) -> Path:
    d = tmp_path / "swanctl"
    (d / "conf.d").mkdir(parents=True)
    shutil.copy(ETC_SWANCTL, d / "swanctl.conf")
    return d


def swand(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture
def ca(swanctl: Path, capsys: pytest.CaptureFixture[str]) -> SwanctlPki:
    old = os.umask(0)  # the worst umask: modes must still be right
    try:
        assert swand("pki", "--swanctl-dir", str(swanctl), "init", "--dn", CA_DN) == 0
        assert swand("pki", "--swanctl-dir", str(swanctl), "gateway",
                     "--id", "vpn.example.org") == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert "PRIVATE KEY" not in out
    return SwanctlPki(swanctl)


def add_client(swanctl: Path, out: Path, name: str, *extra: str) -> int:
    return swand("client", "--swanctl-dir", str(swanctl), "add", name, "--out", str(out),
                 *extra)


def openssl_info(p12: Path, password_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-in", str(p12),
         "-passin", f"file:{password_file}", *extra],
        capture_output=True, text=True, check=False,
    )


def algorithms(info: str) -> set[str]:
    found = set()
    for line in info.splitlines():
        for prefix in ("PKCS7 Encrypted data: ", "Shrouded Keybag: "):
            if line.startswith(prefix):
                found.add(line[len(prefix):].split(", Iteration")[0]
                          if "PBES2" not in line else line[len(prefix):])
    return found


def test_ca_and_gateway(ca: SwanctlPki) -> None:
    assert mode(ca.ca_key) == 0o600 and mode(ca.gateway_key) == 0o600
    assert mode(ca.ca_cert) == 0o644
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    assert pki_files.dn_string(ca_cert.subject) == CA_DN
    assert isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey)
    assert ca_cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    gw = x509.load_pem_x509_certificate(ca.gateway_cert.read_bytes())
    san = gw.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["vpn.example.org"]
    ekus = list(gw.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == [ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE]
    gw.verify_directly_issued_by(ca_cert)
    # the files the reference swanctl.conf names
    gwinfo = profiles.gateway_from_settings(parse_file(ca.root / "swanctl.conf"))
    assert gwinfo.cert_file == ca.gateway_cert.name


def test_refuses_to_overwrite(ca: SwanctlPki, capsys: pytest.CaptureFixture[str]) -> None:
    before = ca.ca_key.read_bytes()
    assert swand("pki", "--swanctl-dir", str(ca.root), "init", "--dn", CA_DN) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert ca.ca_key.read_bytes() == before
    assert swand("pki", "--swanctl-dir", str(ca.root), "gateway", "--id", "x.example") == 1
    with pytest.raises(PkiError, match="exists; refusing"):
        pki_files.write_private(ca.ca_key, b"x")


def test_gateway_by_ip_has_the_ip_as_dns_san_too(tmp_path: Path) -> None:
    pki = SwanctlPki(tmp_path)
    pki_files.init_ca(pki, CA_DN, use_rsa=True)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert isinstance(ca_cert.public_key(), rsa.RSAPublicKey)
    cert = pki_files.issue_gateway(pki, "192.0.2.1", ["vpn.example.org"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    assert san.get_values_for_type(x509.DNSName) == ["192.0.2.1", "vpn.example.org"]


def test_client_add_writes_every_profile(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert add_client(ca.root, out, "alice") == 0
    stdout = capsys.readouterr().out
    password = stdout.split("PKCS#12 password (shown once): ")[1].strip()
    assert "PRIVATE KEY" not in stdout
    files = {p.name: mode(p) for p in out.iterdir()}
    assert files == {
        "alice.p12": 0o600, "alice.sswan": 0o600, "alice.mobileconfig": 0o600,
        "alice.swanctl.conf": 0o600, "alice.ps1": 0o644, "alice.swand.toml": 0o644,
    }
    # no client key is kept on the gateway, only the certificate
    assert not any("alice" in p.name for p in (ca.root / "private").iterdir())
    loaded = pkcs12.load_pkcs12((out / "alice.p12").read_bytes(), password.encode())
    assert loaded.key is not None and loaded.cert is not None
    cert = loaded.cert.certificate
    assert pki_files.dn_string(cert.subject) == "C=CH, O=swand test, CN=alice"
    # the reference gateway negotiates ECP384 with Windows: a P-384 key
    assert cert.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert [c.certificate.subject for c in loaded.additional_certs] == [
        x509.load_pem_x509_certificate(ca.ca_cert.read_bytes()).subject
    ]
    sswan = json.loads((out / "alice.sswan").read_text())
    assert profiles.validate_sswan(sswan) == []
    mc = plistlib.loads((out / "alice.mobileconfig").read_bytes())
    assert mc["PayloadContent"][0]["PayloadContent"] == (out / "alice.p12").read_bytes()
    ps1 = (out / "alice.ps1").read_text()
    assert profiles.parse_windows_script(ps1)["DHGroup"] == "ECP384"
    assert password not in ps1 and password not in json.dumps(sswan)
    # a second add of the same name is refused, nothing changes
    before = (out / "alice.p12").read_bytes()
    assert add_client(ca.root, tmp_path / "out2", "alice") == 1
    assert "exists" in capsys.readouterr().err
    assert (out / "alice.p12").read_bytes() == before
    assert not (tmp_path / "out2").exists()


def test_legacy_p12_opens_with_openssl(ca: SwanctlPki, tmp_path: Path) -> None:
    """Legacy (3DES/SHA-1) is in OpenSSL 3's default provider: no `-legacy` needed."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    assert add_client(ca.root, tmp_path, "bob", "--password-file", str(pw),
                      "--platform", "linux") == 0
    info = openssl_info(tmp_path / "bob.p12", pw)
    assert info.returncode == 0, info.stderr
    text = info.stdout + info.stderr
    assert "MAC: sha1" in text
    assert algorithms(text) == LEGACY_ALGORITHMS
    pw.write_text("wrong\n")
    assert openssl_info(tmp_path / "bob.p12", pw).returncode != 0


def test_modern_p12_opens_with_openssl(ca: SwanctlPki, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    assert add_client(ca.root, tmp_path, "carol", "--password-file", str(pw), "--modern",
                      "--platform", "android") == 0
    info = openssl_info(tmp_path / "carol.p12", pw)
    assert info.returncode == 0, info.stderr
    text = info.stdout + info.stderr
    assert "MAC: sha256" in text
    assert algorithms(text) == MODERN_ALGORITHMS


def test_modern_p12_is_never_embedded_for_apple(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12 item 13: Apple devices import only the legacy PKCS#12; `--modern` with the
    Apple profile warns and embeds a legacy one (NAME.p12 stays modern)."""
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    assert add_client(ca.root, tmp_path, "erin", "--password-file", str(pw), "--modern",
                      "--platform", "apple,android") == 0
    assert "Apple devices import only legacy" in capsys.readouterr().err
    doc = plistlib.loads((tmp_path / "erin.mobileconfig").read_bytes())
    embedded = tmp_path / "embedded.p12"
    embedded.write_bytes(doc["PayloadContent"][0]["PayloadContent"])
    for p12, expected in ((embedded, LEGACY_ALGORITHMS), (tmp_path / "erin.p12",
                                                           MODERN_ALGORITHMS)):
        info = openssl_info(p12, pw)
        assert info.returncode == 0, info.stderr
        assert algorithms(info.stdout + info.stderr) == expected, p12
    sswan = json.loads((tmp_path / "erin.sswan").read_text())
    assert base64.b64decode(sswan["local"]["p12"]) == (tmp_path / "erin.p12").read_bytes()


def test_platform_selection_and_curve(ca: SwanctlPki, tmp_path: Path) -> None:
    assert add_client(ca.root, tmp_path, "dave", "--platform", "apple",
                      "--ike", "aes256-sha256-ecp256", "--curve", "secp256r1") == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dave")) == [
        "dave.mobileconfig", "dave.p12",
    ]
    ikev2 = plistlib.loads((tmp_path / "dave.mobileconfig").read_bytes())["PayloadContent"][2]
    assert ikev2["IKEv2"]["CertificateType"] == "ECDSA256"
    assert ikev2["IKEv2"]["IKESecurityAssociationParameters"]["DiffieHellmanGroup"] == 19


def test_rsa_client(ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add_client(ca.root, tmp_path, "old", "--rsa", "--platform", "apple,android") == 0
    password = capsys.readouterr().out.split("(shown once): ")[1].strip()
    loaded = pkcs12.load_pkcs12((tmp_path / "old.p12").read_bytes(), password.encode())
    assert isinstance(loaded.key, rsa.RSAPrivateKey)
    vpn = plistlib.loads((tmp_path / "old.mobileconfig").read_bytes())["PayloadContent"][2]
    assert vpn["IKEv2"]["CertificateType"] == "RSA"


def test_windows_mismatch_fails_before_anything_is_written(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert add_client(ca.root, tmp_path / "o", "eve", "--ike", "aes256-sha512-curve25519") == 1
    assert "Windows cannot match" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert not ca.client_cert("eve").exists()
    assert add_client(ca.root, tmp_path / "o", "eve", "--platform", "linux,android",
                      "--ike", "aes256-sha512-curve25519") == 0


def test_static_ip_writes_the_gateway_side(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert add_client(ca.root, tmp_path, "t14", "--static-ip", "10.8.0.2") == 0
    conf = ca.root / "conf.d" / "t14.conf"
    assert mode(conf) == 0o644
    root = parse_file(ca.root / "swanctl.conf")  # includes conf.d/*.conf
    assert root.get("connections.t14.remote.id") == "C=CH, O=swand test, CN=t14"
    assert root.get("pools.t14.addrs") == "10.8.0.2"
    # one connection per one-address pool; Apple cannot send a DN, so no Apple profile
    assert [c for c in root.section("connections") or [] if c.name.startswith("t14")] == \
        [root.section("connections.t14")]
    assert not (tmp_path / "t14.mobileconfig").exists()
    assert "no apple profile" in capsys.readouterr().err
    # Linux and Android send the DN when pinned
    assert "id = \"C=CH, O=swand test, CN=t14\"" in (tmp_path / "t14.swanctl.conf").read_text()
    assert json.loads((tmp_path / "t14.sswan").read_text())["local"]["id"] == \
        "C=CH, O=swand test, CN=t14"
    assert profiles.gateway_from_settings(root).conn_name == "roadwarriors"
    assert add_client(ca.root, tmp_path / "x", "u1", "--static-ip", "10.8.0.200") == 1
    assert "inside the dynamic pool" in capsys.readouterr().err
    # pinned by SAN: Apple can, Windows cannot
    assert add_client(ca.root, tmp_path / "x", "ipad", "--static-ip", "10.8.0.4",
                      "--pin-by", "san", "--platform", "windows") == 1
    assert "Windows cannot send the client's subjectAltName" in capsys.readouterr().err
    assert add_client(ca.root, tmp_path / "x", "ipad", "--static-ip", "10.8.0.4",
                      "--pin-by", "san", "--platform", "apple,linux") == 0
    assert parse_file(ca.root / "swanctl.conf").get("connections.ipad.remote.id") == "ipad"
    assert "id = ipad" in (tmp_path / "x" / "ipad.swanctl.conf").read_text()


def test_static_ip_warns_without_conf_d_include(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    conf = ca.root / "swanctl.conf"
    conf.write_text(conf.read_text().replace("include conf.d/*.conf", ""))
    assert add_client(ca.root, tmp_path, "t15", "--static-ip", "10.8.0.3") == 0
    assert "does not `include conf.d/*.conf`" in capsys.readouterr().err


def test_revoke_puts_the_serial_on_the_crl(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("alice", "bob"):
        assert add_client(ca.root, tmp_path, name, "--platform", "linux") == 0
    alice = x509.load_pem_x509_certificate(ca.client_cert("alice").read_bytes())
    bob = x509.load_pem_x509_certificate(ca.client_cert("bob").read_bytes())
    capsys.readouterr()
    # charon is not running: the CRL is still written, and the command says what is missing
    assert swand("client", "--swanctl-dir", str(ca.root), "--vici", NO_VICI,
                 "revoke", "alice") == 3
    assert "charon was not updated" in capsys.readouterr().err
    crl = x509.load_der_x509_crl(ca.crl.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(alice.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(bob.serial_number) is None
    assert swand("client", "--swanctl-dir", str(ca.root), "--vici", NO_VICI,
                 "revoke", "bob") == 3
    crl2 = x509.load_der_x509_crl(ca.crl.read_bytes())
    assert {r.serial_number for r in crl2} == {alice.serial_number, bob.serial_number}
    number = crl2.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2
    capsys.readouterr()
    # refreshing keeps the entries and moves the next update
    assert swand("pki", "--swanctl-dir", str(ca.root), "crl", "--days", "30") == 0
    crl3 = x509.load_der_x509_crl(ca.crl.read_bytes())
    assert {r.serial_number for r in crl3} == {alice.serial_number, bob.serial_number}
    assert crl3.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    assert (crl3.next_update_utc - crl3.last_update_utc).days == 30
    capsys.readouterr()
    assert swand("client", "--swanctl-dir", str(ca.root), "list", "--json") == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["alice"]["revoked"] and listed["bob"]["revoked"]
    assert listed["alice"]["serial"] == f"{alice.serial_number:x}"
    assert swand("client", "--swanctl-dir", str(ca.root), "list") == 0
    assert "revoked" in capsys.readouterr().out
    assert swand("client", "--swanctl-dir", str(ca.root), "revoke", "nobody") == 1
    assert swand("client", "--swanctl-dir", str(ca.root), "--vici", NO_VICI,
                 "revoke", "alice") == 1  # already revoked: no active client of that name
    capsys.readouterr()
    # the name is free again; the new certificate is valid, the old one stays listed
    assert add_client(ca.root, tmp_path / "again", "alice", "--platform", "linux") == 0
    capsys.readouterr()
    assert swand("client", "--swanctl-dir", str(ca.root), "list", "--json") == 0
    alices = [c for c in json.loads(capsys.readouterr().out) if c["name"] == "alice"]
    assert sorted(bool(c["revoked"]) for c in alices) == [False, True]


def test_no_ca_yet(swanctl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add_client(swanctl, tmp_path / "o", "alice") == 1
    assert "swand pki init" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "dn", ["C=DE, O=example, CN=example Root CA", "C=DE, O=a\\, b, OU=x, CN=y"],
)
def test_dn_round_trip(dn: str) -> None:
    assert pki_files.dn_string(pki_files.parse_dn(dn)) == dn


@pytest.mark.parametrize("bad", ["", "CN", "XX=1", "C=DEU, CN=x"])
def test_bad_dn(bad: str) -> None:
    with pytest.raises(PkiError):
        pki_files.parse_dn(bad)


@pytest.mark.parametrize("bad", ["../x", "a b", "", ".hidden", "x" * 64])
def test_bad_client_names(bad: str) -> None:
    with pytest.raises(PkiError):
        pki_files.check_client_name(bad)


def test_failed_write_keeps_nothing(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert add_client(ca.root, blocker / "out", "frank") == 1
    assert "nothing was kept" in capsys.readouterr().err
    assert not ca.client_cert("frank").exists()
    assert add_client(ca.root, tmp_path / "out", "frank") == 0  # the name is free again


def test_failed_write_names_the_file_that_failed(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert add_client(ca.root, blocker / "out", "frank") == 1
    err = capsys.readouterr().err
    # the p12 is written first: the error names it, not a file the clean-up removed
    assert f"writing {blocker / 'out' / 'frank.p12'}:" in err
    assert str(ca.client_cert("frank")) not in err


LONGEST_NAME = "n" * 30 + "." + "x" * 28 + "@b.c"  # 63 characters, the most allowed


@pytest.mark.parametrize("name", ["home.t520", "a@b.c", LONGEST_NAME])
def test_client_names_with_dots_and_at_keep_every_file_parsing(
    ca: SwanctlPki, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12 item 11: a dot in a section name is a syntax error since strongSwan 5.7;
    `client add home.t520 --static-ip` broke the gateway's whole swanctl.conf (it includes
    conf.d/*.conf) and the Linux profile. Section names are derived, files keep the name."""
    assert len(LONGEST_NAME) == 63
    assert add_client(ca.root, tmp_path, name, "--static-ip", "10.8.0.2",
                      "--pin-by", "san") == 0
    section = name.replace(".", "_")
    root = parse_file(ca.root / "swanctl.conf")  # the gateway's file, with conf.d/
    assert root.get(f"connections.{section}.remote.id") == name
    assert root.get(f"connections.{section}.pools") == section
    assert root.get(f"pools.{section}.addrs") == "10.8.0.2"
    assert (ca.root / "conf.d" / f"{name}.conf").exists()
    linux = parse_file(tmp_path / f"{name}.swanctl.conf")
    assert linux.get(f"secrets.pkcs12-{section}.file") == f"{name}.p12"
    assert profiles.validate_sswan(json.loads((tmp_path / f"{name}.sswan").read_text())) == []
    mc = plistlib.loads((tmp_path / f"{name}.mobileconfig").read_bytes())
    assert mc["PayloadContent"][0]["PayloadDisplayName"] == f"{name}.p12"
    # the next client still works: the gateway's config still parses
    assert add_client(ca.root, tmp_path / "next", "next", "--static-ip", "10.8.0.3") == 0
    assert parse_file(ca.root / "swanctl.conf").get("pools.next.addrs") == "10.8.0.3"
    capsys.readouterr()


def test_static_client_named_like_a_gateway_section_is_refused(
    ca: SwanctlPki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A pinned client's sections would merge into an existing connection or pool (a
    client `roadwarriors` would rewrite the road-warrior connection): refused, nothing
    written."""
    for name in ("roadwarriors", "rw_pool"):
        assert add_client(ca.root, tmp_path / name, name, "--static-ip", "10.8.0.2") == 1
        assert "already has a connection or pool named" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    assert add_client(ca.root, tmp_path, "home.t520", "--static-ip", "10.8.0.2") == 0
    assert add_client(ca.root, tmp_path / "x", "home_t520", "--static-ip", "10.8.0.3") == 1
    assert "'home_t520'" in capsys.readouterr().err
    assert list(ca.root.glob("swand-clients/home_t520*")) == []
