"""Address pools (overlaps, the egress subnet) and duplicate remote identities."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from swand.core.checks.base import (
    CheckInput,
    Finding,
    IPInterface,
    SystemFacts,
    _connections,
    _list,
    _rounds,
    finding_at,
)
from swand.core.checks.certificates import (
    _is_wildcard,
    _normalize_dn,
    parse_identity,
)
from swand.core.settings import Origin, Section

# --- pools, identities ------------------------------------------------------------------

@dataclass(frozen=True)
class ConfiguredPool:
    """A pool as swanctl.conf writes it, with where (for findings) and its address ranges;
    charon's view of its use is metrics.PoolUsage, the firewall's networks firewall.Pool."""

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


def pools_of(tree: Section) -> tuple[list[ConfiguredPool], list[Finding]]:
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
        pools.append(ConfiguredPool(name, setting.origin, setting.value.strip(), tuple(ranges)))
    return pools, out


def _overlap(a: ConfiguredPool, b: ConfiguredPool) -> bool:
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
