"""Certificates and keys: identities, chains, EKUs, expiry, curves."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from swand.core.checks.base import (
    EXPIRY_WARNING,
    IKE_INTERMEDIATE,
    CheckInput,
    CredentialFile,
    Finding,
    _connections,
    _is_road_warrior,
    _list,
    _rounds,
    _serves_windows,
    finding_at,
)
from swand.core.checks.proposals import (
    CURVE_GROUP,
    parse_proposals,
)
from swand.core.proposals import KE
from swand.core.settings import Origin, Section

# --- certificates -------------------------------------------------------------------------

def load_certificate(data: bytes) -> x509.Certificate | None:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def load_private_key(data: bytes) -> object | None:
    """The key, None if it cannot be read, or the string "encrypted"."""
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except TypeError:
        return "encrypted"
    except (ValueError, UnsupportedAlgorithm):
        return None


def _public_bytes(key: object) -> bytes | None:
    try:
        der: bytes = key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return der
    except (AttributeError, ValueError):
        return None


@dataclass(frozen=True)
class Identity:
    kind: Literal["fqdn", "email", "ip", "dn", "any", "other"]
    value: str


def parse_identity(text: str) -> Identity:
    """An IKE identity as strongSwan's identification_create_from_string reads it."""
    t = text.strip()
    low = t.lower()
    for prefix, kind in (("fqdn:", "fqdn"), ("dns:", "fqdn"), ("email:", "email"),
                         ("rfc822:", "email"), ("ipv4:", "ip"), ("ipv6:", "ip"),
                         ("asn1dn:", "dn")):
        if low.startswith(prefix):
            return Identity(kind, t[len(prefix):])  # type: ignore[arg-type]
    if t in ("%any", "%any6", "", "*"):
        return Identity("any", t)
    if t.startswith("@#"):
        return Identity("other", t)
    if t.startswith("@"):
        return Identity("fqdn", t.lstrip("@"))
    if "=" in t:
        return Identity("dn", t)
    try:
        ipaddress.ip_address(t)
        return Identity("ip", t)
    except ValueError:
        pass
    if "@" in t:
        return Identity("email", t)
    return Identity("fqdn", t)


def _is_wildcard(ident: Identity) -> bool:
    return ident.kind == "any" or "*" in ident.value


def _normalize_dn(text: str) -> tuple[tuple[str, str], ...]:
    parts = [p.strip() for p in re.split(r"[,/](?=\s*[A-Za-z.0-9]+=)", text) if p.strip()]
    out = []
    for part in parts:
        key, _, value = part.partition("=")
        out.append((key.strip().upper(), value.strip().strip('"')))
    return tuple(out)


def _subject_dn(cert: x509.Certificate) -> tuple[tuple[str, str], ...]:
    short = {"countryName": "C", "organizationName": "O", "commonName": "CN",
             "organizationalUnitName": "OU", "localityName": "L",
             "stateOrProvinceName": "ST", "emailAddress": "E", "serialNumber": "SN"}
    out = []
    for attr in cert.subject:
        name = attr.oid._name
        value = attr.value if isinstance(attr.value, str) else attr.value.decode(
            "utf-8", "replace")
        out.append((short.get(name, name).upper(), value))
    return tuple(out)


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def cert_has_identity(cert: x509.Certificate, ident: Identity) -> bool:
    """Does the certificate vouch for this identity (subject DN or a SAN)?"""
    if ident.kind == "dn":
        return _normalize_dn(ident.value) == _subject_dn(cert)
    if ident.kind in ("any", "other"):
        return True
    san = _sans(cert)
    if san is None:
        return False
    if ident.kind == "fqdn":
        return ident.value.lower().rstrip(".") in {
            d.lower().rstrip(".") for d in san.get_values_for_type(x509.DNSName)}
    if ident.kind == "email":
        return ident.value.lower() in {
            e.lower() for e in san.get_values_for_type(x509.RFC822Name)}
    try:
        return ipaddress.ip_address(ident.value) in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        return False


def _ekus(cert: x509.Certificate) -> set[ObjectIdentifier] | None:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def _not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def _not_before(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def chains_to_ca(
    cert: x509.Certificate, cas: list[x509.Certificate],
    intermediates: list[x509.Certificate], depth: int = 8,
) -> bool:
    """True when a CA from x509ca/ signed it, directly or through intermediates."""
    if any(_issued_by(cert, ca) for ca in cas):
        return True
    if depth == 0:
        return False
    return any(
        _issued_by(cert, mid) and mid != cert and chains_to_ca(mid, cas, intermediates,
                                                               depth - 1)
        for mid in intermediates
    )


@dataclass(frozen=True)
class _LocalCert:
    conn: Section
    round: Section
    setting_origin: Origin
    name: str


def _local_certs(conn: Section) -> Iterator[_LocalCert]:
    for rnd in _rounds(conn, "local"):
        setting = rnd.settings.get("certs")
        if setting is None:
            continue
        for name in _list(setting.value):
            yield _LocalCert(conn, rnd, setting.origin, name)


def _cert_key(path: str, folder: str) -> str:
    """`certs = gateway.pem` -> `x509/gateway.pem` (absolute paths stay absolute)."""
    return path if path.startswith("/") else f"{folder}/{path}"


def check_certificates(inp: CheckInput) -> list[Finding]:
    """The gateway's certificate: SAN holds the local id, serverAuth (+ ikeIntermediate),
    valid now and for 30 more days, chains to a loaded CA, with a matching private key."""
    out: list[Finding] = []
    certs = {c.path: c for c in inp.certs}
    cas = [c for c in (load_certificate(f.data) for f in inp.cas) if c is not None]
    intermediates = [c for c in (load_certificate(f.data) for f in inp.certs) if c is not None]
    keys = [(f, load_private_key(f.data)) for f in inp.keys]
    key_publics = {
        _public_bytes(k.public_key())  # type: ignore[attr-defined]
        for _, k in keys if k not in (None, "encrypted")
    }
    encrypted = [f.path for f, k in keys if k == "encrypted"]
    seen: set[tuple[str, str]] = set()
    # the chain matters for the gateway's own certificate (clients check it against the
    # same CA); a client's certificate may chain through intermediates only its peer has
    gateway_certs = {_cert_key(lc.name, "x509") for conn in _connections(inp.tree)
                     if _is_road_warrior(conn) for lc in _local_certs(conn)}

    for lc in (lc for conn in _connections(inp.tree) for lc in _local_certs(conn)):
        rel = _cert_key(lc.name, "x509")
        if (lc.conn.name, rel) in seen:
            continue
        seen.add((lc.conn.name, rel))
        where = lc.setting_origin
        label = f"{lc.round.path}.certs '{lc.name}'"
        cf = certs.get(rel) or next((c for c in inp.certs if c.path.endswith("/" + lc.name)),
                                    None)
        if cf is None:
            out.append(finding_at(where, "error", "cert-missing",
                                  f"{label}: no such file in x509/",
                                  f"put the certificate into x509/{lc.name} or fix the name"))
            continue
        cert = load_certificate(cf.data)
        if cert is None:
            out.append(finding_at(where, "error", "cert-unreadable",
                                  f"{label}: {cf.path} is not an X.509 certificate",
                                  "replace it with the PEM or DER certificate"))
            continue
        gateway = _is_road_warrior(lc.conn)
        id_setting = lc.round.settings.get("id")
        if id_setting is not None:
            ident = parse_identity(id_setting.value)
            if not cert_has_identity(cert, ident):
                what = "subject DN" if ident.kind == "dn" else "subjectAltName"
                out.append(finding_at(
                    id_setting.origin, "error", "cert-id",
                    f"{lc.round.path}.id '{id_setting.value}' is not in the {what} of "
                    f"{cf.path}",
                    "reissue the certificate with that name in its SAN "
                    "(swand pki) or set id to a name it holds",
                ))
        elif gateway:
            dns = (_sans(cert) or x509.SubjectAlternativeName([])).get_values_for_type(
                x509.DNSName)
            fix = f"set id = {dns[0]}" if dns else "set id to the gateway's DNS name"
            out.append(finding_at(
                lc.round.origin, "warning", "cert-id-unset",
                f"{lc.round.path}: no id, so the gateway identifies with its subject DN; "
                "clients check the name they connect to against the SAN",
                fix + f" in {lc.round.path}",
            ))
        if gateway and ("eku", cf.path) not in seen:
            seen.add(("eku", cf.path))
            ekus = _ekus(cert)
            if ekus is not None and ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
                out.append(finding_at(
                    where, "error", "cert-eku-server",
                    f"{cf.path} lacks the serverAuth extended key usage: Windows and macOS "
                    "reject the gateway", "reissue it with EKU serverAuth (swand pki)"))
            if ekus is None or IKE_INTERMEDIATE not in ekus:
                out.append(finding_at(
                    where, "warning", "cert-eku-ike-intermediate",
                    f"{cf.path} lacks the ikeIntermediate extended key usage that older "
                    "macOS/iOS clients require", "reissue it with EKU serverAuth and "
                    "ikeIntermediate (1.3.6.1.5.5.8.2.2)"))
        if ("cert", cf.path) in seen:
            continue  # validity, chain and key: once per file, not per connection
        seen.add(("cert", cf.path))
        if inp.now > _not_after(cert):
            out.append(finding_at(
                where, "error", "cert-expired",
                f"{cf.path} expired on {_not_after(cert):%Y-%m-%d}",
                "issue a new certificate and reload"))
        elif inp.now < _not_before(cert):
            out.append(finding_at(
                where, "error", "cert-not-yet-valid",
                f"{cf.path} is valid only from {_not_before(cert):%Y-%m-%d %H:%M} UTC",
                "check the system clock or reissue the certificate"))
        elif _not_after(cert) - inp.now < EXPIRY_WARNING:
            days = (_not_after(cert) - inp.now).days
            out.append(finding_at(
                where, "warning", "cert-expiring",
                f"{cf.path} expires in {days} day{'s' if days != 1 else ''} "
                f"({_not_after(cert):%Y-%m-%d})", "renew it now and reload"))
        if rel in gateway_certs and not chains_to_ca(cert, cas, intermediates):
            out.append(finding_at(
                where, "error", "cert-chain",
                f"{cf.path} does not chain to a CA in x509ca/ (issuer "
                f"{cert.issuer.rfc4514_string()})",
                "put the issuing CA's certificate into x509ca/"))
        if _public_bytes(cert.public_key()) not in key_publics:
            if encrypted:
                out.append(finding_at(
                    where, "warning", "key-unverified",
                    f"no unencrypted private key matches {cf.path}; encrypted keys not "
                    f"checked: {', '.join(encrypted)}",
                    "make sure one of them is its key (swand check cannot decrypt them)"))
            else:
                out.append(finding_at(
                    where, "error", "key-missing",
                    f"no private key in private/ matches {cf.path}",
                    "put the certificate's key into private/ (mode 0600)"))
    out.extend(check_key_modes(inp))
    return out


def check_key_modes(inp: CheckInput) -> list[Finding]:
    """Private keys readable by anyone but root."""
    out = []
    for f in inp.keys:
        if f.mode & 0o004:
            out.append(Finding(f.path, 0, "error", "key-mode",
                               f"private key {f.path} is world-readable "
                               f"(mode {f.mode & 0o777:04o})", f"chmod 600 {f.path}"))
        elif f.mode & 0o070:
            out.append(Finding(f.path, 0, "warning", "key-mode",
                               f"private key {f.path} is group-accessible "
                               f"(mode {f.mode & 0o777:04o})", f"chmod 600 {f.path}"))
    return out


def check_client_cert_curves(inp: CheckInput) -> list[Finding]:
    """An ECDSA client certificate whose curve is not among the connection's IKE DH
    groups: Windows couples them and fails the exchange. Client certificates are those in
    x509/ that no connection uses as its own (local) certificate, plus the local
    certificates of connections that are clients themselves (no pools, remote_addrs), plus
    those `swand client add` issued (swand-clients/)."""
    out: list[Finding] = []
    conns = _connections(inp.tree)
    local_names = {_cert_key(lc.name, "x509") for c in conns for lc in _local_certs(c)}
    peer_certs = [f for f in inp.certs if f.path not in local_names] + list(inp.clients)
    for conn in conns:
        severity = _serves_windows(conn, inp.windows)
        as_client = not _is_road_warrior(conn) and conn.get("remote_addrs") and \
            inp.windows != "no"
        if severity is None and not as_client:
            continue
        candidates: list[tuple[CredentialFile, Origin | None]] = []
        if severity is not None:
            # a connection pinned to one identity only ever sees that client's certificate
            remote_ids = [parse_identity(r.get("id") or "%any") for r in _rounds(conn, "remote")]
            pinned = [i for i in remote_ids if not _is_wildcard(i)]
            for f in peer_certs:
                cert = load_certificate(f.data)
                if cert is not None and all(cert_has_identity(cert, i) for i in pinned):
                    candidates.append((f, None))
        if as_client:
            by_path = {f.path: f for f in inp.certs}
            for lc in _local_certs(conn):
                own = by_path.get(_cert_key(lc.name, "x509"))
                if own is not None:
                    candidates.append((own, lc.setting_origin))
        setting = conn.settings.get("proposals")
        proposals = parse_proposals(setting.value) if setting else []
        if not proposals or any(p.is_default for p in proposals):
            groups = {"ecp256", "ecp384", "ecp521"}  # charon's default includes them all
        else:
            groups = {t for p in proposals for t in p.of(KE)}
        for f, origin in candidates:
            cert = load_certificate(f.data)
            if cert is None:
                continue
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                continue
            group = CURVE_GROUP.get(key.curve.name)
            if group is None or group in groups:
                continue
            where = origin or (setting.origin if setting else conn.origin)
            out.append(finding_at(
                where, severity or "warning", "cert-curve-dh",
                f"{f.path} is ECDSA {key.curve.name} but connection '{conn.name}' offers no "
                f"{group} IKE group: Windows fails to authenticate",
                f"add -{group} to {conn.name}'s proposals or issue the certificate on the "
                "curve of the IKE group",
            ))
    return out
