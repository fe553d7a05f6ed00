"""NDP proxy entries over RTNL (pyroute2 0.9): ``ip -6 neigh add proxy A dev IF``.

Only entries carrying swand's protocol mark (`swand.core.leases.KERNEL_PROTOCOL`) are
read back as swand's: an administrator's own proxy entries are neither listed nor
removed. pyroute2 turns keyword arguments of a dump into a filter on the replies, but the
kernel lists proxy entries only when the *request* carries ``NTF_PROXY``, so the dump
passes its own (accept-all) filter and the flag goes into the request.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from swand.adapters.netlink import link_names, open_iproute
from swand.core.leases import KERNEL_PROTOCOL, NdpProxy, ObjectPlan
from swand.log import get_logger

log = get_logger("swand.ndp")

NTF_PROXY = 0x08


class NdpProxyError(Exception):
    """An entry that could not be added or removed; the message names it."""


@dataclass(frozen=True)
class NdpApplied:
    added: int = 0
    removed: int = 0
    #: additions refused because the interface is gone or an entry of someone else
    #: already answers for the address
    skipped: int = 0


class NdpProxyTable:
    """swand's proxy entries in one namespace (`netns=None`: the one swand runs in)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr: Any = None

    async def _open(self) -> Any:
        if self._ipr is None:
            self._ipr = await open_iproute(self.netns)
        return self._ipr

    async def _links(self, ipr: Any) -> dict[int, str]:
        return await link_names(ipr)

    async def read(self) -> frozenset[NdpProxy]:
        """swand's proxy entries (both the kernel's and swand's view of one pass)."""
        try:
            ipr = await self._open()
            links = await self._links(ipr)
            found: set[NdpProxy] = set()
            replies = await ipr.neigh("dump", dump_filter=lambda _m: True,
                                      family=socket.AF_INET6, flags=NTF_PROXY)
            async for msg in replies:
                if not msg["flags"] & NTF_PROXY or msg.get("protocol") != KERNEL_PROTOCOL:
                    continue
                name, dst = links.get(msg["ifindex"]), msg.get("dst")
                if name and dst:
                    found.add(NdpProxy(name, str(dst)))
            return frozenset(found)
        except Exception:
            await self.close()  # a broken socket: the next pass opens a fresh one
            raise

    async def apply(self, plan: ObjectPlan[NdpProxy]) -> NdpApplied:
        """Remove first, then add; an entry already gone or an interface already gone is
        not an error (the goal is reached, or cannot be and the next pass re-reads)."""
        if plan.empty:
            return NdpApplied()
        ipr = await self._open()
        index = {name: i for i, name in (await self._links(ipr)).items() if name}
        removed = added = skipped = 0
        for entry in plan.remove:
            ifindex = index.get(entry.iface)
            if ifindex is None:
                continue  # the interface took its entries with it
            try:
                await ipr.neigh("del", dst=entry.address, ifindex=ifindex, flags=NTF_PROXY,
                                family=socket.AF_INET6)
                removed += 1
            except Exception as exc:
                if _errno(exc) != errno.ENOENT:
                    raise NdpProxyError(f"cannot remove NDP proxy {entry.address} on "
                                        f"{entry.iface}: {exc}") from exc
        for entry in plan.add:
            ifindex = index.get(entry.iface)
            if ifindex is None:
                skipped += 1
                continue
            try:
                await ipr.neigh("add", dst=entry.address, ifindex=ifindex, flags=NTF_PROXY,
                                protocol=KERNEL_PROTOCOL, family=socket.AF_INET6)
                added += 1
            except Exception as exc:
                if _errno(exc) != errno.EEXIST:
                    raise NdpProxyError(f"cannot add NDP proxy {entry.address} on "
                                        f"{entry.iface}: {exc}") from exc
                skipped += 1
                log.debug("NDP proxy entry of someone else already there",
                          address=entry.address, iface=entry.iface)
        return NdpApplied(added, removed, skipped)

    async def close(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            try:
                ipr.close()
            except Exception as exc:  # closing a broken socket must not hide the cause
                log.debug("closing RTNL socket failed", error=repr(exc))


def _errno(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return getattr(exc, "errno", None)
