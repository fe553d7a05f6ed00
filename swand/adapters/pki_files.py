"""The gateway's PKI on disk: CA, gateway certificate, client certificates, CRL, PKCS#12.

Everything is made with the `cryptography` package (no `openssl`/`pki` processes) and
written into the swanctl folder charon's credentials come from:

    private/ca.pem, x509ca/ca.pem          the CA (`swand pki init`)
    private/gateway.pem, x509/gateway.pem  the gateway (`swand pki gateway`)
    x509crl/ca.crl                         revoked clients (`swand client revoke`)
    swand-clients/NAME.pem                 issued client certificates (for list/revoke);
                                           not a swanctl folder, so charon never loads them

Private keys are created with O_EXCL and mode 0600 in the same system call, so they are
never briefly readable by others, and never overwritten. Client keys are not kept on the
gateway at all: they exist only inside the password-protected PKCS#12 handed out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from swand.adapters import files

#: RFC 4945's id-kp-ipsecIKE is 1.3.6.1.5.5.7.3.17; strongSwan's "ikeIntermediate"
#: (1.3.6.1.5.5.8.2.2) is what older macOS/iOS want on the gateway certificate
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")

CA_NAME = "ca"
GATEWAY_NAME = "gateway"
CLIENTS_DIR = "swand-clients"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1,
}


class PkiError(Exception):
    """A PKI operation that cannot be done; the message names the file."""


# --- files ------------------------------------------------------------------------------


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the first byte on (`swand.adapters.files`); an
    existing file is a PkiError naming it."""
    try:
        files.write_new(path, data, mode)
    except FileExistsError:
        raise PkiError(f"{path}: exists; refusing to overwrite it") from None


def write_private(path: Path, data: bytes) -> None:
    """A secret (key, p12, file holding a password): mode 0600, never overwritten."""
    write_new(path, data, 0o600)


def replace_public(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace a public file (the CRL): readers see the old or the new one."""
    files.replace_file(path, data, mode)


# --- names -------------------------------------------------------------------------------

_DN_KEYS: dict[str, ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME, "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS, "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS, "DC": NameOID.DOMAIN_COMPONENT,
    "SN": NameOID.SURNAME, "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "G": NameOID.GIVEN_NAME, "T": NameOID.TITLE, "UID": NameOID.USER_ID,
}
_DN_SHORT: dict[ObjectIdentifier, str] = {
    NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L", NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "E", NameOID.DOMAIN_COMPONENT: "DC", NameOID.SURNAME: "SN",
    NameOID.SERIAL_NUMBER: "serialNumber", NameOID.GIVEN_NAME: "G", NameOID.TITLE: "T",
    NameOID.USER_ID: "UID",
}


def parse_dn(text: str) -> x509.Name:
    """strongSwan's DN notation ("C=DE, O=example, CN=alice"), in the order written."""
    parts = [p.strip() for p in re.split(r"(?<!\\),|(?<!\\)/", text) if p.strip()]
    if not parts:
        raise PkiError(f"DN {text!r} is empty")
    attrs = []
    for part in parts:
        key, sep, value = part.partition("=")
        oid = _DN_KEYS.get(key.strip().upper())
        if not sep or oid is None or not value.strip():
            raise PkiError(
                f"DN {text!r}: cannot read {part!r} (use KEY=value with KEY one of "
                f"{', '.join(sorted(set(_DN_SHORT.values())))})"
            )
        value = value.strip().replace("\\,", ",").replace("\\/", "/")
        if oid == NameOID.COUNTRY_NAME and len(value) != 2:
            raise PkiError(f"DN {text!r}: C= needs a two-letter country code")
        attrs.append(x509.NameAttribute(oid, value))
    return x509.Name(attrs)


def dn_string(name: x509.Name) -> str:
    """A Name the way charon prints and parses it ("C=DE, O=example, CN=alice")."""
    out = []
    for attr in name:
        key = _DN_SHORT.get(attr.oid, attr.oid.dotted_string)
        value = str(attr.value).replace(",", "\\,")
        out.append(f"{key}={value}")
    return ", ".join(out)


def common_name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else dn_string(name)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def san_for_identity(identity: str) -> x509.GeneralName:
    """The subjectAltName charon matches an identity string against."""
    if _is_ip(identity):
        return x509.IPAddress(ipaddress.ip_address(identity))
    if "@" in identity:
        return x509.RFC822Name(identity)
    return x509.DNSName(identity)


# --- the swanctl folder ----------------------------------------------------------------------


@dataclass(frozen=True)
class SwanctlPki:
    """Paths of the credentials in one swanctl folder."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "private" / f"{CA_NAME}.pem"

    @property
    def ca_cert(self) -> Path:
        return self.root / "x509ca" / f"{CA_NAME}.pem"

    @property
    def gateway_key(self) -> Path:
        return self.root / "private" / f"{GATEWAY_NAME}.pem"

    @property
    def gateway_cert(self) -> Path:
        return self.root / "x509" / f"{GATEWAY_NAME}.pem"

    @property
    def crl(self) -> Path:
        return self.root / "x509crl" / f"{CA_NAME}.crl"

    @property
    def clients(self) -> Path:
        return self.root / CLIENTS_DIR

    def client_cert(self, name: str) -> Path:
        return self.clients / f"{check_client_name(name)}.pem"

    @property
    def revoked_clients(self) -> Path:
        """Certificates of revoked clients, `<serial hex>-NAME.pem`: kept for `list`,
        out of the way so the name can be issued again."""
        return self.clients / "revoked"

    def load_ca(self) -> tuple[x509.Certificate, PrivateKey]:
        """The CA certificate and key; a missing CA says how to make one."""
        if not self.ca_cert.exists() or not self.ca_key.exists():
            raise PkiError(
                f"{self.ca_cert}: no CA here yet (run `swand pki init --dn ...` first)"
            )
        cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        try:
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            # the exception text never contains key material, but keep it short anyway
            raise PkiError(
                f"{self.ca_key}: cannot load the CA key ({type(exc).__name__})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError(f"{self.ca_key}: unsupported key type")
        return cert, key


def check_client_name(name: str) -> str:
    """Client names become file names and connection names: keep them plain."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}", name) or ".." in name:
        raise PkiError(
            f"client name {name!r}: use letters, digits, '.', '_', '@' and '-' "
            "(at most 63 characters, starting with a letter or digit)"
        )
    return name


# --- keys and certificates -------------------------------------------------------------------


def new_key(kind: str = "ecdsa", curve: str = "secp384r1", rsa_bits: int = 3072) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    try:
        return ec.generate_private_key(_CURVES[curve]())
    except KeyError:
        raise PkiError(f"unknown curve {curve!r} (one of {', '.join(_CURVES)})") from None


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, what swanctl's private/ folder loads without a prompt."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The digest matching the curve's strength (SHA-256 for RSA)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size <= 256:
            return hashes.SHA256()
        return hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    return hashes.SHA256()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_usage(signing: bool, ca: bool = False, rsa_key: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing, content_commitment=False,
        key_encipherment=rsa_key and not ca, data_encipherment=False, key_agreement=False,
        key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def make_ca(dn: str, key: PrivateKey, days: int = 3650) -> x509.Certificate:
    subject = parse_dn(dn)
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, _hash_for(key))
    )


def _issue(
    ca_cert: x509.Certificate, ca_key: PrivateKey, subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, sans: Sequence[x509.GeneralName],
    ekus: Sequence[ObjectIdentifier], days: int,
) -> x509.Certificate:
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(True, rsa_key=isinstance(public_key, rsa.RSAPublicKey)),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def gateway_sans(identity: str, extra: Sequence[str] = ()) -> list[x509.GeneralName]:
    """The gateway's SANs: its id (DNS or IP), and for an IP also a DNS-type entry with
    the address text, which Windows compares against the server address it dialled
    (error 13801 otherwise)."""
    sans: list[x509.GeneralName] = []
    for value in (identity, *extra):
        for san in ([san_for_identity(value)] if not _is_ip(value)
                    else [x509.IPAddress(ipaddress.ip_address(value)), x509.DNSName(value)]):
            if san not in sans:
                sans.append(san)
    return sans


def client_subject(ca_cert: x509.Certificate, name: str, dn: str | None) -> x509.Name:
    """`--dn`, or the CA's DN with its CN replaced by the client's name."""
    if dn:
        return parse_dn(dn)
    attrs = [a for a in ca_cert.subject if a.oid != NameOID.COMMON_NAME]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, name)])


# --- operations behind the commands ------------------------------------------------------------


def init_ca(pki: SwanctlPki, dn: str, use_rsa: bool = False, days: int = 3650) -> x509.Certificate:
    """`swand pki init`: a new CA; refuses if either file exists (nothing half-written)."""
    for path in (pki.ca_key, pki.ca_cert):
        if path.exists():
            raise PkiError(f"{path}: exists; refusing to overwrite the CA")
    key = new_key("rsa" if use_rsa else "ecdsa", "secp384r1")
    cert = make_ca(dn, key, days)
    write_private(pki.ca_key, key_pem(key))
    try:
        write_new(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except BaseException:
        pki.ca_key.unlink(missing_ok=True)
        raise
    return cert


def issue_gateway(
    pki: SwanctlPki, identity: str, extra_sans: Sequence[str] = (), dn: str | None = None,
    days: int = 1825, use_rsa: bool = False,
) -> x509.Certificate:
    """`swand pki gateway`: the gateway certificate (serverAuth + ikeIntermediate)."""
    for path in (pki.gateway_key, pki.gateway_cert):
        if path.exists():
            raise PkiError(f"{path}: exists; refusing to overwrite the gateway credentials")
    ca_cert, ca_key = pki.load_ca()
    key = new_key("rsa" if use_rsa else "ecdsa", "secp384r1")
    subject = parse_dn(dn) if dn else client_subject(ca_cert, identity, None)
    cert = _issue(
        ca_cert, ca_key, subject, key.public_key(), gateway_sans(identity, extra_sans),
        [ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE], days,
    )
    write_private(pki.gateway_key, key_pem(key))
    try:
        write_new(pki.gateway_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except BaseException:
        pki.gateway_key.unlink(missing_ok=True)
        raise
    return cert


@dataclass(frozen=True)
class IssuedClient:
    """A new client's credentials, in memory only (the key never touches the gateway)."""

    name: str
    cert: x509.Certificate
    key: PrivateKey
    ca_cert: x509.Certificate
    san: str

    @property
    def dn(self) -> str:
        return dn_string(self.cert.subject)

    @property
    def apple_key_type(self) -> str:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return f"ECDSA{min(self.key.curve.key_size, 521)}"
        return "RSA"


def issue_client(
    pki: SwanctlPki, name: str, *, dn: str | None = None, san: str | None = None,
    curve: str = "secp384r1", use_rsa: bool = False, days: int = 825,
) -> IssuedClient:
    """Key + certificate for a client; the certificate (not the key) is recorded in
    swand-clients/ so `list` and `revoke` find it. Refuses an existing name."""
    record = pki.client_cert(name)
    if record.exists():
        raise PkiError(
            f"{record}: a client named {name!r} exists (revoke it first, or pick a new name)"
        )
    ca_cert, ca_key = pki.load_ca()
    key = new_key("rsa" if use_rsa else "ecdsa", curve)
    identity = san or name
    cert = _issue(
        ca_cert, ca_key, client_subject(ca_cert, name, dn), key.public_key(),
        [san_for_identity(identity)], [ExtendedKeyUsageOID.CLIENT_AUTH], days,
    )
    write_new(record, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return IssuedClient(name, cert, key, ca_cert, identity)


def generate_password() -> str:
    """A p12 password that survives being typed on a phone: 20 characters, ~119 bits."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))


def pkcs12_bytes(client: IssuedClient, password: str, modern: bool = False) -> bytes:
    """The client's key, certificate and CA as PKCS#12.

    Legacy (default): keys and certificates with pbeWithSHA1And3-KeyTripleDES-CBC, MAC
    HMAC-SHA1, 2048 iterations — what Windows before 10 1709 / Server 2016, Android's
    KeyChain before Android 12(ish) and iOS/macOS before 2023 import. Modern: PBES2 with
    AES-256-CBC + PBKDF2-HMAC-SHA256 and an HMAC-SHA256 MAC (OpenSSL 3's default).
    """
    if not password:
        raise PkiError("the PKCS#12 password must not be empty")
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if modern:
        builder = (
            builder.kdf_rounds(100_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    else:
        builder = (
            builder.kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
        )
    return pkcs12.serialize_key_and_certificates(
        client.name.encode(), client.key, client.cert, [client.ca_cert],
        builder.build(password.encode()),
    )


# --- revocation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientRecord:
    name: str
    serial: int
    dn: str
    san: str
    not_after: dt.datetime
    revoked: dt.datetime | None


def _san_text(cert: x509.Certificate) -> str:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    return ", ".join(str(n.value) for n in names)


def read_crl(pki: SwanctlPki) -> x509.CertificateRevocationList | None:
    if not pki.crl.exists():
        return None
    data = pki.crl.read_bytes()
    try:
        return x509.load_der_x509_crl(data)
    except ValueError:
        return x509.load_pem_x509_crl(data)


def list_clients(pki: SwanctlPki) -> list[ClientRecord]:
    crl = read_crl(pki)
    revoked = {r.serial_number: r.revocation_date_utc for r in crl} if crl else {}
    out = []
    paths = sorted(pki.clients.glob("*.pem")) + sorted(pki.revoked_clients.glob("*-*.pem"))
    for path in paths:
        name = path.stem if path.parent == pki.clients else path.stem.split("-", 1)[1]
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        out.append(ClientRecord(
            name, cert.serial_number, dn_string(cert.subject), _san_text(cert),
            cert.not_valid_after_utc, revoked.get(cert.serial_number),
        ))
    return out


def sign_crl(pki: SwanctlPki, add_serial: int | None = None, crl_days: int = 365) -> bytes:
    """Re-sign the CA's CRL with every earlier entry (plus `add_serial`), CRL number
    incremented, next update `crl_days` ahead; written to x509crl/ atomically. DER."""
    ca_cert, ca_key = pki.load_ca()
    old = read_crl(pki)
    now = _now()
    number = 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject).last_update(now)
        .next_update(now + dt.timedelta(days=crl_days))
    )
    seen = set()
    if old is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        for entry in old:
            seen.add(entry.serial_number)
            builder = builder.add_revoked_certificate(entry)
    if add_serial is not None and add_serial not in seen:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(add_serial)
            .revocation_date(now).build()
        )
    builder = builder.add_extension(x509.CRLNumber(number), critical=False).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False,
    )
    der = builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.DER)
    replace_public(pki.crl, der)
    return der


def revoke_client(
    pki: SwanctlPki, name: str, crl_days: int = 365,
) -> tuple[x509.Certificate, bytes]:
    """Put the client's serial on the CA's CRL (`sign_crl`) and move its record to
    swand-clients/revoked/. Returns the certificate and the CRL as DER."""
    record = pki.client_cert(name)
    if not record.exists():
        raise PkiError(f"{record}: no client named {name!r}")
    cert = x509.load_pem_x509_certificate(record.read_bytes())
    der = sign_crl(pki, cert.serial_number, crl_days)
    pki.revoked_clients.mkdir(parents=True, exist_ok=True)
    os.replace(record, pki.revoked_clients / f"{cert.serial_number:x}-{name}.pem")
    return cert, der
