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

from swand.core import proposals, swanctl
from swand.core.proposals import Proposal, is_aead
from swand.core.settings import Section, Setting

# --- errors -----------------------------------------------------------------------------


class ProfileError(Exception):
    """A profile that cannot be made; the message names the proposal, file or setting."""


# --- proposals: core.proposals, with profile errors ------------------------------------


def parse_proposal(text: str, ike: bool) -> Proposal:
    """One proposal charon accepts (`core.proposals`), else ProfileError naming it: a
    profile built on a guess would fail late."""
    try:
        return proposals.parse_proposal(text, "ike" if ike else "esp")
    except proposals.ProposalError as exc:
        raise ProfileError(str(exc)) from None


def parse_proposals(values: Iterable[str], ike: bool) -> tuple[Proposal, ...]:
    """A swanctl `proposals` / `esp_proposals` list; ``default`` expands to charon's."""
    try:
        return proposals.parse_proposals(values, "ike" if ike else "esp")
    except proposals.ProposalError as exc:
        raise ProfileError(str(exc)) from None


def split_list(value: str) -> tuple[str, ...]:
    """A swanctl comma-separated list value, split exactly as swanctl's loader splits it
    (`swanctl.split_list`), so a profile sees the lists charon is sent."""
    return tuple(swanctl.split_list(value))


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
    #: connection and pool names the gateway's config already has (with conf.d/), so a
    #: pinned client's sections never merge into someone else's
    taken_sections: frozenset[str] = frozenset()
    #: the road-warrior connection's pools that hand out IPv4 / IPv6 addresses: a client
    #: pinned to an address of one family still draws the other family's from these
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()

    @property
    def tunnels_ipv6(self) -> bool:
        """Whether the gateway carries IPv6 for its clients (an IPv6 selector in the
        child's local_ts; `gateway_from_settings` makes sure a v6 pool comes with it).
        Without it every profile blocks IPv6 while connected, so it cannot leak."""
        return any(is_ipv6_selector(ts) for ts in self.local_ts)

    @property
    def ike(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.ike_proposals, ike=True)

    @property
    def esp(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.esp_proposals, ike=False)


#: the two halves of the IPv6 space: routes for them win over any native default route
#: (`::/0`), so while the tunnel is up IPv6 goes where the profile says (into the tunnel,
#: or nowhere), never around it. Algo's Windows script routes the same two.
IPV6_HALVES = ("::/1", "8000::/1")


def is_ipv6_selector(text: str) -> bool:
    """`::/0`, `2001:db8::/32[tcp]`, `fd00::1-fd00::9`: an IPv6 traffic selector or pool
    range (every IPv6 address holds a colon; IPv4 and `dynamic[proto/port]` never do)."""
    return ":" in text.split("[", 1)[0]


def _setting(section: Section | None, key: str) -> Setting | None:
    return None if section is None else section.settings.get(key)


def _value(section: Section | None, key: str, default: str | None = None) -> str | None:
    s = _setting(section, key)
    return default if s is None else s.value


def _auth_rounds(conn: Section, side: str) -> list[Section]:
    """`local`, `local-1`, `localX` ... sections in file order (swanctl's suffix rule)."""
    return [s for name, s in conn.sections.items() if name == side or name.startswith(side)]


def _takes_any_certificate_client(conn: Section) -> bool:
    """Certificate-authenticated clients with any identity: the connection a new client
    profile joins (an EAP one cannot take a certificate client; one pinned to a client's
    id, like `t520` or a `--static-ip` client, is that client's alone)."""
    remotes = _auth_rounds(conn, "remote")
    first = remotes[0] if remotes else None
    auth = _value(first, "auth", "pubkey") or "pubkey"
    remote_id = _value(first, "id", "%any") or "%any"
    return auth.startswith("pubkey") and remote_id == "%any"


def find_road_warrior(root: Section, conn_name: str | None = None) -> Section:
    """The road-warrior connection: the named one, or the only road-warrior one
    (`swanctl.is_road_warrior`) that takes any certificate client."""
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
    candidates = [c for c in conns.sections.values()
                  if swanctl.is_road_warrior(c) and _takes_any_certificate_client(c)]
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
    unknown_pools = False
    by_family: dict[bool, list[str]] = {False: [], True: []}
    for pool_name in split_list(_value(conn, "pools", "") or ""):
        pool = pools.sections.get(pool_name) if pools else None
        if pool is None:
            unknown_pools = True  # provided by another plugin (attr-sql, dhcp): unread
            continue
        addrs = split_list(_value(pool, "addrs", "") or "")
        pool_addrs.extend(addrs)
        dns.extend(split_list(_value(pool, "dns", "") or ""))
        for v6 in {is_ipv6_selector(a) for a in addrs}:
            by_family[v6].append(pool_name)
    _check_ipv6_consistent(child, local_ts, pool_addrs, unknown_pools, where)
    remotes = _auth_rounds(conn, "remote")
    gw = GatewayInfo(
        remote_section=remotes[0].name if remotes else "remote",
        address=addr, identity=ident, ike_proposals=ike, esp_proposals=esp,
        conn_name=conn.name, child_name=child.name, local_ts=local_ts,
        pool_addrs=tuple(pool_addrs), dns=tuple(dict.fromkeys(dns)),
        cert_file=cert_files[0] if cert_files else None,
        ipv4_pools=tuple(by_family[False]), ipv6_pools=tuple(by_family[True]),
        taken_sections=frozenset(
            name for top in ("connections", "pools")
            for name in (root.sections[top].sections if top in root.sections else ())
        ),
    )
    gw.ike  # noqa: B018 - validate the keywords now, naming the connection
    gw.esp  # noqa: B018
    return gw


def _check_ipv6_consistent(
    child: Section, local_ts: Sequence[str], pool_addrs: Sequence[str], unknown_pools: bool,
    where: str,
) -> None:
    """Profiles tunnel IPv6 exactly when the gateway does; half a setup would leak.

    An IPv6 selector without an IPv6 pool gives clients no IPv6 address: they would send
    IPv6 around the tunnel. An IPv6 pool without an IPv6 selector hands out addresses no
    traffic can use. Pools another plugin provides cannot be read: then only the
    selector decides."""
    ts6 = any(is_ipv6_selector(ts) for ts in local_ts)
    pool6 = any(is_ipv6_selector(a) for a in pool_addrs)
    setting = _setting(child, "local_ts")
    at = str(setting.origin) if setting else where
    if ts6 and not pool6 and not unknown_pools:
        raise ProfileError(
            f"{at}: {child.path}.local_ts has IPv6 ({', '.join(local_ts)}) but the "
            f"connection's pools have no IPv6 range, so clients get no IPv6 address; add "
            "one (e.g. fd00:8::/112) to a pool, or drop the IPv6 selector"
        )
    if pool6 and not ts6:
        raise ProfileError(
            f"{at}: the connection's pools hand out IPv6 addresses but {child.path}.local_ts "
            f"({', '.join(local_ts)}) has no IPv6 selector; add ::/0 to local_ts, or drop "
            "the IPv6 range"
        )


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


#: characters a swanctl.conf section name cannot hold ('.' separates the parts of a path
#: since strongSwan 5.7; the others end a name)
_NOT_IN_SECTION_NAME = re.compile(r'[#{}:.,="\s]')


def section_name(name: str) -> str:
    """A client name as a swanctl.conf section name: `home.t520` -> `home_t520`. Client
    names keep their dots for files and certificates; only section names change."""
    return _NOT_IN_SECTION_NAME.sub("_", name) or "_"


def swanctl_quote(value: str) -> str:
    """A swanctl.conf value, quoted when it holds characters the parser treats specially."""
    if re.fullmatch(r"[A-Za-z0-9_.:/@%*+-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stable_uuid(*parts: str) -> str:
    """A UUID derived from names, so re-generating a profile replaces the old one."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "swand:" + ":".join(parts))).upper()
