"""Notice the host's addresses and default routes changing (pyroute2, asyncio).

pyroute2 0.9's `AsyncIPRoute` runs in the loop (the sync `IPRoute` refuses a running
loop). Subscribe first, then read current state, then follow events; on ENOBUFS (the
kernel dropped notifications) reopen and report a `resync` change so the caller
re-evaluates everything. Only what says "the way out changed" is reported: global
addresses on real interfaces (not `lo`, not libipsec's `ipsec0` where virtual IPs live)
and default routes in the main table (charon's table 220 changes with every tunnel).
A change is a hint to re-check, never the state itself: callers re-read what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
)

MAIN_TABLE = 254
IGNORED_IFACES = frozenset({"lo", "ipsec0"})
GROUPS = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE


@dataclass(frozen=True)
class NetChange:
    """kind: "addr" | "route" | "resync"; action: "new" | "del" | ""."""

    kind: str
    action: str = ""
    address: str = ""
    ifindex: int = 0


class NetlinkWatcher:
    """Follows address and default-route changes in one network namespace.

    `netns=None` means the namespace swand runs in (tests pass a lab namespace).
    """

    def __init__(self, netns: str | None = None,
                 ignored_ifaces: frozenset[str] = IGNORED_IFACES) -> None:
        self.netns = netns
        self.ignored_ifaces = ignored_ifaces
        self._ignored_index: set[int] = set()

    def _open(self) -> AsyncIPRoute:
        return AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()

    async def addresses(self) -> set[str]:
        """The current global addresses on real interfaces."""
        async with self._open() as ipr:
            ignored = await self._ignored(ipr)
            out = set()
            async for msg in await ipr.addr("dump"):
                if msg["index"] in ignored or msg.get("scope", 0) != 0:
                    continue
                address = msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL")
                if address:
                    out.add(str(address))
            return out

    async def _ignored(self, ipr: AsyncIPRoute) -> set[int]:
        out: set[int] = set()
        async for link in await ipr.link("dump"):
            if link.get("IFLA_IFNAME") in self.ignored_ifaces:
                out.add(link["index"])
        return out

    async def changes(self) -> AsyncIterator[NetChange]:
        """Relevant changes, forever (reopens after ENOBUFS; yields `resync` then)."""
        while True:
            try:
                async with self._open() as ipr:
                    await ipr.bind(groups=GROUPS)
                    self._ignored_index = await self._ignored(ipr)
                    while True:
                        async for msg in ipr.get():
                            change = self._relevant(msg)
                            if change is not None:
                                yield change
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                yield NetChange("resync")
                await asyncio.sleep(0.1)

    def _relevant(self, msg: Any) -> NetChange | None:
        event = msg.get("event", "")
        action = "new" if event.startswith("RTM_NEW") else "del"
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if msg.get("index") in self._ignored_index or msg.get("scope", 0) != 0:
                return None
            with contextlib.suppress(Exception):
                label = msg.get_attr("IFA_LABEL")
                if label in self.ignored_ifaces:
                    return None
            address = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL") or ""
            return NetChange("addr", action, str(address), int(msg.get("index") or 0))
        if event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            table = msg.get_attr("RTA_TABLE") or msg.get("table")
            if table != MAIN_TABLE or msg.get("dst_len", 0) != 0:
                return None
            oif = msg.get_attr("RTA_OIF") or 0
            if oif in self._ignored_index:
                return None
            return NetChange("route", action, str(msg.get_attr("RTA_GATEWAY") or ""),
                             int(oif))
        return None
