"""Kernel routes swand owns (``[routes]``), read and written over RTNL with pyroute2 0.9.

Ownership is the pair (table, protocol number): `read_owned` returns only routes of that
table carrying that protocol, so nothing another daemon or the administrator added is
ever touched. `AsyncIPRoute` runs in the loop (the sync `IPRoute` refuses a running loop);
one socket per `NetlinkRoutes`, opened lazily, reopened after a failure.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass
from typing import Any

from swand.adapters.netlink import link_names, open_iproute
from swand.core.routes import KernelRoute
from swand.log import get_logger

log = get_logger("swand.routes")

_RTN_UNICAST = 1
#: on delete: match any scope (a route someone added `dev eth0` without a gateway has
#: scope link; the kernel compares the scope unless it is RT_SCOPE_NOWHERE)
_RT_SCOPE_NOWHERE = 255


class RouteWriteError(Exception):
    """A route the kernel refused; the message names the route."""


@dataclass(frozen=True)
class RouteChanges:
    added: int = 0
    removed: int = 0
    #: additions refused because a route of someone else (another protocol) exists for
    #: the same destination, table and metric: theirs stays, ours is not forced in
    conflicts: tuple[KernelRoute, ...] = ()


class NetlinkRoutes:
    """Read, add and delete swand's routes in one network namespace (None = our own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr: Any = None

    async def _open(self) -> Any:
        if self._ipr is None:
            self._ipr = await open_iproute(self.netns)
        return self._ipr

    async def close(self) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    async def _links(self, ipr: Any) -> dict[int, str]:
        return await link_names(ipr)

    async def read_owned(self, table: int, protocol: int) -> set[KernelRoute]:
        """Every route in `table` with `protocol`, both families."""
        try:
            ipr = await self._open()
            links = await self._links(ipr)
            out: set[KernelRoute] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                async for r in await ipr.route("dump", family=family):
                    if r.get("table") != table or r["proto"] != protocol:
                        continue
                    dst = r.get("dst") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
                    gateway = r.get("gateway") or ""
                    oif = r.get("oif")
                    out.add(KernelRoute(
                        f"{dst}/{r['dst_len']}", table, protocol, int(r.get("priority") or 0),
                        links.get(oif, "") if oif is not None else "", str(gateway)))
            return out
        except Exception:
            await self.close()
            raise

    async def apply(
        self, add: tuple[KernelRoute, ...], remove: tuple[KernelRoute, ...]
    ) -> RouteChanges:
        """Remove, then add (a replaced route is in both). A route already gone counts as
        removed, one someone else holds is a conflict (left to them); any other refused
        addition raises RouteWriteError after trying all the others."""
        if not add and not remove:
            return RouteChanges()
        try:
            ipr = await self._open()
            index = {name: idx for idx, name in (await self._links(ipr)).items()}
        except Exception:
            await self.close()
            raise
        removed = 0
        for route in remove:
            try:
                await ipr.route("del", **self._spec(route, index, deleting=True))
                removed += 1
            except Exception as exc:
                if getattr(exc, "code", None) not in (errno.ESRCH, errno.ENOENT):
                    raise RouteWriteError(f"deleting {describe_route(route)}: {exc}") from exc
                removed += 1
        failures: list[str] = []
        conflicts: list[KernelRoute] = []
        added = 0
        for route in add:
            try:
                await ipr.route("add", **self._spec(route, index))
                added += 1
            except Exception as exc:
                if getattr(exc, "code", None) == errno.EEXIST:
                    conflicts.append(route)
                    continue
                failures.append(f"{describe_route(route)}: {exc}")
        if failures:
            raise RouteWriteError("adding " + "; ".join(failures))
        return RouteChanges(added, removed, tuple(conflicts))

    @staticmethod
    def _spec(route: KernelRoute, index: dict[str, int], deleting: bool = False
              ) -> dict[str, Any]:
        spec: dict[str, Any] = {"dst": route.dst, "table": route.table,
                                "proto": route.protocol, "priority": route.metric,
                                "type": _RTN_UNICAST}
        if deleting:
            return {**spec, "scope": _RT_SCOPE_NOWHERE}
        if route.oif:
            oif = index.get(route.oif)
            if oif is None:
                raise RouteWriteError(f"{describe_route(route)}: no interface {route.oif!r}")
            spec["oif"] = oif
        if route.gateway:
            spec["gateway"] = route.gateway
        return spec


def describe_route(route: KernelRoute) -> str:
    via = f" via {route.gateway}" if route.gateway else ""
    dev = f" dev {route.oif}" if route.oif else ""
    return f"{route.dst}{via}{dev} table {route.table} proto {route.protocol}"
