"""Kernel objects that exist once per leased virtual IP, as a pure function of charon's SAs.

A road warrior's virtual IP is leased while its IKE_SA is up. Some kernel state must
follow each lease exactly -- appear when the SA comes up, vanish when it goes (delete,
DPD, a charon crash) -- and nothing else may be touched. This module is the shared
shape for such state:

- `leases_from_vici` turns ``list-sas`` into `Lease`s (skipping what it cannot read),
  `sa_leases` one IKE_SA of the SA model (the event watcher's table) into its leases;
- `desired_per_lease` maps every lease through a builder into the set of kernel objects
  wanted now (an NDP proxy entry here; a host route per lease in `swand.core.routes`);
- `plan_objects` diffs desired against observed objects that carry swand's mark
  (`KERNEL_PROTOCOL`), so an administrator's own entries are never removed.

The NDP proxy builder (`ndp_proxy_builder`) serves ``[ipv6] mode = "routed"``: the
provider's router reaches a client address of its on-link prefix only when someone
answers neighbour discovery for it, so the gateway's egress proxies every leased IPv6
address while its SA is up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from swand.core.events import IkeSa
from swand.core.untrusted import SkipFn, ignore_skip, unparsable

#: the rtnetlink protocol number marking kernel objects swand owns (``ip -6 neigh show
#: proxy`` prints ``proto 250``); observed objects without it are the administrator's
KERNEL_PROTOCOL = 250

#: IKE_SA states in which the virtual IP is no longer the client's
GONE_IKE_STATES = frozenset({"DELETING", "DESTROYING"})
#: CHILD_SA states in which the SA carries traffic (as the firewall's forward rules see it)
ACTIVE_CHILD_STATES = frozenset({"INSTALLED", "UPDATING", "REKEYING", "REKEYED"})


@dataclass(frozen=True, order=True)
class Lease:
    """One virtual IP leased to the peer of an IKE_SA."""

    address: str  # normalised, without prefix length
    ike: str  # connection name
    unique_id: str = ""

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class LeaseRead:
    leases: tuple[Lease, ...]
    #: IKE_SAs left out because charon's view of them could not be read
    skipped: int = 0


def leases_from_vici(
    ike_sas: Iterable[Mapping[str, object]], on_skip: SkipFn = ignore_skip, *,
    need_child_sa: bool = False, component: str = "ndp",
) -> LeaseRead:
    """Leases from ``list-sas`` ``list-sa`` events (each {ike_name: {..., remote-vips}}).

    IKE_SAs being deleted no longer count (their addresses go back to the pool). With
    `need_child_sa` only IKE_SAs with a CHILD_SA carrying traffic count (a route into a
    tunnel that carries nothing would attract traffic to the wrong gateway). An SA
    whose virtual IPs cannot be read is skipped whole and reported to `on_skip`
    (`swand.core.untrusted`), never a failed pass for the others."""
    leases: set[Lease] = set()
    skipped = 0
    for event in ike_sas:
        for name, ike in event.items():
            try:
                if not isinstance(ike, Mapping):
                    raise ValueError("not a section")
                if _text(ike.get("state")) in GONE_IKE_STATES:
                    continue
                if need_child_sa and not _carries_traffic(ike):
                    continue
                vips = ike.get("remote-vips") or []
                if not isinstance(vips, list | tuple):
                    vips = [vips]
                mine = {Lease(str(ipaddress.ip_address(_text(raw).strip())), _text(name),
                              _text(ike.get("uniqueid"))) for raw in vips}
            except (ValueError, TypeError) as exc:
                skipped += 1
                on_skip(unparsable(component, name, ike, "remote-vips", exc))
                continue
            leases |= mine
    return LeaseRead(tuple(sorted(leases)), skipped)


def sa_leases(sa: IkeSa, *, need_child_sa: bool = False) -> tuple[Lease, ...]:
    """The leases of one IKE_SA of the SA model (`swand.core.events.IkeSa`), by the rules
    of `leases_from_vici`; ValueError when its virtual IPs cannot be read (the caller
    skips the SA and reports it)."""
    if sa.state in GONE_IKE_STATES:
        return ()
    if need_child_sa and not any(c.state in ACTIVE_CHILD_STATES for c in sa.children):
        return ()
    return tuple(sorted({Lease(str(ipaddress.ip_address(raw.strip())), sa.conn, sa.uniqueid)
                         for raw in sa.remote_vips}))


def _carries_traffic(ike: Mapping[str, object]) -> bool:
    children = ike.get("child-sas") or {}
    if not isinstance(children, Mapping):
        raise ValueError("child-sas is not a section")
    return any(isinstance(c, Mapping) and _text(c.get("state")) in ACTIVE_CHILD_STATES
               for c in children.values())


T = TypeVar("T")


def desired_per_lease(
    leases: Iterable[Lease], build: Callable[[Lease], Iterable[T]]
) -> frozenset[T]:
    """Every kernel object wanted for these leases (a builder may want none for one)."""
    return frozenset(obj for lease in leases for obj in build(lease))


Obj = TypeVar("Obj")


@dataclass(frozen=True)
class ObjectPlan(Generic[Obj]):
    """What to add and what to remove (sorted, so passes are deterministic)."""

    add: tuple[Obj, ...]
    remove: tuple[Obj, ...]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan_objects(desired: frozenset[Obj], observed_owned: Iterable[Obj]) -> ObjectPlan[Obj]:
    """The edit from the owned objects the kernel holds to the desired ones."""
    have = frozenset(observed_owned)
    return ObjectPlan(tuple(sorted(desired - have, key=repr)),
                      tuple(sorted(have - desired, key=repr)))


# --- NDP proxy entries (routed IPv6) ----------------------------------------------------


@dataclass(frozen=True, order=True)
class NdpProxy:
    """``ip -6 neigh add proxy ADDRESS dev IFACE protocol 250``."""

    iface: str
    address: str


def ndp_proxy_builder(iface: str | None) -> Callable[[Lease], tuple[NdpProxy, ...]]:
    """One proxy entry on the IPv6 egress `iface` per leased IPv6 address (none without
    an egress: nothing to answer on)."""

    def build(lease: Lease) -> tuple[NdpProxy, ...]:
        if iface is None or lease.version != 6:
            return ()
        return (NdpProxy(iface, lease.address),)

    return build


def desired_ndp_proxies(leases: Iterable[Lease], iface: str | None) -> frozenset[NdpProxy]:
    return desired_per_lease(leases, ndp_proxy_builder(iface))


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return "" if v is None else str(v)
