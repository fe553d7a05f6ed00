"""The way out of a network namespace from RTNL, read once or followed (pyroute2 0.9).

`NetlinkWatcher` subscribes to the link, address and route multicast groups *first*, then
dumps the current state, then follows events, so no change between the dump and the first
event is lost. Any event (except a route in charon's table 220: every tunnel adds one)
re-derives the state from a fresh dump; the callbacks see the state only when it differs.
On ENOBUFS (the kernel dropped events because we read too slowly) the socket is reopened
and everything re-read; any other failure is logged and retried with a backoff, so
netlink trouble never ends what follows it. pyroute2's `AsyncIPRoute` runs in the loop
(the sync `IPRoute` refuses a running loop).

One `NetState` serves every user, each reading its part:

- the firewall: `egress`, the interface of the IPv4 default route in the main table with
  the lowest metric (NAT), and `interfaces`, every interface's addresses (for "pool
  overlaps the egress subnet");
- keepalive: `way_out`, the global addresses on real interfaces (not `lo`, not
  libipsec's `ipsec0` where virtual IPs live) and the default routes (IPv4 and IPv6) of
  the main table through them.

`read_net_state()` does one read without following.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from swand.clock import SYSTEM_CLOCK, Clock
from swand.core.backoff import Backoff
from swand.log import get_logger

log = get_logger("swand.netlink")

CHARON_ROUTING_TABLE = 220
MAIN_TABLE = 254
#: a route learned from a router advertisement (``proto ra``)
RTPROT_RA = 9
#: not a way out: loopback, and libipsec's TUN where the virtual IPs live
IGNORED_IFACES = frozenset({"lo", "ipsec0"})
_RELEVANT = frozenset({
    "RTM_NEWROUTE", "RTM_DELROUTE", "RTM_NEWLINK", "RTM_DELLINK", "RTM_NEWADDR",
    "RTM_DELADDR",
})


@dataclass(frozen=True)
class NetState:
    egress: str | None
    #: interface name -> its addresses as CIDRs ("192.0.2.1/24")
    interfaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: global addresses on real interfaces (not `IGNORED_IFACES`)
    global_addresses: frozenset[str] = frozenset()
    #: the main table's default routes (both families) through real interfaces:
    #: (interface name, or "" for a multipath route; gateway, or "")
    default_routes: frozenset[tuple[str, str]] = frozenset()
    #: the interface of the IPv6 default route with the lowest metric (routed IPv6,
    #: accept_ra), and whether that route was learned from a router advertisement
    egress6: str | None = None
    egress6_from_ra: bool = False

    def __hash__(self) -> int:  # dict field: hash the frozen view
        return hash((self.egress, tuple(sorted(self.interfaces.items())),
                     self.global_addresses, self.default_routes, self.egress6,
                     self.egress6_from_ra))

    @property
    def way_out(self) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """What says "the way out changed" to a client: its addresses and default routes."""
        return self.global_addresses, self.default_routes


async def _open(netns: str | None) -> Any:
    # inside: pyroute2 costs 0.1 s to import, and only the daemon's watchers use it (not
    # `swand check`, `status`, `client`, ...)
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.rtnl import (
        RTMGRP_IPV4_IFADDR,
        RTMGRP_IPV4_ROUTE,
        RTMGRP_IPV6_IFADDR,
        RTMGRP_IPV6_ROUTE,
        RTMGRP_LINK,
    )

    ipr = AsyncIPRoute(netns=netns) if netns else AsyncIPRoute()
    await ipr.setup_endpoint()
    # only these: pyroute2's default groups add neighbours (every ARP update) and tc
    await ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
                   | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
    return ipr


async def open_iproute(netns: str | None = None) -> Any:
    """An `AsyncIPRoute` for requests only (no multicast groups) in `netns` (None: the
    namespace swand runs in), endpoint set up: what the per-lease kernel object adapters
    (routes, NDP proxy entries) talk through."""
    from pyroute2 import AsyncIPRoute  # lazily: `swand check` need not import pyroute2

    ipr = AsyncIPRoute(netns=netns) if netns else AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


async def link_names(ipr: Any) -> dict[int, str]:
    """Interface index -> name."""
    return {m["index"]: m.get("ifname") async for m in await ipr.link("dump")}


async def _dump(ipr: Any) -> NetState:
    links = {msg["index"]: msg.get("ifname") async for msg in await ipr.link("dump")}
    addrs: dict[str, list[str]] = {name: [] for name in links.values() if name}
    global_addresses: set[str] = set()
    async for msg in await ipr.addr("dump"):
        name = links.get(msg["index"])
        if not name:
            continue
        addr = msg.get("address")
        if addr:
            addrs.setdefault(name, []).append(f"{addr}/{msg['prefixlen']}")
        local = addr or msg.get("local")
        if local and msg.get("scope", 0) == 0 and name not in IGNORED_IFACES:
            global_addresses.add(str(local))
    best: dict[int, tuple[int, int, bool]] = {}  # family -> (metric, oif, from an RA)
    default_routes: set[tuple[str, str]] = set()
    async for r in await ipr.route("dump"):  # both families
        if r["dst_len"] != 0 or r.get("table") != MAIN_TABLE or r["type"] != 1:
            continue
        oif = r.get("oif")
        name = links.get(oif, "") if oif is not None else ""
        if name not in IGNORED_IFACES:
            default_routes.add((name, str(r.get("gateway") or "")))
        if oif is None:
            multipath = r.get("multipath") or []
            oif = multipath[0]["oif"] if multipath else None
        family = r["family"]
        if oif is None or (family == socket.AF_INET6 and links.get(oif) in IGNORED_IFACES):
            continue
        metric = r.get("priority") or 0
        if family not in best or metric < best[family][0]:
            best[family] = (metric, oif, r.get("proto") == RTPROT_RA)
    v4, v6 = best.get(socket.AF_INET), best.get(socket.AF_INET6)
    return NetState(links.get(v4[1]) if v4 else None,
                    {k: tuple(v) for k, v in sorted(addrs.items())},
                    frozenset(global_addresses), frozenset(default_routes),
                    egress6=links.get(v6[1]) if v6 else None,
                    egress6_from_ra=bool(v6 and v6[2]))


async def read_net_state(netns: str | None = None) -> NetState:
    """One look at the default routes and the interfaces of this namespace."""
    ipr = await _open(netns)
    try:
        return await _dump(ipr)
    finally:
        ipr.close()


def _relevant(msg: Any) -> bool:
    event = msg.get("event")
    if event not in _RELEVANT:
        return False
    return not (event.endswith("ROUTE") and msg.get("table") == CHARON_ROUTING_TABLE)


class NetlinkWatcher:
    """Follows `NetState`; each callback is called with the first state and on every
    change. Run `run()` as a task; cancel it to stop.

    `netns=None` means the namespace swand runs in (tests pass a lab namespace).
    """

    def __init__(
        self, netns: str | None = None, settle: float = 0.05, backoff_max: float = 30.0, *,
        clock: Clock = SYSTEM_CLOCK,
        open_socket: Callable[[str | None], Awaitable[Any]] = _open,
        dump: Callable[[Any], Awaitable[NetState]] = _dump,
    ) -> None:
        self.netns = netns
        #: the RTNL socket and the full read (fakes in unit tests)
        self._open, self._dump = open_socket, dump
        self.settle = settle
        self.backoff = Backoff(1.0, backoff_max)
        self.clock = clock
        self.state: NetState | None = None
        self.ready = asyncio.Event()
        self.resyncs = 0
        self._callbacks: list[Callable[[NetState], None]] = []

    def add_callback(self, on_change: Callable[[NetState], None]) -> None:
        self._callbacks.append(on_change)

    async def run(self) -> None:
        while True:
            ipr = None
            try:
                ipr = await self._open(self.netns)
                self._publish(await self._dump(ipr))
                self.ready.set()
                self.backoff.reset()
                await self._follow(ipr)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    await self._failed(exc)
                    continue
                self.resyncs += 1
                log.warning("netlink events overflowed, re-reading", resyncs=self.resyncs)
            except Exception as exc:
                await self._failed(exc)
            finally:
                if ipr is not None:
                    with contextlib.suppress(Exception):
                        ipr.close()

    async def _failed(self, exc: Exception) -> None:
        retry_in = self.backoff.next_delay()
        log.warning("netlink failed, retrying", error=repr(exc), retry_in=retry_in)
        await self.clock.sleep(retry_in)

    async def _follow(self, ipr: Any) -> None:
        while True:
            dirty = False
            async for msg in ipr.get():
                dirty = dirty or _relevant(msg)
            if dirty:
                await self.clock.sleep(self.settle)  # a burst (link up + routes) -> one read
                self._publish(await self._dump(ipr))

    def _publish(self, state: NetState) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        if old is None or old.egress != state.egress:
            log.info("egress interface", egress=state.egress,
                     previous=old.egress if old else None)
        for on_change in self._callbacks:
            on_change(state)

