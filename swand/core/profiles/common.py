"""What every client profile is made from: the gateway's facts, the client's, and the
concrete suites the gateway accepts (pure).

`gateway_from_settings` reads the gateway's parsed swanctl.conf once; each platform module
renders its own import format from a `GatewayInfo` and a `ClientInfo`.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from swand.core.settings import Section, Setting

# --- errors -----------------------------------------------------------------------------


class ProfileError(Exception):
    """A profile that cannot be made; the message names the proposal, file or setting."""


# --- strongSwan proposal keywords ----------------------------------------------------------

#: encryption keywords -> canonical name; AEAD ones end in "gcm16"/"poly1305"/"ccm16"
_ENCR_ALIASES: dict[str, str] = {
    "des": "des", "3des": "3des",
    "aes128": "aes128", "aes192": "aes192", "aes256": "aes256", "aes": "aes128",
    "aes128ctr": "aes128ctr", "aes192ctr": "aes192ctr", "aes256ctr": "aes256ctr",
    "camellia128": "camellia128", "camellia192": "camellia192",
    "camellia256": "camellia256",
    "chacha20poly1305": "chacha20poly1305",
}
for _bits in (128, 192, 256):
    for _icv, _canon in (("8", "8"), ("64", "8"), ("12", "12"), ("96", "12"),
                         ("16", "16"), ("128", "16"), ("", "16")):
        _ENCR_ALIASES[f"aes{_bits}gcm{_icv}"] = f"aes{_bits}gcm{_canon}"
        _ENCR_ALIASES[f"aes{_bits}ccm{_icv}"] = f"aes{_bits}ccm{_canon}"

_INTEG_ALIASES: dict[str, str] = {
    "md5": "md5", "md5_128": "md5_128", "sha1": "sha1", "sha": "sha1", "sha1_160": "sha1_160",
    "sha256": "sha256", "sha2_256": "sha256", "sha256_96": "sha256_96",
    "sha2_256_96": "sha256_96", "sha384": "sha384", "sha2_384": "sha384",
    "sha512": "sha512", "sha2_512": "sha512", "aesxcbc": "aesxcbc", "aescmac": "aescmac",
    "aes128gmac": "aes128gmac", "aes192gmac": "aes192gmac", "aes256gmac": "aes256gmac",
}
_PRF_ALIASES: dict[str, str] = {
    "prfmd5": "md5", "prfsha1": "sha1", "prfsha256": "sha256", "prfsha384": "sha384",
    "prfsha512": "sha512", "prfaesxcbc": "aesxcbc", "prfaescmac": "aescmac",
}
_DH_NAMES = {
    "modp768", "modp1024", "modp1536", "modp2048", "modp3072", "modp4096", "modp6144",
    "modp8192", "modp1024s160", "modp2048s224", "modp2048s256", "ecp192", "ecp224",
    "ecp256", "ecp384", "ecp521", "ecp224bp", "ecp256bp", "ecp384bp", "ecp512bp",
    "curve25519", "curve448",
}
_DH_ALIASES = {name: name for name in _DH_NAMES} | {"x25519": "curve25519", "x448": "curve448"}
_ESN = {"esn", "noesn"}
#: ESP without PFS, spelled out (charon 5.9 takes both)
_NO_PFS = {"none", "modpnone"}

#: strongSwan 5.9's built-in proposals, used where swanctl.conf says `default` (or nothing)
DEFAULT_IKE = (
    "aes128-aes192-aes256-sha256-sha384-sha512-sha1-prfsha256-prfsha384-prfsha512-prfsha1-"
    "curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
    "aes128gcm16-aes192gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-"
    "prfsha1-curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
)
DEFAULT_ESP = ("aes128gcm16-aes256gcm16-chacha20poly1305", "aes128-aes256-sha256-sha1")


def is_aead(encr: str) -> bool:
    return "gcm" in encr or "ccm" in encr or encr == "chacha20poly1305"


@dataclass(frozen=True)
class Proposal:
    """One parsed proposal: each algorithm kind in the order written."""

    text: str
    encryption: tuple[str, ...]
    integrity: tuple[str, ...] = ()
    prf: tuple[str, ...] = ()
    dh: tuple[str, ...] = ()
    esn: tuple[str, ...] = ()

    @property
    def prfs(self) -> tuple[str, ...]:
        """The PRFs charon uses: explicit ones, else one per integrity algorithm."""
        if self.prf:
            return self.prf
        return tuple(dict.fromkeys(i.split("_")[0] for i in self.integrity))


def parse_proposal(text: str, ike: bool) -> Proposal:
    """Split one strongSwan proposal (``aes256gcm16-prfsha384-ecp384``) into its kinds.

    A trailing ``!`` (strict, strongSwan 5.x ipsec.conf) is ignored. Unknown keywords raise
    ProfileError naming the keyword, because a profile built on a guess would fail late.
    """
    encr: list[str] = []
    integ: list[str] = []
    prf: list[str] = []
    dh: list[str] = []
    esn: list[str] = []
    for raw in text.strip().rstrip("!").lower().split("-"):
        token = raw.strip()
        if token in _ENCR_ALIASES:
            encr.append(_ENCR_ALIASES[token])
        elif token in _INTEG_ALIASES:
            integ.append(_INTEG_ALIASES[token])
        elif token in _PRF_ALIASES and ike:
            prf.append(_PRF_ALIASES[token])
        elif token in _DH_ALIASES:
            dh.append(_DH_ALIASES[token])
        elif token in _ESN and not ike:
            esn.append(token)
        elif token in _NO_PFS and not ike:
            continue  # the same as naming no group
        else:
            kind = "IKE" if ike else "ESP"
            raise ProfileError(f"{kind} proposal {text!r}: unknown algorithm keyword {token!r}")
    if not encr:
        raise ProfileError(f"proposal {text!r} has no encryption algorithm")
    return Proposal(text, tuple(encr), tuple(integ), tuple(prf), tuple(dh), tuple(esn))


def parse_proposals(values: Iterable[str], ike: bool) -> tuple[Proposal, ...]:
    """A swanctl `proposals` / `esp_proposals` list; ``default`` expands to charon's."""
    out: list[Proposal] = []
    for value in values:
        if value.strip().lower() == "default":
            out.extend(parse_proposal(p, ike) for p in (DEFAULT_IKE if ike else DEFAULT_ESP))
        else:
            out.append(parse_proposal(value, ike))
    return tuple(out)


def split_list(value: str) -> tuple[str, ...]:
    """A swanctl comma-separated list value."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


# --- the gateway's facts ---------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayInfo:
    """What every client profile needs to know about the gateway."""

    #: what clients dial: a DNS name or an IP address
    address: str
    #: the identity the gateway proves (its local id); clients expect it as remote id
    identity: str
    ike_proposals: tuple[str, ...] = ("aes256gcm16-prfsha384-ecp384",)
    esp_proposals: tuple[str, ...] = ("aes256gcm16-ecp384",)
    #: the road-warrior connection and its child on the gateway
    conn_name: str = "roadwarriors"
    child_name: str = "roadwarriors"
    #: the child's local_ts: what the client routes into the tunnel
    local_ts: tuple[str, ...] = ("0.0.0.0/0",)
    pool_addrs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    #: the gateway certificate file (under x509/), when the config names one
    cert_file: str | None = None
    #: the name of the connection's (first) remote auth section: remote, remote-1, ...
    remote_section: str = "remote"

    @property
    def ike(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.ike_proposals, ike=True)

    @property
    def esp(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.esp_proposals, ike=False)


def _setting(section: Section | None, key: str) -> Setting | None:
    return None if section is None else section.settings.get(key)


def _value(section: Section | None, key: str, default: str | None = None) -> str | None:
    s = _setting(section, key)
    return default if s is None else s.value


def _auth_rounds(conn: Section, side: str) -> list[Section]:
    """`local`, `local-1`, `localX` ... sections in file order (swanctl's suffix rule)."""
    return [s for name, s in conn.sections.items() if name == side or name.startswith(side)]


def _is_road_warrior(conn: Section) -> bool:
    """Pools, certificate-authenticated clients, and any identity (a connection pinned to
    one client's id, like `t520` or a `--static-ip` client, is not the road-warrior one)."""
    remotes = _auth_rounds(conn, "remote")
    first = remotes[0] if remotes else None
    auth = _value(first, "auth", "pubkey") or "pubkey"
    remote_id = _value(first, "id", "%any") or "%any"
    return bool(_value(conn, "pools")) and auth.startswith("pubkey") and remote_id == "%any"


def find_road_warrior(root: Section, conn_name: str | None = None) -> Section:
    """The road-warrior connection: the named one, or the only one with pools and pubkey
    client authentication."""
    conns = root.sections.get("connections")
    if conns is None or not conns.sections:
        raise ProfileError(f"{root.origin.file}: no connections section")
    if conn_name is not None:
        conn = conns.sections.get(conn_name)
        if conn is None:
            raise ProfileError(
                f"{conns.origin}: no connection {conn_name!r} "
                f"(have: {', '.join(conns.sections)})"
            )
        return conn
    candidates = [c for c in conns.sections.values() if _is_road_warrior(c)]
    if len(candidates) != 1:
        have = ", ".join(c.name for c in candidates) or "none"
        raise ProfileError(
            f"{conns.origin}: cannot tell which connection serves road warriors "
            f"(candidates with pools and pubkey clients: {have}); name it with --conn"
        )
    return candidates[0]


def gateway_from_settings(
    root: Section, *, conn_name: str | None = None, address: str | None = None,
    identity: str | None = None,
) -> GatewayInfo:
    """Read the gateway's facts from its parsed swanctl.conf.

    The identity is the road-warrior connection's local id (or the one given); the address
    clients dial defaults to that identity. Proposals come from the connection and its
    first child; pool addresses and DNS from the pools it names.
    """
    conn = find_road_warrior(root, conn_name)
    where = f"{conn.origin} (connection {conn.name})"
    local = next(iter(_auth_rounds(conn, "local")), None)
    ident = identity or _value(local, "id")
    cert_files = split_list(_value(local, "certs", "") or "")
    if not ident or "*" in ident or ident == "%any":
        raise ProfileError(
            f"{where}: the gateway's local id is not a plain name ({ident or 'unset'}); "
            "set local.id to the name clients dial, or pass --gateway-id"
        )
    addr = address or ident
    assert addr is not None and ident is not None
    children = conn.sections.get("children")
    child = next(iter(children.sections.values()), None) if children else None
    if child is None:
        raise ProfileError(f"{where}: has no children")
    ike = split_list(_value(conn, "proposals", "default") or "default")
    esp = split_list(_value(child, "esp_proposals", "default") or "default")
    local_ts = split_list(_value(child, "local_ts", "0.0.0.0/0") or "0.0.0.0/0")
    pool_addrs: list[str] = []
    dns: list[str] = []
    pools = root.sections.get("pools")
    for pool_name in split_list(_value(conn, "pools", "") or ""):
        pool = pools.sections.get(pool_name) if pools else None
        if pool is None:
            continue  # a pool provided by another plugin (attr-sql, dhcp): nothing to read
        pool_addrs.extend(split_list(_value(pool, "addrs", "") or ""))
        dns.extend(split_list(_value(pool, "dns", "") or ""))
    remotes = _auth_rounds(conn, "remote")
    gw = GatewayInfo(
        remote_section=remotes[0].name if remotes else "remote",
        address=addr, identity=ident, ike_proposals=ike, esp_proposals=esp,
        conn_name=conn.name, child_name=child.name, local_ts=local_ts,
        pool_addrs=tuple(pool_addrs), dns=tuple(dict.fromkeys(dns)),
        cert_file=cert_files[0] if cert_files else None,
    )
    gw.ike  # noqa: B018 - validate the keywords now, naming the connection
    gw.esp  # noqa: B018
    return gw


# --- client facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientInfo:
    """The client's certificate facts, as the profiles need them."""

    name: str
    #: the subject DN in strongSwan's string form ("C=DE, O=example, CN=alice")
    dn: str
    #: the subjectAltName the non-Windows clients send as their identity
    san: str
    #: PKCS#12 blob (key, certificate, CA chain), password-protected
    p12: bytes
    #: the CA certificate, DER
    ca_der: bytes
    ca_common_name: str
    #: "ECDSA256" / "ECDSA384" / "ECDSA521" / "RSA" (Apple's CertificateType names)
    key_type: str = "ECDSA384"
    static_ip: str | None = None


# --- concrete suites ------------------------------------------------------------------


@dataclass(frozen=True)
class IkeSuite:
    """One concrete IKE suite in strongSwan keywords; `integrity` empty for AEAD."""

    encryption: str
    integrity: str | None
    prf: str
    dh: str

    def keywords(self) -> str:
        parts = [self.encryption]
        if self.integrity:
            parts.append(self.integrity)
        parts += [f"prf{self.prf}", self.dh]
        return "-".join(parts)


@dataclass(frozen=True)
class EspSuite:
    encryption: str
    integrity: str | None
    dh: str | None

    def keywords(self) -> str:
        parts = [self.encryption]
        if self.integrity:
            parts.append(self.integrity)
        if self.dh:
            parts.append(self.dh)
        return "-".join(parts)


def ike_suites(proposals: Sequence[Proposal]) -> Iterable[IkeSuite]:
    """Every concrete suite the gateway accepts, in the gateway's preference order."""
    for p in proposals:
        for encr in p.encryption:
            for dh in p.dh:
                if is_aead(encr):
                    for prf in p.prfs:
                        yield IkeSuite(encr, None, prf, dh)
                else:
                    for integ in p.integrity:
                        for prf in p.prfs:
                            yield IkeSuite(encr, integ, prf, dh)


def esp_suites(proposals: Sequence[Proposal]) -> Iterable[EspSuite]:
    for p in proposals:
        if p.esn and "noesn" not in p.esn:
            continue  # ESN only: neither Windows nor Apple offer it
        dhs: tuple[str | None, ...] = p.dh or (None,)
        for encr in p.encryption:
            integs: tuple[str | None, ...] = (None,) if is_aead(encr) else p.integrity
            for integ in integs:
                for dh in dhs:
                    yield EspSuite(encr, integ, dh)


def swanctl_quote(value: str) -> str:
    """A swanctl.conf value, quoted when it holds characters the parser treats specially."""
    if re.fullmatch(r"[A-Za-z0-9_.:/@%*+-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stable_uuid(*parts: str) -> str:
    """A UUID derived from names, so re-generating a profile replaces the old one."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "swand:" + ":".join(parts))).upper()
