"""The egress interface from RTNL, followed as routes and links change (pyroute2 0.9).

`EgressWatcher` subscribes to link, address and route multicast groups *first*, then dumps
the current state, then follows events, so no change between the dump and the first event
is lost. Any event (except charon's routing table 220: every tunnel adds a route there)
re-derives the state from a fresh dump and calls `on_change` only when the result differs.
On ENOBUFS (the kernel dropped events because we read too slowly) the socket is reopened
and everything re-read.

The state is a `NetState`: the interface of the IPv4 default route in the main table with
the lowest metric, and every interface's addresses (for `swand check`'s "pool overlaps the
egress subnet"). `read_net_state()` does one read without following.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swand.log import get_logger

log = get_logger("swand.netlink")

CHARON_ROUTING_TABLE = 220
MAIN_TABLE = 254
_RELEVANT = frozenset({
    "RTM_NEWROUTE", "RTM_DELROUTE", "RTM_NEWLINK", "RTM_DELLINK", "RTM_NEWADDR",
    "RTM_DELADDR",
})


@dataclass(frozen=True)
class NetState:
    egress: str | None
    #: interface name -> its addresses as CIDRs ("192.0.2.1/24")
    interfaces: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: hash the frozen view
        return hash((self.egress, tuple(sorted(self.interfaces.items()))))


async def _open() -> Any:
    from pyroute2 import AsyncIPRoute  # lazily: `swand check` need not import pyroute2

    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    await ipr.bind()  # default groups: links, addresses, IPv4/IPv6 routes
    return ipr


async def _dump(ipr: Any) -> NetState:
    links = {msg["index"]: msg.get("ifname") async for msg in await ipr.link("dump")}
    addrs: dict[str, list[str]] = {name: [] for name in links.values() if name}
    async for msg in await ipr.addr("dump"):
        name = links.get(msg["index"])
        addr = msg.get("address")
        if name and addr:
            addrs.setdefault(name, []).append(f"{addr}/{msg['prefixlen']}")
    best: tuple[int, int] | None = None
    async for r in await ipr.route("dump", family=socket.AF_INET):
        if r["dst_len"] != 0 or r.get("table") != MAIN_TABLE or r["type"] != 1:
            continue
        oif = r.get("oif")
        if oif is None:
            multipath = r.get("multipath") or []
            oif = multipath[0]["oif"] if multipath else None
        if oif is None:
            continue
        metric = r.get("priority") or 0
        if best is None or metric < best[0]:
            best = (metric, oif)
    egress = links.get(best[1]) if best else None
    return NetState(egress, {k: tuple(v) for k, v in sorted(addrs.items())})


async def read_net_state() -> NetState:
    """One look at the default route and the interfaces of this namespace."""
    ipr = await _open()
    try:
        return await _dump(ipr)
    finally:
        ipr.close()


def _relevant(msg: Any) -> bool:
    event = msg.get("event")
    if event not in _RELEVANT:
        return False
    return not (event.endswith("ROUTE") and msg.get("table") == CHARON_ROUTING_TABLE)


class EgressWatcher:
    """Follows `NetState`; `on_change(state)` is called with the first state and on every
    change. Run `run()` as a task; cancel it to stop."""

    def __init__(self, on_change: Callable[[NetState], None] | None = None,
                 settle: float = 0.05) -> None:
        self.on_change = on_change
        self.settle = settle
        self.state: NetState | None = None
        self.ready = asyncio.Event()
        self.resyncs = 0

    async def run(self) -> None:
        while True:
            ipr = await _open()
            try:
                await self._publish(await _dump(ipr))
                self.ready.set()
                await self._follow(ipr)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.resyncs += 1
                log.warning("netlink events overflowed, re-reading", resyncs=self.resyncs)
            finally:
                with contextlib.suppress(Exception):
                    ipr.close()

    async def _follow(self, ipr: Any) -> None:
        while True:
            dirty = False
            async for msg in ipr.get():
                dirty = dirty or _relevant(msg)
            if dirty:
                await asyncio.sleep(self.settle)  # a burst (link up + routes) -> one read
                await self._publish(await _dump(ipr))

    async def _publish(self, state: NetState) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        if old is None or old.egress != state.egress:
            log.info("egress interface", egress=state.egress,
                     previous=old.egress if old else None)
        if self.on_change is not None:
            self.on_change(state)


def interface_networks(state: NetState, name: str) -> list[ipaddress.IPv4Network
                                                          | ipaddress.IPv6Network]:
    return [ipaddress.ip_interface(a).network for a in state.interfaces.get(name, ())]
