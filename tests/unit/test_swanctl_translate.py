"""swanctl.conf + credential bytes -> VICI messages (golden dicts), as swanctl 5.9.8 sends
them (the corpus-wide check against swanctl itself is tests/integration/test_conformance)."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from swand.core.settings import parse_file, parse_text
from swand.core.swanctl import (
    CredentialSource,
    digest,
    referenced_files,
    split_list,
    translate,
)

DATA = Path(__file__).parent / "data" / "swanctl"
DIR = "/etc/swanctl"
GW_CERT = b"-----BEGIN CERTIFICATE-----\ngateway\n-----END CERTIFICATE-----\n"
CA_CERT = b"0\x82\x01\x00ca-der"


def source(files: dict[str, bytes] | None = None,
           folders: dict[str, tuple[tuple[str, bytes], ...]] | None = None) -> CredentialSource:
    return CredentialSource(DIR, folders or {}, files or {}, {})


# --- the reference gateway --------------------------------------------------------------


def test_reference_gateway_golden() -> None:
    tree = parse_file(DATA / "gateway" / "swanctl.conf")
    assert referenced_files(tree, DIR) == [f"{DIR}/x509/gateway.pem"]
    state, errors = translate(tree, source({f"{DIR}/x509/gateway.pem": GW_CERT}))
    assert errors == []
    assert list(state.conns) == ["roadwarriors", "t520"]
    rw = state.conns["roadwarriors"]
    assert rw.command == "load-conn"
    assert rw.message == {"roadwarriors": {
        "version": "2",
        "proposals": ["aes256-sha384-prfsha384-ecp384"],
        "rekey_time": "0",
        "unique": "replace",
        "fragmentation": "yes",
        "dpd_delay": "30s",
        "send_cert": "always",
        "pools": ["rw_pool"],
        "local": {"auth": "pubkey", "certs": [GW_CERT], "id": "vpn.example.org"},
        "remote": {"auth": "pubkey", "id": "%any"},
        "children": {"roadwarriors": {
            "local_ts": ["0.0.0.0/0"],
            "esp_proposals": ["aes256gcm16-ecp384"],
            "rekey_time": "0",
            "dpd_action": "clear",
        }},
    }}
    pinned = state.conns["t520"].message["t520"]
    assert pinned["remote"] == {"auth": "pubkey", "id": "C=CH, O=swand lab, CN=t520"}
    assert pinned["pools"] == ["t520_pool"]
    assert state.pools["rw_pool"].message == {
        "rw_pool": {"addrs": "10.8.0.128/25", "dns": ["1.1.1.1", "1.0.0.1"]}}
    assert state.pools["t520_pool"].message == {
        "t520_pool": {"addrs": "10.8.0.1/32", "dns": ["1.1.1.1", "1.0.0.1"]}}
    assert state.pools["rw_pool"].command == "load-pool"
    assert not state.broken


# --- lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "tokens"), [
    ("a, b,c", ["a", "b", "c"]),
    ("a,,b", ["a", "b"]),
    (",a,", ["a"]),
    ("", []),
    ("  p , q  ", ["p", "q"]),
    ("'x, y', z", ["x, y", "z"]),
    ("a 'b,c' d , e", ["a 'b", "c' d", "e"]),
    ("'ab'cd, e", ["ab", "cd", "e"]),
    ("'", ["'"]),
    ("a b, c", ["a b", "c"]),
])
def test_split_list_like_swanctl(value: str, tokens: list[str]) -> None:
    # table taken from swanctl 5.9.8 on a recording VICI socket
    assert split_list(value) == tokens


def test_list_keys_are_case_insensitive_and_include_cert_policy() -> None:
    tree = parse_text("""connections { c {
        Proposals = a, b
        cert_policy = 1.2.3, 4.5.6
        mobike = no
        children { x { remote_ts = 10.0.0.0/8, 192.168.0.0/16 } }
    } }""")
    state, errors = translate(tree, source())
    assert errors == []
    assert state.conns["c"].message == {"c": {
        "Proposals": ["a", "b"], "cert_policy": ["1.2.3", "4.5.6"], "mobike": "no",
        "children": {"x": {"remote_ts": ["10.0.0.0/8", "192.168.0.0/16"]}},
    }}


# --- files named by connections and authorities -----------------------------------------


def test_certs_cacerts_pubkeys_are_read_from_their_folders() -> None:
    tree = parse_text("""connections { c {
        local-1 { certs = a.pem, /abs/b.der }
        remote { cacerts = ca.der
                 pubkeys = peer.pem, 0x3031 }
    } }""")
    files = {f"{DIR}/x509/a.pem": b"A", "/abs/b.der": b"B", f"{DIR}/x509ca/ca.der": CA_CERT,
             f"{DIR}/pubkey/peer.pem": b"P"}
    assert sorted(referenced_files(tree, DIR)) == sorted(files)
    state, errors = translate(tree, source(files))
    assert errors == []
    msg = state.conns["c"].message["c"]
    assert msg["local-1"] == {"certs": [b"A", b"B"]}
    assert msg["remote"] == {"cacerts": [CA_CERT], "pubkeys": [b"P", b"01"]}


def test_missing_certificate_fails_that_connection_only() -> None:
    tree = parse_text("connections {\n ok { version = 2 }\n bad {\n"
                      "  local { certs = gone.pem }\n }\n}\n", name="/etc/swanctl/swanctl.conf")
    state, errors = translate(tree, source())
    assert list(state.conns) == ["ok"]
    assert ("conn", "bad") in state.broken
    assert len(errors) == 1
    text = str(errors[0])
    assert text.startswith("/etc/swanctl/swanctl.conf:4: connection 'bad': ")
    assert "/etc/swanctl/x509/gone.pem" in text and "No such file" in text


def test_authority_golden() -> None:
    tree = parse_text("""authorities { strongswan {
        cacert = ca.der
        crl_uris = http://crl.example/a.crl, 'ldap://x/cn=CA, o=Org?crl'
        ocsp_uris = http://ocsp.example
        cert_uri_base = http://certs.example/
    } }""")
    state, errors = translate(tree, source({f"{DIR}/x509ca/ca.der": CA_CERT}))
    assert errors == []
    assert state.authorities["strongswan"].message == {"strongswan": {
        "cacert": CA_CERT,
        "crl_uris": ["http://crl.example/a.crl", "ldap://x/cn=CA, o=Org?crl"],
        "ocsp_uris": ["http://ocsp.example"],
        "cert_uri_base": "http://certs.example/",
    }}


# --- secrets ----------------------------------------------------------------------------


def test_shared_secrets_golden_and_errors_never_show_values() -> None:
    tree = parse_text("""secrets {
        ike-1 {
            id = gw.example
            id2 = 192.0.2.1
            secret = 0x73776f7264
        }
        eap-carol {
            id = carol
            secret = "p4ss w0rd"
        }
        xauth { secret = 0sc2VjcmV0 }
        ppk-x { secret = ppk-secret-value }
        ntlm-y { secret = n }
        bogus-1 { secret = do-not-print-me }
        eap-nosecret { id = dave }
    }""", name="swanctl.conf")
    state, errors = translate(tree, source())
    assert state.shared["ike-1"].message == {
        "id": "ike-1", "type": "ike", "data": b"sword", "owners": ["gw.example", "192.0.2.1"]}
    assert state.shared["eap-carol"].message == {
        "id": "eap-carol", "type": "eap", "data": b"p4ss w0rd", "owners": ["carol"]}
    assert state.shared["xauth"].message["data"] == b"secret"
    assert state.shared["ppk-x"].message["type"] == "ppk"
    assert state.shared["ntlm-y"].message["type"] == "ntlm"
    assert "bogus-1" not in state.shared and "eap-nosecret" not in state.shared
    assert ("shared", "eap-nosecret") in state.broken
    text = "\n".join(str(e) for e in errors)
    assert "secret 'bogus-1'" in text and "unsupported secret type" in text
    assert "swanctl.conf:15: secret 'eap-nosecret': missing secret" in text
    for value in ("do-not-print-me", "p4ss", "sword", "ppk-secret-value"):
        assert value not in text
        assert value not in repr(state)


def test_token_is_sent_with_all_its_keys() -> None:
    tree = parse_text("secrets { token-1 {\n handle = 01\n slot = 2\n module = m\n pin = 1234\n} }")
    state, errors = translate(tree, source())
    assert errors == []
    assert state.tokens["token-1"].command == "load-token"
    assert state.tokens["token-1"].message == {
        "handle": "01", "slot": "2", "module": "m", "pin": "1234"}


# --- credential folders -----------------------------------------------------------------


def _cert_and_key() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert, key


def test_folders_loaded_wholesale_in_swanctl_order() -> None:
    _, key = _cert_and_key()
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    folders = {
        "x509": (("gw.pem", b"GW"),),
        "x509ca": (("ca.der", CA_CERT),),
        "x509crl": (("ca.crl", b"CRL"),),
        "x509ac": (("ac.der", b"AC"),),
        "x509aa": (("aa.der", b"AA"),),
        "x509ocsp": (("ocsp.der", b"OCSP"),),
        "pubkey": (("peer.pem", b"PUB"),),
        "private": (("gw.pem", pem_key),),
        "ecdsa": (("other.der", b"0\x03\x02\x01\x01"),),
    }
    state, errors = translate(parse_text(""), source(folders=folders))
    assert errors == []
    assert [(i.name, dict(i.message)) for i in state.certs.values()] == [
        ("x509/gw.pem", {"type": "X509", "flag": "NONE", "data": b"GW"}),
        ("x509ca/ca.der", {"type": "X509", "flag": "CA", "data": CA_CERT}),
        ("x509ocsp/ocsp.der", {"type": "X509", "flag": "OCSP", "data": b"OCSP"}),
        ("x509aa/aa.der", {"type": "X509", "flag": "AA", "data": b"AA"}),
        ("x509ac/ac.der", {"type": "X509_AC", "data": b"AC"}),
        ("x509crl/ca.crl", {"type": "X509_CRL", "data": b"CRL"}),
        ("pubkey/peer.pem", {"type": "PUBKEY", "data": b"PUB"}),
    ]
    assert [(i.name, dict(i.message)) for i in state.keys.values()] == [
        ("private/gw.pem", {"type": "any", "data": pem_key}),
        ("ecdsa/other.der", {"type": "ecdsa", "data": b"0\x03\x02\x01\x01"}),
    ]
    assert [i.command for i in state.credentials()] == ["load-cert"] * 7 + ["load-key"] * 2


def test_encrypted_key_is_decrypted_with_its_secret() -> None:
    _, key = _cert_and_key()
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"Passw0rd"))
    tree = parse_text("secrets {\n private-gw {\n file = GW.pem\n secret = Passw0rd\n }\n}")
    state, errors = translate(tree, source(folders={"private": (("gw.pem", enc),)}))
    assert errors == []
    msg = state.keys["private/gw.pem"].message
    assert msg["type"] == "ecdsa"
    restored = serialization.load_der_private_key(msg["data"], None)
    assert restored.private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_encrypted_key_without_secret_is_an_error_keeping_the_old_one() -> None:
    _, key = _cert_and_key()
    enc = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"right"))
    tree = parse_text("secrets { private-gw { file = gw.der\n secret = wrong } }")
    state, errors = translate(tree, source(folders={"private": (("gw.der", enc),)}))
    assert state.keys == {}
    assert ("key", "private/gw.der") in state.broken
    assert [str(e) for e in errors] == [
        "private/gw.der: private key: configured decryption secret invalid"]
    assert "wrong" not in str(errors[0]) and "right" not in str(errors[0])


def test_pkcs12_container_gives_certificates_and_key() -> None:
    cert, key = _cert_and_key()
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(b"p12pass"))
    tree = parse_text("secrets { pkcs12-a { file = a.p12\n secret = p12pass } }")
    state, errors = translate(tree, source(folders={"pkcs12": (("a.p12", p12),)}))
    assert errors == []
    assert state.certs["pkcs12/a.p12#cert0"].message == {
        "type": "X509", "flag": "NONE", "data": cert.public_bytes(serialization.Encoding.DER)}
    assert state.keys["pkcs12/a.p12#key0"].message["type"] == "ecdsa"


# --- digests ----------------------------------------------------------------------------


def test_digests_follow_content_only() -> None:
    conf = "connections { c { version = 2 } }\npools { p { addrs = 10.0.0.0/24 } }"
    a, _ = translate(parse_text(conf), source())
    b, _ = translate(parse_text(conf + "\n# a comment"), source())
    c, _ = translate(parse_text(conf.replace("10.0.0.0/24", "10.0.1.0/24")), source())
    assert a.conns["c"].digest == b.conns["c"].digest
    assert a.pools["p"].digest == b.pools["p"].digest
    assert a.pools["p"].digest != c.pools["p"].digest
    assert a.conns["c"].digest == c.conns["c"].digest
    assert digest("load-conn", {"c": {"x": ["1"]}}) != digest("load-conn", {"c": {"x": "1"}})
    # public items hash the same in every process; secret-bearing ones are keyed
    assert a.conns["c"].digest == hashlib.blake2b(
        repr(("load-conn", a.conns["c"].message)).encode(), digest_size=12).hexdigest()
    psk = {"id": "ike", "type": "ike", "data": b"pw", "owners": []}
    assert digest("load-shared", psk, secret=True) != digest("load-shared", psk)
    assert "message" not in repr(a.conns["c"])


def test_unreadable_folder_file_is_an_error_and_keeps_the_old_one() -> None:
    src = CredentialSource(DIR, {"x509": (("ok.pem", b"OK"),)}, {},
                           {f"{DIR}/private/gw.pem": "Permission denied",
                            f"{DIR}/x509/other.pem": "Permission denied"})
    state, errors = translate(parse_text(""), src)
    assert list(state.certs) == ["x509/ok.pem"]
    assert sorted(str(e) for e in errors) == [
        "private/gw.pem: credential file: cannot be read: Permission denied",
        "x509/other.pem: credential file: cannot be read: Permission denied"]
    assert {("key", "private/gw.pem"), ("cert", "x509/other.pem")} <= state.broken
