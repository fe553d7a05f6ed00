"""Keepalive: keep `[keepalive] conns` up on a client.

charon does much of this itself when the profile says so (`start_action = start`,
`dpd_action = restart`, `close_action = start`, `keyingtries = 0`, MOBIKE). swand covers
what it does not: a charon restart, a connection charon gave up on, a network change
noticed at once, and makes it visible in the log.

Per connection, one keeper task:

- At start (after `down_grace`, so charon's own `start_action` goes first), and whenever
  kicked, it makes sure the connection has an IKE SA: if charon
  has none (not even one CONNECTING: then charon itself is trying, and we do not start a
  second one), it `initiate`s every child of the connection. The initiate does not block
  (VICI ``timeout = -1``: charon answers at once): the command connection is the loader's
  too, and a blocking initiate towards an unreachable peer would hold a config load back
  for `initiate_timeout`. The outcome comes from the SA events (an `SaUp` or `SaDown` of
  the connection; charon destroys an IKE_SA that never came up without an event, so a
  `list-sas` every `initiate_poll` seconds that no longer shows it is a failure too), or
  is a failure when nothing decided it within `initiate_timeout`.
- While initiation fails it retries with exponential backoff: 1 s doubling to 60 s, each
  step jittered by ±20 %; a network change cuts the wait short, and charon coming back
  (the EventWatcher resynchronised) cuts it short and starts the backoff afresh.
- A kick comes from the EventWatcher when the connection's last IKE SA goes down for any
  reason but an administrator's terminate. After such a down it waits `down_grace`
  (0.5 s) first, so that charon's own `close_action`/`dpd_action` restart, when
  configured, goes first and swand never adds a second SA (it then sees one CONNECTING).

How an administrator's terminate is told apart: the down event shows *this* charon sent
the delete (state DELETING with IKE_DELETE among the active tasks) and swand did not ask
for it. A peer's delete (the gateway terminating us) has the task passive; a DPD timeout
is ESTABLISHED. A held connection stays down until it comes up by other means (charon,
`swanctl --initiate`) or `resume()` is called; swand restarts forget holds.

Network changes (`NetlinkWatcher.way_out`, by default in the namespace swand runs in:
global addresses, default routes in the main table), once a burst has settled: each
kept connection without an SA is initiated at once; one whose SA's local address is no
longer ours gets `mobike_grace` seconds for MOBIKE to move it (an `ike-update`), and is
otherwise terminated (by swand, so not a hold) and initiated anew.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from swand.adapters.netlink import NetlinkWatcher, NetState
from swand.adapters.vici import ViciCommandError, ViciError, ViciSession
from swand.clock import SYSTEM_CLOCK, Clock, TimerHandle
from swand.core.backoff import Backoff
from swand.core.events import Action, SaDown, SaMoved, SaUp, locally_deleted
from swand.log import get_logger
from swand.runtime.events import EventWatcher

log = get_logger("swand.keepalive")

ACTIVE_STATES = frozenset({"CONNECTING", "ESTABLISHED", "REKEYING", "REKEYED", "PASSIVE"})

#: each backoff step is multiplied by a random factor in 1 ± this
BACKOFF_JITTER = 0.2


class Keepalive:
    """Keeps the listed connections up; `await run()` until cancelled.

    Usage: ``Keepalive(cfg.charon.vici, cfg.keepalive.conns, charon.events,
    session=charon.commands)``, subscribed by `swand.runtime.wiring.wire` (`on_action`,
    `on_resync`); it reads the watcher's live SA table. `held`, `initiations`, `failures`,
    `next_retry` and `last_delay` say what it is doing (status, metrics, tests).
    """

    def __init__(
        self,
        uri: str,
        conns: Iterable[str],
        watcher: EventWatcher,
        *,
        netlink: NetlinkWatcher | None = None,
        follow_network: bool = True,
        initiate_timeout: float = 15.0,
        initiate_poll: float = 1.0,
        backoff_start: float = 1.0,
        backoff_cap: float = 60.0,
        backoff_jitter: float = BACKOFF_JITTER,
        mobike_grace: float = 1.0,
        settle: float = 0.3,
        down_grace: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        session: ViciSession | None = None,
    ) -> None:
        self.uri = uri
        self.conns = tuple(dict.fromkeys(conns))
        self.watcher = watcher
        #: the namespace swand runs in unless told otherwise (tests pass a lab netns)
        self.netlink = netlink if netlink is not None or not follow_network \
            else NetlinkWatcher()
        self.initiate_timeout = initiate_timeout
        self.initiate_poll = initiate_poll
        self.backoff_start = backoff_start
        self.backoff_cap = backoff_cap
        self.backoff_jitter = backoff_jitter
        self.mobike_grace = mobike_grace
        self.settle = settle
        self.down_grace = down_grace
        self.clock = clock
        #: monotonic time of the next attempt while backing off (None: not failing)
        self.next_retry: dict[str, float | None] = dict.fromkeys(self.conns)
        #: the backoff delay last waited (0 when the last attempt succeeded)
        self.last_delay: dict[str, float] = dict.fromkeys(self.conns, 0.0)
        self.held: set[str] = set()
        self.initiations: dict[str, int] = dict.fromkeys(self.conns, 0)
        self.failures: dict[str, int] = dict.fromkeys(self.conns, 0)
        self._kick = {c: asyncio.Event() for c in self.conns}
        self._net_kick = {c: asyncio.Event() for c in self.conns}
        self._own_terminates: set[str] = set()
        #: initiate/terminate/list-sas: the daemon shares the Charon owner's command
        #: session (swand.runtime.charon); standalone, one of its own
        self._session = session if session is not None else ViciSession(uri)
        self._owns_session = session is None
        self._fresh_start = dict.fromkeys(self.conns, False)
        #: the way out last seen (None: not yet read) and the pending re-check of a change
        self._way_out: tuple[frozenset[str], frozenset[tuple[str, str]]] | None = None
        self._net_check: TimerHandle | None = None
        self._replacing: set[asyncio.Task[None]] = set()
        #: the pending outcome of a non-blocking initiate, settled by the SA events
        self._outcome: dict[str, asyncio.Future[bool]] = {}
        if self.netlink is not None:
            self.netlink.add_callback(self._on_net)

    # --- control ----------------------------------------------------------------------

    def resume(self, conn: str) -> None:
        """Undo a hold (an administrator's terminate) and bring `conn` up again."""
        self.held.discard(conn)
        if conn in self._kick:
            self._kick[conn].set()

    def kick(self, conn: str, network: bool = False) -> None:
        if conn in self._kick and conn not in self.held:
            (self._net_kick if network else self._kick)[conn].set()

    def on_action(self, action: Action) -> None:
        """EventWatcher callback: re-initiate after a down, note holds, clear them."""
        if isinstance(action, (SaUp, SaDown)):
            pending = self._outcome.get(action.sa.conn)
            if pending is not None and not pending.done():
                pending.set_result(isinstance(action, SaUp))
        if isinstance(action, SaUp) and action.sa.conn in self.held:
            log.info("keepalive_resumed", conn=action.sa.conn, reason="up by other means")
            self.held.discard(action.sa.conn)
            return
        if isinstance(action, SaMoved) and action.sa.conn in self._kick:
            log.info("keepalive_mobike", conn=action.sa.conn, local_addr=action.sa.local_host)
            return
        if not isinstance(action, SaDown) or action.sa.conn not in self._kick:
            return
        conn = action.sa.conn
        if self.watcher.table.live_for_conn(conn):
            return  # another SA of the connection is up (reauthentication)
        uid = action.sa.uniqueid
        if uid in self._own_terminates:
            self._own_terminates.discard(uid)
        elif locally_deleted(action.sa):
            self.held.add(conn)
            log.info("keepalive_held", conn=conn, ike_id=uid,
                     reason="terminated locally (administrator); not re-initiating")
            return
        log.info("keepalive_down", conn=conn, ike_id=uid, reason=action.reason.value)
        self.kick(conn)

    def on_resync(self, charon_restarted: bool) -> None:
        """charon is reached (first, or again after an outage): a connection still down
        is tried at once, with a fresh backoff (charon is back, perhaps after a long
        outage; the loader needs a moment to load the connection again, hence 1 s,
        2 s... from here)."""
        for conn in self.conns:
            if conn not in self.held and not self.watcher.table.live_for_conn(conn):
                self._fresh_start[conn] = True
                self.kick(conn, network=True)

    # --- tasks ------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._keeper(c), name=f"keepalive-{c}")
                 for c in self.conns]
        if self.netlink is not None:
            tasks.append(asyncio.create_task(self.netlink.run(), name="keepalive-net"))
        try:
            await asyncio.gather(*tasks)
        finally:
            if self._net_check is not None:
                self._net_check.cancel()
            tasks += self._replacing
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if self._owns_session:
                await self._session.close()

    async def _keeper(self, conn: str) -> None:
        backoff = Backoff(self.backoff_start, self.backoff_cap, jitter=self.backoff_jitter)
        # a just-loaded connection with `start_action = start` is being initiated by
        # charon itself: let it go first, as after a down
        await self.clock.sleep(self.down_grace)
        while True:
            if conn not in self.held:
                ok = await self._ensure_up(conn)
                if ok:
                    backoff.reset()
                    self.last_delay[conn] = 0.0
                else:
                    if self._fresh_start[conn]:
                        backoff.reset()
                        self._fresh_start[conn] = False
                    delay = backoff.next_delay()
                    self.last_delay[conn] = delay
                    self.next_retry[conn] = self.clock.monotonic() + delay
                    await self._wait(conn, delay)
                    self.next_retry[conn] = None
                    continue
            woken_by = await self._wait(conn, None)
            if woken_by == "down":
                # charon may restart it itself (close_action/dpd_action): let it go first
                await self.clock.sleep(self.down_grace)

    async def _wait(self, conn: str, timeout: float | None) -> str:
        """Until kicked or `timeout` passes; returns "down", "network" or "timeout".

        During a backoff (a timeout) only a network change cuts the wait short: the
        downs of our own failed attempts must not."""
        kick, net = self._kick[conn], self._net_kick[conn]
        woken = await self.clock.wait_any([net] if timeout is not None else [net, kick],
                                          timeout)
        woken_by = "network" if net.is_set() else "down" if woken else "timeout"
        kick.clear()
        net.clear()
        return woken_by

    async def _charon_sas(self, conn: str) -> list[dict[str, Any]]:
        # blocking: `noblock` skips an IKE_SA that is mid-exchange (a rekey), which would
        # look down and make keepalive initiate a second one
        events, _ = await self._session.streamed(
            "list-sas", "list-sa", {"ike": conn}, timeout=10.0)
        return [body for e in events for name, body in e.items()
                if name == conn and isinstance(body, dict)]

    async def _ensure_up(self, conn: str) -> bool:
        """True when `conn` has an IKE SA (already, or after initiating it)."""
        try:
            sas = await self._charon_sas(conn)
            if any(sa.get("state") in ACTIVE_STATES for sa in sas):
                return True
            conns = await self._session.streamed("list-conns", "list-conn", {"ike": conn},
                                                 timeout=10.0)
            children = [child for e in conns[0] for name, body in e.items() if name == conn
                        for child in (body.get("children") or {})]
            if not children:
                raise ViciCommandError("initiate", f"connection {conn!r} is not loaded")
            self.initiations[conn] += 1
            log.info("keepalive_initiate", conn=conn, attempt=self.failures[conn] + 1)
            await self._initiate(conn, children)
        except ViciError as exc:
            self.failures[conn] += 1
            log.warning("keepalive_initiate_failed", conn=conn, error=str(exc),
                        failures=self.failures[conn])
            return False
        self.failures[conn] = 0
        log.info("keepalive_up", conn=conn)
        return True

    async def _initiate(self, conn: str, children: list[str]) -> None:
        """Initiate without blocking the shared command connection; wait for the SA
        events to say how it went. Raises `ViciError` when it failed or said nothing."""
        outcome = self._outcome[conn] = asyncio.get_running_loop().create_future()
        try:
            for child in children:
                await self._session.request(
                    "initiate", {"ike": conn, "child": child, "timeout": -1,
                                 "init-limits": "no"}, timeout=10.0)
            up = await self._outcome_of(conn, outcome)
            if up is None:
                raise ViciCommandError(
                    "initiate", f"no IKE_SA up within {self.initiate_timeout:g} s")
            if not up:
                raise ViciCommandError("initiate", "the IKE_SA failed before it was up")
        finally:
            self._outcome.pop(conn, None)

    async def _outcome_of(self, conn: str, outcome: asyncio.Future[bool]) -> bool | None:
        """True (up) or False (down) as the SA events say; False as well when charon no
        longer lists an active IKE_SA of `conn` (one that never came up is destroyed
        without an ike-updown event); None when `initiate_timeout` passed undecided."""
        deadline = self.clock.monotonic() + self.initiate_timeout
        while (left := deadline - self.clock.monotonic()) > 0:
            done, _ = await asyncio.wait({outcome}, timeout=min(left, self.initiate_poll))
            if done:
                return outcome.result()
            sas = await self._charon_sas(conn)
            if outcome.done():
                return outcome.result()
            if not any(sa.get("state") in ACTIVE_STATES for sa in sas):
                return False
        return None

    def _on_net(self, state: NetState) -> None:
        """NetlinkWatcher callback: when the way out changed (the first state is only
        noted), re-check once the burst (del, add, route) has been quiet for `settle`."""
        previous, self._way_out = self._way_out, state.way_out
        if previous is None or previous == state.way_out:
            return
        log.debug("keepalive_net_change", addresses=sorted(state.global_addresses))
        if self._net_check is not None:
            self._net_check.cancel()
        self._net_check = self.clock.call_later(self.settle, self._network_changed)

    def _addresses(self) -> frozenset[str]:
        assert self.netlink is not None and self.netlink.state is not None
        return self.netlink.state.global_addresses

    def _network_changed(self) -> None:
        self._net_check = None
        addresses = self._addresses()
        for conn in self.conns:
            if conn in self.held:
                continue
            live = self.watcher.table.live_for_conn(conn)
            if not live:
                log.info("keepalive_network_changed", conn=conn, action="initiate")
                self.kick(conn, network=True)
                continue
            stale = [sa for sa in live if sa.local_host and sa.local_host not in addresses]
            if not stale:
                continue
            task = asyncio.get_running_loop().create_task(self._replace_stale(conn))
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    async def _replace_stale(self, conn: str) -> None:
        """Give MOBIKE `mobike_grace` seconds; then replace SAs whose address is gone."""
        await self.clock.sleep(self.mobike_grace)
        addresses = self._addresses()
        stale = [sa for sa in self.watcher.table.live_for_conn(conn)
                 if sa.local_host and sa.local_host not in addresses]
        if not stale:
            return
        for sa in stale:
            log.info("keepalive_network_changed", conn=conn, ike_id=sa.uniqueid,
                     local_addr=sa.local_host, action="replace (MOBIKE did not move it)")
            self._own_terminates.add(sa.uniqueid)
            with contextlib.suppress(ViciError):
                await self._session.request(
                    "terminate", {"ike-id": sa.uniqueid, "force": "yes", "timeout": -1},
                    timeout=5.0, check=False)
        self.kick(conn, network=True)
