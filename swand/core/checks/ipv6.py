"""IPv6 on a dual-stack gateway: v6 pools, forwarding, NDP proxy, RAs."""

from __future__ import annotations

import ipaddress

from swand.core.checks.base import (
    CheckInput,
    Finding,
    SystemFacts,
    _connections,
    _list,
    finding_at,
)
from swand.core.checks.pools import (
    ConfiguredPool,
    pools_of,
)
from swand.core.settings import Section

# --- IPv6: a dual-stack gateway (issue 13) --------------------------------------------------

ULA = ipaddress.ip_network("fc00::/7")


def _v6_ranges(pool: ConfiguredPool) -> list[tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]]:
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
