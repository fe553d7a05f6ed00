"""Charon: the one owner of swand's VICI connections to one charon.

A running daemon holds three connections, whatever runs (loader, events, metrics,
firewall, keepalive):

- the event stream (`events`, an `EventWatcher`): SA events, decoded once; its break
  says at once that charon went away;
- `queries`: reads -- the watcher's resynchronisation (`stats`, `list-sas`), the metrics
  poll, the firewall's `get-pools` (the firewall, NDP proxy and routes reconcilers read
  the SAs from the watcher's table, `swand.runtime.sa_table`);
- `commands`: writes -- the loader's loads (pipelined on it), keepalive's initiate and
  terminate. Writes have a connection of their own so a long load or a blocking
  initiate never delays a read (the firewall's pass after an SA event).

Restarts are detected here only. Each time the event stream (re)connects, the watcher
resynchronises and compares charon's identity (for a unix socket the socket file's inode
and mtime, else the start time from `stats`) with the last one: this publishes
`charon_up` (first sight, or back after an outage, `restarted` when the identity
changed) and `charon_down` to the subscribers, and the watcher publishes the parsed SA
events and the actions of its peer table. `swand.runtime.wiring.wire` connects them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from swand.adapters.vici import ViciError, ViciSession
from swand.core.events import SaEvent
from swand.log import get_logger
from swand.runtime.events import ActionCallback, EventMetrics, EventWatcher

log = get_logger("swand.charon")

#: plugins whose presence changes what swand does (logged at charon_up: what we found)
NOTABLE_PLUGINS = ("kernel-libipsec", "kernel-netlink", "counters", "attr", "revocation",
                   "eap-radius", "unity")


@dataclass(frozen=True)
class CharonUp:
    """charon answers: for the first time (`first`), or again after an outage;
    `restarted` when it is another process than before (its SAs and loads are gone)."""

    first: bool
    restarted: bool
    version: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()


UpCallback = Callable[[CharonUp], Awaitable[None] | None]
DownCallback = Callable[[str], None]


class Charon:
    """The session owner; `await run()` until cancelled, then `await close()`."""

    def __init__(self, uri: str, *, metrics: EventMetrics | None = None,
                 connect_timeout: float = 2.0, **watcher_options: Any) -> None:
        self.uri = uri
        self.queries = ViciSession(uri, connect_timeout=connect_timeout)
        self.commands = ViciSession(uri, connect_timeout=connect_timeout)
        self.events = EventWatcher(uri, session=self.queries, metrics=metrics,
                                   connect_timeout=connect_timeout, **watcher_options)
        self.events.add_resync_callback(self._resynced)
        self.events.add_lost_callback(self._lost)
        #: None until charon was first reached or found absent
        self.up: bool | None = None
        self.restarts = 0
        self.version: dict[str, Any] = {}
        self.plugins: tuple[str, ...] = ()
        self._up_callbacks: list[UpCallback] = []
        self._down_callbacks: list[DownCallback] = []

    # --- subscribing ------------------------------------------------------------------

    def on_up(self, callback: UpCallback) -> None:
        """`callback(CharonUp)` each time charon is reached (sync or async)."""
        self._up_callbacks.append(callback)

    def on_down(self, callback: DownCallback) -> None:
        """`callback(error)` once per outage."""
        self._down_callbacks.append(callback)

    def on_action(self, callback: ActionCallback) -> None:
        """`callback(action)` for every action of the peer table (SaUp, SaSetChanged...)."""
        self.events.add_callback(callback)

    def on_sa_event(self, callback: Callable[[SaEvent], None]) -> None:
        """`callback(event)` for every decoded SA event, as it is read."""
        self.events.add_event_callback(callback)

    # --- running ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.events.run()

    async def close(self) -> None:
        for closer in (self.events.close, self.queries.close, self.commands.close):
            with contextlib.suppress(Exception):
                await closer()

    # --- the one restart detector -----------------------------------------------------

    async def _resynced(self, restarted: bool) -> None:
        if self.up is True and not restarted:
            return  # a resync after a queue overflow: charon never left
        first = self.up is None
        self.plugins = tuple(str(p) for p in self.events.last_stats.get("plugins") or ())
        with contextlib.suppress(ViciError):
            self.version = await self.queries.request("version", timeout=5.0)
        self.up = True
        if restarted:
            self.restarts += 1
            log.warning("charon_restarted", vici=self.uri)
        log.info("charon_up", vici=self.uri, daemon=self.version.get("daemon"),
                 charon_version=self.version.get("version"),
                 kernel=self.version.get("sysname", ""),
                 plugins_of_note=[p for p in NOTABLE_PLUGINS if p in self.plugins],
                 plugins=len(self.plugins), first=first, restarted=restarted)
        up = CharonUp(first, restarted, dict(self.version), self.plugins)
        for callback in self._up_callbacks:
            try:
                result = callback(up)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # one subscriber's bug must not starve the others
                log.error("charon_up_callback_failed", error=repr(exc))

    def _lost(self, error: str) -> None:
        if self.up is False:
            return
        self.up = False
        log.warning("charon_unreachable", vici=self.uri, error=error)
        for callback in self._down_callbacks:
            try:
                callback(error)
            except Exception as exc:
                log.error("charon_down_callback_failed", error=repr(exc))
