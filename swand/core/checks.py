"""`swand check`'s findings: the classic mistakes of an IKEv2 road-warrior gateway, found
in a parsed swanctl.conf, its credential files and (read-only) facts about the running
system.

Pure: the command layer (`swand.commands.check`) reads the files, probes the system and
hands everything in as `CheckInput` / `SystemFacts`; every function here only looks.
Each finding names a file and line, a severity and a one-line fix.

"Serves Windows" (swand.toml `[check] windows`): `auto` treats every road-warrior
connection (one with `pools`) whose clients authenticate with certificates or EAP as
serving Windows' built-in client, and reports what Windows cannot negotiate as warnings;
`yes` makes those errors; `no` skips them. A "road-warrior connection" is one with `pools`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from swand.core import profiles
from swand.core.proposals import KE, Proposal, is_charon6_keyword, tokenize
from swand.core.settings import Origin, Section

Severity = Literal["error", "warning"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: RFC 4945 ikeIntermediate; older macOS/iOS clients want it on the gateway certificate
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where, how bad, what, and the one-line fix."""

    file: str
    line: int
    severity: Severity
    code: str
    message: str
    fix: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line > 0 else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message} (fix: {self.fix})"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file, "line": self.line, "severity": self.severity,
            "code": self.code, "message": self.message, "fix": self.fix,
        }


def finding_at(
    origin: Origin | None, severity: Severity, code: str, message: str, fix: str,
    default_file: str = "swanctl.conf",
) -> Finding:
    if origin is None:
        return Finding(default_file, 0, severity, code, message, fix)
    return Finding(origin.file, origin.line, severity, code, message, fix)


def parse_where(where: str) -> tuple[str, int]:
    """`file:line` (as SettingsError and LoadError print it) back into its parts."""
    file, sep, line = where.rpartition(":")
    if sep and line.isdigit():
        return file, int(line)
    return where, 0


# --- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialFile:
    """A file of a credential folder: `path` relative to the swanctl folder
    (`x509/gateway.pem`), its bytes and its permission bits."""

    path: str
    data: bytes = field(repr=False)
    mode: int = 0o600


@dataclass(frozen=True)
class CheckInput:
    """Everything the checks look at, read by the command layer."""

    tree: Section
    #: swanctl.conf's path, for findings about the whole file
    conf_file: str
    #: x509/ (own and peer certificates), x509ca/ (trusted CAs)
    certs: tuple[CredentialFile, ...] = ()
    cas: tuple[CredentialFile, ...] = ()
    #: private/, rsa/, ecdsa/, pkcs8/, pkcs12/ files
    keys: tuple[CredentialFile, ...] = ()
    #: client certificates `swand client add` issued (swand-clients/, not loaded by charon)
    clients: tuple[CredentialFile, ...] = ()
    #: swand.toml [check] windows
    windows: str = "auto"
    #: swand.toml [keepalive] conns, and where they were set
    keepalive: tuple[str, ...] = ()
    swand_toml: str = "swand.toml"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: swand.toml [ipv6] mode (none | routed | nat66)
    ipv6_mode: str = "none"
    #: swand keeps IPv6 forwarding on for IPv6 pools ([firewall] enabled, [sysctl] ip_forward)
    sets_forwarding: bool = True
    #: swand turns accept_ra 1 into 2 on the IPv6 egress ([sysctl] accept_ra too)
    sets_accept_ra: bool = True
    #: [firewall] enabled: swand writes kernel state at all (NDP proxies included)
    writes_kernel: bool = True


@dataclass(frozen=True)
class SystemFacts:
    """What the running system looks like (probed read-only by the command layer). None
    means "could not find out" and produces no finding."""

    addresses: tuple[IPInterface, ...] | None = None
    ip_forward: bool | None = None
    #: text of `iptables-save`, `iptables-legacy-save`, `nft list ruleset` (those that ran)
    rulesets: tuple[str, ...] | None = None
    #: net.ipv6.conf.all.forwarding
    ipv6_forwarding: bool | None = None
    #: the IPv6 egress (swand's choice: [ipv6] egress or the IPv6 default route's), its
    #: addresses with their prefixes, its accept_ra, and whether its default route came
    #: from a router advertisement
    egress6: str | None = None
    egress6_addresses: tuple[IPInterface, ...] | None = None
    egress6_accept_ra: str | None = None
    egress6_from_ra: bool | None = None


# --- the configuration, in the terms the checks need ------------------------------------

def _connections(tree: Section) -> list[Section]:
    conns = tree.sections.get("connections")
    return list(conns.sections.values()) if conns else []


def _rounds(conn: Section, side: str) -> list[Section]:
    """The `local*` / `remote*` authentication rounds of a connection."""
    return [s for name, s in conn.sections.items() if name.startswith(side)]


def _list(value: str | None) -> list[str]:
    if not value:
        return []
    return [t for t in re.split(r"[,\s]+", value) if t]


def _is_road_warrior(conn: Section) -> bool:
    return bool(_list(conn.get("pools")))


def _remote_auths(conn: Section) -> list[str]:
    return [(r.get("auth") or "pubkey").lower() for r in _rounds(conn, "remote")] or ["pubkey"]


def _serves_windows(conn: Section, mode: str) -> Severity | None:
    """The severity of Windows findings for this connection, or None: not serving it."""
    if mode == "no" or not _is_road_warrior(conn):
        return None
    if mode == "yes":
        return "error"
    usable = any(a == "pubkey" or a.startswith("eap") for a in _remote_auths(conn))
    return "warning" if usable else None


# --- proposals --------------------------------------------------------------------------

#: the curve of an ECDSA certificate -> the DH group Windows couples it with
CURVE_GROUP = {"secp256r1": "ecp256", "secp384r1": "ecp384", "secp521r1": "ecp521"}


def parse_proposals(value: str) -> list[Proposal]:
    """A proposal list as written, each unvalidated (findings name what is wrong)."""
    return [tokenize(text) for text in _list(value)]


def proposal_problem(p: Proposal, kind: str) -> str | None:
    """Why charon would reject this proposal, or None (see `Proposal.problem`)."""
    return p.problem(kind)


def windows_can_negotiate(p: Proposal, kind: str) -> bool:
    """Could Windows' built-in client agree on this proposal (with the right PowerShell
    settings)? charon's `default` proposals include one it can. Answered by the suite
    search `swand client add` makes the Windows profile with, so the two never disagree."""
    if p.is_default:
        return True
    # charon 6.0's additional key exchanges have their own finding (proposal-charon6)
    q = p.without_charon6()
    if q.problem(kind) is not None:
        return False
    if kind == "ike":
        return profiles.windows_ike_suite((q,)) is not None
    return profiles.windows_esp_suite((q,)) is not None


def _proposal_settings(conn: Section) -> Iterator[tuple[str, Section, str]]:
    """(kind, section, key) of every proposal list of a connection and its children."""
    yield "ike", conn, "proposals"
    children = conn.sections.get("children")
    for child in children.sections.values() if children else ():
        yield "esp", child, "esp_proposals"
        yield "ah", child, "ah_proposals"


def check_proposals(inp: CheckInput) -> list[Finding]:
    """Unknown keywords and proposals charon rejects; suites Windows cannot negotiate."""
    out: list[Finding] = []
    for conn in _connections(inp.tree):
        windows = _serves_windows(conn, inp.windows)
        for kind, sec, key in _proposal_settings(conn):
            setting = sec.settings.get(key)
            if setting is None:
                continue  # charon's defaults: valid, and include a Windows suite
            proposals = parse_proposals(setting.value)
            valid = []
            for p in proposals:
                newer = [t for t in p.tokens if is_charon6_keyword(t)]
                if newer:
                    out.append(finding_at(
                        setting.origin, "warning", "proposal-charon6",
                        f"{sec.path}.{key}: '{p.text}': {', '.join(newer)} need charon 6.0 "
                        "(additional key exchanges / ML-KEM); charon 5.9 rejects the "
                        "connection", "run charon 6.0, or drop them for 5.9"))
                problem = proposal_problem(p, kind)
                if problem:
                    out.append(finding_at(
                        setting.origin, "error", "proposal-invalid",
                        f"{sec.path}.{key}: '{p.text}': {problem}",
                        "use strongSwan keywords, e.g. aes256-sha384-prfsha384-ecp384 (IKE) or "
                        "aes256gcm16-ecp384 (ESP)",
                    ))
                else:
                    valid.append(p)
            if windows and kind != "ah" and valid and not any(
                    windows_can_negotiate(p, kind) for p in valid):
                suite = ("aes256-sha384-prfsha384-ecp384" if kind == "ike"
                         else "aes256gcm16-ecp384")
                out.append(finding_at(
                    setting.origin, windows, f"windows-{kind}",
                    f"{sec.path}.{key}: no proposal Windows' built-in client can negotiate",
                    f"add {suite} (AES-GCM-256/SHA-384/ECP-384 works with Windows)",
                ))
    return out


# --- rekeying -----------------------------------------------------------------------------

def _seconds(value: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not m:
        return None
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * factor


def check_rekey(inp: CheckInput) -> list[Finding]:
    """rekey_time ≠ 0 on road-warrior connections: Windows behind NAT drops rekeys the
    responder starts, and the SA dies. charon's defaults are 4h (IKE) and 1h (CHILD)."""
    out: list[Finding] = []
    for conn in _connections(inp.tree):
        if not _is_road_warrior(conn):
            continue
        targets: list[tuple[Section, str]] = [(conn, "4h")]
        children = conn.sections.get("children")
        targets += [(c, "1h") for c in (children.sections.values() if children else ())]
        for sec, default in targets:
            setting = sec.settings.get("rekey_time")
            value = setting.value if setting else default
            if _seconds(value) == 0:
                continue
            origin = setting.origin if setting else sec.origin
            what = "set to " + value if setting else f"not set (default {default})"
            out.append(finding_at(
                origin, "warning", "rekey-responder",
                f"{sec.path}: rekey_time {what} on a road-warrior connection: Windows behind "
                "NAT drops rekeys the gateway starts",
                f"set rekey_time = 0 in {sec.path} (the clients rekey themselves)",
            ))
    return out


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


# --- pools, identities ------------------------------------------------------------------

@dataclass(frozen=True)
class Pool:
    name: str
    origin: Origin
    addrs: str
    ranges: tuple[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                        ipaddress.IPv4Address | ipaddress.IPv6Address], ...]

    @property
    def size(self) -> int:
        return sum(int(b) - int(a) + 1 for a, b in self.ranges)


def _pool_range(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                    ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    text = text.strip()
    if "-" in text:
        a, _, b = text.partition("-")
        lo, hi = ipaddress.ip_address(a.strip()), ipaddress.ip_address(b.strip())
        return (lo, hi) if int(lo) <= int(hi) else (hi, lo)
    net = ipaddress.ip_network(text, strict=False)
    if net.num_addresses > 2:
        # charon hands out neither the network nor the broadcast address of a subnet
        return net.network_address + 1, net.broadcast_address - 1
    return net.network_address, net.broadcast_address


def pools_of(tree: Section) -> tuple[list[Pool], list[Finding]]:
    """The pools with address ranges (dhcp/radius pools are skipped)."""
    pools, out = [], []
    sec = tree.sections.get("pools")
    for name, pool in (sec.sections.items() if sec else ()):
        setting = pool.settings.get("addrs")
        if setting is None or setting.value.strip().lower() in ("dhcp", "radius", ""):
            continue
        ranges = []
        for part in _list(setting.value):
            try:
                r = _pool_range(part)
            except ValueError:
                out.append(finding_at(setting.origin, "error", "pool-addrs",
                                      f"pool '{name}': addrs '{part}' is not an address, "
                                      "subnet or range", "write e.g. 10.8.0.128/25"))
                continue
            if r is not None:
                ranges.append(r)
        pools.append(Pool(name, setting.origin, setting.value.strip(), tuple(ranges)))
    return pools, out


def _overlap(a: Pool, b: Pool) -> bool:
    return any(
        x[0].version == y[0].version and int(x[0]) <= int(y[1]) and int(y[0]) <= int(x[1])
        for x in a.ranges for y in b.ranges
    )


def check_pools(inp: CheckInput, facts: SystemFacts | None = None) -> list[Finding]:
    """Overlapping pools; pools holding an address of the gateway; a one-address pool
    used by two connections or by a connection any client may use."""
    pools, out = pools_of(inp.tree)
    for i, a in enumerate(pools):
        for b in pools[i + 1:]:
            if _overlap(a, b):
                out.append(finding_at(
                    b.origin, "error", "pool-overlap",
                    f"pools '{a.name}' and '{b.name}' overlap: two clients can get the same "
                    "address", f"make '{b.name}' a range outside '{a.name}'"))
    if facts is not None and facts.addresses:
        for pool in pools:
            for iface in facts.addresses:
                addr = iface.ip
                if addr.is_loopback or addr.is_link_local:
                    continue
                inside = any(r[0].version == addr.version and int(r[0]) <= int(addr)
                             <= int(r[1]) for r in pool.ranges)
                if inside:
                    out.append(finding_at(
                        pool.origin, "error", "pool-gateway-address",
                        f"pool '{pool.name}' contains {addr}, an address of this gateway",
                        f"move pool '{pool.name}' to a subnet the gateway does not use"))
                elif _routed_on_link(inp, facts, iface):
                    continue  # [ipv6] mode = "routed": the provider's on-link prefix
                elif iface.network.prefixlen > 0 and any(
                        r[0].version == addr.version
                        and int(r[0]) <= int(iface.network.broadcast_address)
                        and int(iface.network.network_address) <= int(r[1])
                        for r in pool.ranges):
                    out.append(finding_at(
                        pool.origin, "warning", "pool-gateway-subnet",
                        f"pool '{pool.name}' overlaps {iface.network}, a network attached to "
                        "this gateway: its hosts and the clients collide",
                        f"use a pool outside {iface.network}"))
    single = {p.name for p in pools if p.size == 1}
    users: dict[str, list[Section]] = {}
    for conn in _connections(inp.tree):
        for name in _list(conn.get("pools")):
            users.setdefault(name, []).append(conn)
    for name in sorted(single):
        conns = users.get(name, [])
        if len(conns) > 1:
            names = ", ".join(c.name for c in conns)
            out.append(finding_at(
                conns[1].origin_of("pools") or conns[1].origin, "error", "pool-single-shared",
                f"pool '{name}' holds one address but connections {names} use it: only one "
                "of them gets it", "give each pinned client its own one-address pool"))
        for conn in conns:
            if _pinned_by_address(conn):
                continue
            if any(_is_wildcard(parse_identity(r.get("id") or "%any"))
                   for r in _rounds(conn, "remote")) or not _rounds(conn, "remote"):
                out.append(finding_at(
                    conn.origin_of("pools") or conn.origin, "warning", "pool-single-any",
                    f"connection '{conn.name}' pins pool '{name}' (one address) but accepts "
                    "any client identity", f"set remote id in '{conn.name}' to the client's "
                    "certificate DN"))
    return out


def _routed_on_link(inp: CheckInput, facts: SystemFacts, iface: IPInterface) -> bool:
    """In routed IPv6 mode, clients are leased addresses of the egress's on-link prefix."""
    return (inp.ipv6_mode == "routed" and iface.version == 6
            and iface in (facts.egress6_addresses or ()))


def _pinned_by_address(conn: Section) -> bool:
    """A connection limited to specific peer addresses (`remote_addrs`): charon selects it
    by address first, so identity-based conflicts and pins do not apply as for %any."""
    addrs = [a.lower() for a in _list(conn.get("remote_addrs"))]
    return bool(addrs) and not all(a in ("%any", "%any4", "%any6", "0.0.0.0/0", "::/0")
                                   for a in addrs)


def check_remote_ids(inp: CheckInput) -> list[Finding]:
    """Two connections a client could match equally: the same remote id (and local id,
    auth method, addresses). charon always picks the first; the second is dead."""
    out: list[Finding] = []
    seen: dict[tuple[object, ...], Section] = {}
    for conn in _connections(inp.tree):
        if _pinned_by_address(conn):
            continue  # selected by the peer's address, or an initiator: ids may repeat
        remotes: list[Section | None] = [*_rounds(conn, "remote")] or [None]
        locals_ = _rounds(conn, "local")
        local_id = (locals_[0].get("id") or "") if locals_ else ""
        for rnd in remotes[:1]:
            rid = (rnd.get("id") if rnd is not None else None) or "%any"
            auth = ((rnd.get("auth") if rnd is not None else None) or "pubkey").lower()
            ident = parse_identity(rid)
            # constraints that make charon skip a config for a client (group membership,
            # a pinned certificate or key, a CA, an EAP identity) tell the two apart
            constraints = tuple(
                (k, (rnd.get(k) or "").lower()) if rnd is not None else (k, "")
                for k in ("groups", "certs", "pubkeys", "cacerts", "cert_policy", "eap_id",
                          "ca_id")
            )
            key = (
                ident.kind, ident.value.lower() if ident.kind != "dn" else
                _normalize_dn(ident.value), auth, local_id.lower(), constraints,
                tuple(sorted(_list((conn.get("remote_addrs") or "%any").lower()))),
                tuple(sorted(_list((conn.get("local_addrs") or "%any").lower()))),
                conn.get("version") or "0",
            )
            first = seen.get(key)
            if first is None:
                seen[key] = conn
                continue
            origin = (rnd.origin_of("id") if rnd is not None else None) or conn.origin
            wildcard = _is_wildcard(ident)
            out.append(finding_at(
                origin, "warning" if wildcard else "error", "remote-id-duplicate",
                f"connections '{first.name}' and '{conn.name}' match the same remote id "
                f"'{rid}': charon always picks '{first.name}'",
                f"give '{conn.name}' a distinct remote id or merge the two"))
    return out


# --- the running system (when swand's firewall is off) ----------------------------------

_IPT_SOURCE = re.compile(r"(?:^|\s)-s\s+(\S+)")
_NFT_SADDR = re.compile(r"\bip6?\s+saddr\s+(\{[^}]*\}|\S+)")


def _rule_sources(line: str) -> list[IPNetwork] | None:
    """Source networks a NAT rule is limited to; None when it matches any source."""
    m = _IPT_SOURCE.search(line) or _NFT_SADDR.search(line)
    if not m:
        return None
    nets = []
    for part in re.split(r"[{},\s]+", m.group(1)):
        try:
            nets.append(ipaddress.ip_network(part.lstrip("!"), strict=False))
        except ValueError:
            continue
    return nets


def ruleset_nat_covers(rulesets: Iterable[str], pool: Pool) -> bool:
    """Some SNAT/MASQUERADE rule (iptables-save or nft syntax) whose source covers the
    pool, or matches any source."""
    for text in rulesets:
        for line in text.splitlines():
            low = line.lower()
            if line.lstrip().startswith(("#", ":", "*")):
                continue  # comments, chain policies (":POSTROUTING ACCEPT"), table heads
            if not ("masquerade" in low or "snat" in low):
                continue
            sources = _rule_sources(line)
            if sources is None:
                return True
            for net in sources:
                if all(r[0].version == net.version and r[0] in net and r[1] in net
                       for r in pool.ranges):
                    return True
    return False


def ruleset_has_mss_clamp(rulesets: Iterable[str]) -> bool:
    for text in rulesets:
        low = text.lower()
        if "-j tcpmss" in low or re.search(r"maxseg\s+size\s+set", low):
            return True
    return False


def check_system(inp: CheckInput, facts: SystemFacts, firewall_enabled: bool) -> list[Finding]:
    """With swand's firewall off, forwarding, NAT for the pools and MSS clamping are the
    administrator's job: say what is missing (read-only facts, never changed here)."""
    if firewall_enabled:
        return []
    pools, _ = pools_of(inp.tree)
    if not pools:
        return []  # a client: nothing to forward
    out = []
    where = inp.conf_file
    if facts.ip_forward is False:
        out.append(Finding(where, 0, "warning", "system-ip-forward",
                           "net.ipv4.ip_forward is 0 and [firewall] enabled = false: road "
                           "warriors reach nothing beyond the gateway; you will have to do "
                           "this yourself", "sysctl -w net.ipv4.ip_forward=1 (and persist it "
                           "in /etc/sysctl.d/)"))
    if facts.rulesets is not None:
        for pool in pools:
            if pool.ranges and pool.ranges[0][0].version == 4 and not ruleset_nat_covers(
                    facts.rulesets, pool):
                out.append(finding_at(
                    pool.origin, "warning", "system-nat",
                    f"no SNAT/MASQUERADE rule covers pool '{pool.name}' and [firewall] "
                    "enabled = false: you will have to do this yourself",
                    f"iptables -t nat -A POSTROUTING -s {pool.addrs} -o <egress> -j MASQUERADE"))
        if not ruleset_has_mss_clamp(facts.rulesets):
            out.append(Finding(where, 0, "warning", "system-mss",
                               "no TCP MSS clamping rule and [firewall] enabled = false: "
                               "large TCP transfers through the tunnel may stall; you will "
                               "have to do this yourself",
                               f"iptables -t mangle -A FORWARD -s {pools[0].addrs} -p tcp "
                               "--tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1360 (and -d for "
                               "the way back)"))
    return out


# --- IPv6: a dual-stack gateway (issue 13) --------------------------------------------------

ULA = ipaddress.ip_network("fc00::/7")


def _v6_ranges(pool: Pool) -> list[tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]]:
    return [(a, b) for a, b in pool.ranges
            if isinstance(a, ipaddress.IPv6Address) and isinstance(b, ipaddress.IPv6Address)]


def _children(conn: Section) -> list[Section]:
    children = conn.sections.get("children")
    return list(children.sections.values()) if children else []


def check_ipv6(inp: CheckInput, facts: SystemFacts | None = None) -> list[Finding]:
    """IPv6 pools the gateway cannot serve: no IPv6 selector to tunnel their traffic,
    a routed pool outside the egress's on-link prefix, a ULA pool nobody translates,
    IPv6 forwarding off, and an RA-learned default route that forwarding would drop."""
    pools, _ = pools_of(inp.tree)
    v6_pools = {p.name: p for p in pools if _v6_ranges(p)}
    if not v6_pools:
        return []
    out: list[Finding] = []
    for conn in _connections(inp.tree):
        served = [n for n in _list(conn.get("pools")) if n in v6_pools]
        if not served:
            continue
        for child in _children(conn):
            ts = [t.split("[")[0].strip().lower() for t in _list(child.get("local_ts"))]
            v6 = [t for t in ts if ":" in t]
            origin = child.origin_of("local_ts") or child.origin
            if "::/0" in v6:
                continue
            if not v6:
                out.append(finding_at(
                    origin, "error", "ipv6-no-selector",
                    f"connection '{conn.name}' leases IPv6 addresses (pool "
                    f"'{served[0]}') but child '{child.name}' tunnels no IPv6: clients' "
                    "IPv6 goes around the tunnel, in the clear",
                    f"add ::/0 to local_ts of '{child.name}' (local_ts = 0.0.0.0/0, ::/0)"))
            else:
                out.append(finding_at(
                    origin, "warning", "ipv6-split-selector",
                    f"child '{child.name}' of '{conn.name}' tunnels only {', '.join(v6)} "
                    "of IPv6: the rest of clients' IPv6 bypasses the tunnel",
                    "use ::/0 unless split tunnelling is intended"))
    if inp.ipv6_mode == "routed" and not inp.writes_kernel:
        out.append(Finding(
            inp.swand_toml, 0, "warning", "ipv6-routed-no-kernel",
            "[ipv6] mode = \"routed\" but [firewall] enabled = false: swand writes nothing "
            "to the kernel, so no NDP proxy entry answers for the clients' addresses",
            "set [firewall] enabled = true, or run your own NDP proxy (ndppd)"))
    for pool in v6_pools.values():
        ula = all(a in ULA and b in ULA for a, b in _v6_ranges(pool))
        if inp.ipv6_mode == "none" and ula:
            out.append(finding_at(
                pool.origin, "warning", "ipv6-ula-unrouted",
                f"pool '{pool.name}' is a unique local range and [ipv6] mode = \"none\": "
                "no router on the internet delivers its traffic back",
                f"set [ipv6] mode = \"nat66\" in {inp.swand_toml}, or use the provider's "
                "prefix with mode = \"routed\""))
        if inp.ipv6_mode == "routed" and facts is not None and facts.egress6_addresses:
            links = [i.network for i in facts.egress6_addresses
                     if i.version == 6 and not i.ip.is_link_local and i.network.prefixlen < 128]
            on_link = any(all(a in net and b in net for a, b in _v6_ranges(pool))
                          for net in links)
            if not on_link:
                have = ", ".join(str(n) for n in links) or "none"
                out.append(finding_at(
                    pool.origin, "error", "ipv6-routed-off-link",
                    f"pool '{pool.name}' ({pool.addrs}) is not inside a prefix on "
                    f"{facts.egress6} (on-link: {have}): [ipv6] mode = \"routed\" answers "
                    "neighbour discovery there, so the provider's router never asks for "
                    "these addresses",
                    "carve the pool from the on-link prefix, or set [ipv6] mode = \"none\" "
                    "if the provider routes this prefix to the gateway"))
    if facts is None:
        return out
    where = inp.conf_file
    if facts.ipv6_forwarding is False and not inp.sets_forwarding:
        out.append(Finding(
            where, 0, "warning", "ipv6-forwarding",
            "net.ipv6.conf.all.forwarding is 0 and swand does not set it ([firewall] "
            "enabled or [sysctl] ip_forward is false): road warriors' IPv6 reaches nothing "
            "beyond the gateway",
            "sysctl -w net.ipv6.conf.all.forwarding=1 (and persist it in /etc/sysctl.d/)"))
    accept_ra = (facts.egress6_accept_ra or "").strip()
    if facts.egress6_from_ra and accept_ra in ("0", "1"):
        fixed = accept_ra == "1" and inp.sets_forwarding and inp.sets_accept_ra
        if not fixed:
            out.append(Finding(
                where, 0, "error", "ipv6-accept-ra",
                f"{facts.egress6} takes its IPv6 default route from router advertisements "
                f"but its accept_ra is {accept_ra}: with IPv6 forwarding on, the kernel "
                "drops that route and ignores every later RA (the gateway loses IPv6)",
                f"sysctl -w net.ipv6.conf.{facts.egress6}.accept_ra=2 (persist it), or "
                "[sysctl] accept_ra = true with ip_forward = true"))
    return out


# --- swand.toml against swanctl.conf -------------------------------------------------------

def check_keepalive(inp: CheckInput) -> list[Finding]:
    """[keepalive] conns must name connections (or their children) that exist and can be
    initiated: a typo would silently keep nothing up."""
    names = {c.name for c in _connections(inp.tree)}
    children = {
        child for c in _connections(inp.tree)
        for child in (c.sections["children"].sections if "children" in c.sections else ())
    }
    out = []
    for name in inp.keepalive:
        if name not in names and name not in children:
            known = ", ".join(sorted(names)) or "none"
            out.append(Finding(inp.swand_toml, 0, "error", "keepalive-unknown",
                               f"[keepalive] conns names '{name}', which swanctl.conf does not "
                               f"define (connections: {known})",
                               "fix the name in swand.toml"))
    return out


# --- everything ---------------------------------------------------------------------------

def settings_warnings(tree: Section) -> list[Finding]:
    """What strongSwan would merely log while parsing (missing referenced sections...).
    An `include` glob that matches nothing is normal (conf.d/*.conf) and not reported."""
    out = []
    for text in tree.warnings:
        if "no files found matching" in text and re.search(r"include '[^']*[*?\[]", text):
            continue
        where, _, message = text.partition(": ")
        file, line = parse_where(where)
        out.append(Finding(file, line, "warning", "syntax-warning", message,
                           "fix the reference or remove it"))
    return out


def run_checks(
    inp: CheckInput, facts: SystemFacts | None = None, firewall_enabled: bool = True,
) -> list[Finding]:
    """Every check over one configuration, sorted by file and line."""
    out: list[Finding] = []
    out += settings_warnings(inp.tree)
    out += check_proposals(inp)
    out += check_rekey(inp)
    out += check_certificates(inp)
    out += check_client_cert_curves(inp)
    out += check_pools(inp, facts)
    out += check_remote_ids(inp)
    out += check_keepalive(inp)
    out += check_ipv6(inp, facts)
    if facts is not None:
        out += check_system(inp, facts, firewall_enabled)
    return sorted(dict.fromkeys(out), key=lambda f: (f.file, f.line, f.severity, f.code))

