"""Gateway side of `--static-ip`: the pinned connection and its one-address pool (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from swand.core.profiles.common import GatewayInfo, ProfileError, section_name, swanctl_quote


@dataclass(frozen=True)
class StaticLease:
    """A client pinned to one address: one connection matching one identity, one pool."""

    name: str
    address: str
    #: the identity the client sends: its subject DN (Windows, strongSwan clients told
    #: so) or its subjectAltName (Apple cannot send a DN)
    identity: str


def static_section(gw: GatewayInfo, name: str) -> str:
    """The pinned client's connection and pool name; refused when the gateway's config
    already has a connection or pool of that name (the sections would merge: a client
    called like the road-warrior connection would rewrite it)."""
    section = section_name(name)
    if section in gw.taken_sections:
        renamed = f" (the section name of {name!r})" if section != name else ""
        raise ProfileError(
            f"client name {name!r}: the gateway already has a connection or pool named "
            f"{section!r}{renamed}; --static-ip needs its own; choose another client name"
        )
    return section


def check_static_ip(gw: GatewayInfo, address: str) -> str:
    """The static address, validated: an address outside the dynamic pools, of a family
    the gateway tunnels."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ProfileError(f"--static-ip {address!r} is not an IP address") from None
    if ip.version == 6 and not gw.tunnels_ipv6:
        raise ProfileError(
            f"--static-ip {address}: connection {gw.conn_name} tunnels no IPv6 (no IPv6 "
            "selector in its child's local_ts); pin an IPv4 address"
        )
    for pool in gw.pool_addrs:
        try:
            if "-" in pool:
                lo, hi = (ipaddress.ip_address(x.strip()) for x in pool.split("-", 1))
                inside = type(lo) is type(ip) and lo <= ip <= hi  # type: ignore[operator]
            else:
                inside = ip in ipaddress.ip_network(pool, strict=False)
        except ValueError:
            continue
        if inside:
            raise ProfileError(
                f"--static-ip {address} lies inside the dynamic pool {pool} of connection "
                f"{gw.conn_name}: charon could lease it to someone else"
            )
    return str(ip)


def gateway_static_conf(gw: GatewayInfo, lease: StaticLease) -> str:
    """`conf.d/NAME.conf` on the gateway: the road-warrior connection, pinned.

    The connection inherits everything from the road-warrior connection by a section
    reference and only overrides the expected remote identity and the pool, so a change to
    the road-warrior connection (proposals, certificates) applies here too. A connection
    with a specific remote id wins over the road-warrior's `%any` when charon picks a
    config. One connection per one-address pool: two would compete for the address.
    Both sections are named `static_section` (the client name, valid as a section name).
    On a dual-stack gateway the client keeps drawing the other family's address from the
    road-warrior pools (a pinned client without its IPv6 address would leak IPv6).
    """
    section = static_section(gw, lease.name)
    v6 = ipaddress.ip_address(lease.address).version == 6
    other = gw.ipv4_pools if v6 else (gw.ipv6_pools if gw.tunnels_ipv6 else ())
    lines = [
        f"# swand client add {lease.name} --static-ip {lease.address}: pins the client "
        f"({lease.identity}) to {lease.address}",
        "connections {",
        f"    {section} : connections.{gw.conn_name} {{",
        f"        pools = {', '.join((section, *other))}",
        f"        {gw.remote_section} {{",
        f"            id = {swanctl_quote(lease.identity)}",
        "        }",
        "    }",
        "}",
        "pools {",
        f"    {section} {{",
        f"        addrs = {lease.address}",
    ]
    if gw.dns:
        lines.append(f"        dns = {', '.join(gw.dns)}")
    lines += ["    }", "}", ""]
    return "\n".join(lines)
