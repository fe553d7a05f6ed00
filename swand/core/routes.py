"""``[routes]``: one kernel host route per leased virtual IP, for a routing daemon (pure).

A fleet of gateways behind DNS round robin or anycast must make each client reachable
from the internal network through whichever gateway holds its SA. swand keeps a /32
(/128) route for every leased virtual IP in the administrator's table, marked with the
administrator's routing protocol number; FRR or BIRD redistributes that table over BGP
or OSPF. The protocol number is how swand recognises its own routes: every route with it
in the table that no lease explains is removed (drift repair, and what a crash left).

"Into the tunnel" depends on how charon moves packets (`swand.core.firewall.resolve_mode`):

- kernel-libipsec (``interface``): ``dev ipsec0``, the TUN device charon reads from.
- kernel ESP (``policy``): the XFRM output policy catches the packet after routing,
  whatever route it took, as long as the route is not a blackhole or unreachable one.
  The route goes where the client's outer packets go: the egress interface (the
  default route's, or ``[routes] device``) and that interface's default gateway of the
  address family, so a packet that no policy catches any more (the SA just went) takes
  the path the main table would have given it anyway, never a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from swand.core.leases import Lease, desired_per_lease, plan_objects

#: routing protocol numbers swand refuses: the kernel's own (0-4) and those of known
#: daemons (iproute2's rt_protos; FRR's zebra uses 186-198), whose routes swand would
#: otherwise delete as drift
RESERVED_PROTOCOLS: dict[int, str] = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
    9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk",
    16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel", 99: "openr",
    **{n: "frr" for n in range(186, 199)},
}
#: tables swand refuses: unspec, charon's own (220), default and local
RESERVED_TABLES: dict[int, str] = {0: "unspec", 220: "charon's", 253: "default",
                                   255: "local"}
DEFAULT_PROTOCOL = 157
MAIN_TABLE = 254
#: the metric the kernel gives an IPv6 route added with metric 0 (IP6_RT_PRIO_USER)
IPV6_DEFAULT_METRIC = 1024


class RoutesInputError(ValueError):
    """Inputs from which no route can be derived (no device to route into)."""


@dataclass(frozen=True, order=True)
class KernelRoute:
    """A unicast route as swand owns it; equal routes need no change."""

    dst: str  # "10.8.0.1/32"
    table: int
    protocol: int
    metric: int = 0
    oif: str = ""
    gateway: str = ""


@dataclass(frozen=True)
class NextHops:
    """Where a leased address is routed, per address family (device, gateway or "")."""

    v4: tuple[str, str] | None
    v6: tuple[str, str] | None


def next_hops(
    mode: str, device: str, egress: str | None,
    default_routes: Iterable[tuple[str, str]], tunnel_iface: str = "ipsec0",
) -> NextHops:
    """The next hops for `mode` (``interface``: the libipsec TUN; ``policy``: the
    device, "auto" = `egress`, with its default gateway of each family)."""
    if device == "auto" and mode == "interface":
        return NextHops((tunnel_iface, ""), (tunnel_iface, ""))
    dev = egress if device == "auto" else device
    if not dev:
        return NextHops(None, None)
    gw4 = gw6 = ""
    for iface, gateway in sorted(default_routes):
        if iface != dev or not gateway:
            continue
        if ":" in gateway:
            gw6 = gw6 or gateway
        else:
            gw4 = gw4 or gateway
    if dev == tunnel_iface:
        gw4 = gw6 = ""
    return NextHops((dev, gw4), (dev, gw6))


def desired_routes(
    leases: Iterable[Lease], hops: NextHops, *, table: int, protocol: int, metric: int = 0
) -> frozenset[KernelRoute]:
    """One host route per leased address (raises RoutesInputError when there is a lease
    and no device to route it into: the last good routes stay)."""

    def render(lease: Lease) -> tuple[KernelRoute, ...]:
        v6 = lease.version == 6
        hop = hops.v6 if v6 else hops.v4
        if hop is None:
            raise RoutesInputError(
                f"no device to route {lease.address} into: no default route (set "
                f"[routes] device)")
        # as the kernel stores it, or every pass would see a difference
        route_metric = (metric or IPV6_DEFAULT_METRIC) if v6 else metric
        return (KernelRoute(f"{lease.address}/{128 if v6 else 32}", table, protocol,
                            route_metric, hop[0], hop[1]),)

    return desired_per_lease(leases, render)


def plan_routes(
    desired: Iterable[KernelRoute], observed: Iterable[KernelRoute]
) -> tuple[tuple[KernelRoute, ...], tuple[KernelRoute, ...]]:
    """(to add, to remove): `observed` holds only routes with our table and protocol. A
    route that changed (another device) is in both: the adapter removes before it adds."""
    plan = plan_objects(frozenset(desired), observed)
    return plan.add, plan.remove


def protocol_problem(protocol: int) -> str | None:
    """Why `protocol` cannot be swand's routing protocol number, or None."""
    if not 0 <= protocol <= 255:
        return f"must be 5..255, got {protocol}"
    name = RESERVED_PROTOCOLS.get(protocol)
    if name is not None:
        return (f"{protocol} is the {name} protocol's; swand removes every route with its "
                f"number that no lease explains (choose an unused one, e.g. "
                f"{DEFAULT_PROTOCOL})")
    return None


def table_problem(table: int) -> str | None:
    if not 0 < table < 2**32:
        return f"must be 1..4294967295, got {table}"
    name = RESERVED_TABLES.get(table)
    if name is not None:
        return f"{table} is the {name} table"
    return None
