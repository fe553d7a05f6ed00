"""EventWatcher: follows charon's SA events and turns them into classified actions.

Usage (the composition root)::

    watcher = EventWatcher(cfg.charon.vici, on_action=firewall_poke, metrics=registry)
    task = asyncio.create_task(watcher.run())     # until cancelled
    await watcher.ready.wait()                    # registered and resynchronised once
    async for action in watcher.actions(): ...    # or callbacks, or both
    watcher.table.current()                       # uniqueid -> IkeSa, for the firewall,
                                                  # NDP and routes (swand.runtime.sa_table)

Design:

- A dedicated `ViciEventStream` registered for ike-updown, child-updown, ike-rekey,
  child-rekey, ike-update, alert and log, each probed (charon answers EVENT_UNKNOWN for
  what it lacks: `alert` before 6.0.3).
- The reader never blocks on the work an event causes (charon's send queue towards a
  slow reader is unbounded): it decodes, appends to an in-process deque and counts.
  `log` lines are filtered in the reader: only "giving up after N retransmits" and
  "duplicate IKE_SA for peer" (an INITIAL_CONTACT replacement) are kept
  (charon sends log events at level <= 1 only, a few per SA set-up: cheap to drop).
  Above `queue_limit` queued events the reader drops and flags an overflow; the
  consumer then resynchronises from `list-sas` rather than act on a partial history.
- On a lost connection: reconnect with jittered exponential backoff (0.2 s doubling to
  5 s), re-register, then resynchronise: a `Resync` (the `list-sas` snapshot plus charon's
  start time from `stats`) is fed through the same `PeerTable`, which synthesises the
  ups and downs missed meanwhile and ignores duplicates. A different start time means
  charon restarted: every SA known before is reported down.
- The consumer applies events to the pure `PeerTable` and dispatches its actions:
  one structured log line per up/down/rekey/move, counters, callbacks, subscribers.
  An `ike-updown` down is followed by the `child-updown` downs of its CHILD SAs (final
  byte/packet counters): the consumer waits up to 50 ms for them so the down line and
  the action carry the totals.
- A down while ESTABLISHED without the IKE_DPD task waits up to `log_wait` (0.5 s) for
  its reason (DPD or an INITIAL_CONTACT replacement) without holding the events behind
  it; its SA leaves the per-SA reconcilers' view (`PeerTable.current`) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from swand.adapters.vici import (
    ViciConnectionError,
    ViciError,
    ViciEventStream,
    ViciSession,
    parse_uri,
)
from swand.core.backoff import Backoff
from swand.core.charon import charon_start_time, is_restart
from swand.core.events import (
    SA_SET_CHANGED,
    Action,
    ChildDown,
    DownReason,
    IkeDown,
    IkeSa,
    IkeUp,
    LogLine,
    PeerTable,
    Resync,
    SaDown,
    SaEvent,
    SaMoved,
    SaRekeyed,
    SaSetChanged,
    SaUp,
    attach_children,
    dpd_evidence,
    parse_event,
    parse_list_sas,
    replaced_sa,
)
from swand.log import get_logger
from swand.runtime.untrusted import report_unparsable

log = get_logger("swand.events")

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey", "ike-update", "alert",
          "log")
#: the log lines worth keeping (DPD confirmation); everything else is dropped on arrival
LOG_KEEP = ("giving up after", "duplicate IKE_SA for peer")

ActionCallback = Callable[[Action], Awaitable[None] | None]


class EventMetrics(Protocol):
    """What the watcher reports to (swand.runtime.metrics.MetricsRegistry fits)."""

    def record_down(self, reason: str, connection: str = "", peer: str = "") -> None: ...
    def record_event(self, name: str) -> None: ...
    def record_vici_reconnect(self) -> None: ...
    def set_queue_depth(self, depth: Callable[[], int] | int) -> None: ...


@dataclass
class EventStats:
    """Counters for metrics and tests (read from the loop, or copy via `as_dict`)."""

    events: Counter[str] = field(default_factory=Counter)
    downs: Counter[str] = field(
        default_factory=lambda: Counter({r.value: 0 for r in DownReason}))
    ups: int = 0
    rekeys: int = 0
    moves: int = 0
    reconnects: int = 0
    resyncs: int = 0
    charon_restarts: int = 0
    dropped: int = 0
    queue_high_water: int = 0
    registered: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": dict(self.events), "downs": dict(self.downs), "ups": self.ups,
            "rekeys": self.rekeys, "moves": self.moves, "reconnects": self.reconnects,
            "resyncs": self.resyncs, "charon_restarts": self.charon_restarts,
            "dropped": self.dropped, "queue_high_water": self.queue_high_water,
            "registered": sorted(self.registered),
        }


class _ResyncMark:
    """Queued by the reader after (re)registering: resynchronise here."""


@dataclass(slots=True)
class _Unexplained:
    """A down that waits for its reason, until `deadline` (the watcher's clock)."""

    down: IkeDown
    deadline: float


class EventWatcher:
    """Follows one charon's SA events; see the module docstring."""

    def __init__(
        self,
        uri: str,
        *,
        on_action: ActionCallback | None = None,
        metrics: EventMetrics | None = None,
        session: ViciSession | None = None,
        events: Iterable[str] = EVENTS,
        queue_limit: int = 100_000,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        backoff_min: float = 0.2,
        backoff_max: float = 5.0,
        child_wait: float = 0.05,
        log_wait: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri
        self.table = PeerTable()
        self.stats = EventStats()
        self.ready = asyncio.Event()
        self.connected = False
        self._callbacks: list[ActionCallback] = [on_action] if on_action else []
        self._resync_callbacks: list[Callable[[bool], Awaitable[None] | None]] = []
        self._lost_callbacks: list[Callable[[str], None]] = []
        self._event_callbacks: list[Callable[[SaEvent], None]] = []
        #: the `stats` reply of the last resynchronisation (plugins, uptime)
        self.last_stats: dict[str, Any] = {}
        self._metrics = metrics
        self._wanted = tuple(events)
        self._queue: deque[SaEvent | _ResyncMark] = deque()
        #: when each queued IKE_SA down was read (keyed by the object's id while it is
        #: queued): its wait for DPD evidence counts from then, not from when the consumer
        #: reaches it, so a burst of downs waits `log_wait` once, not once each
        self._down_read_at: dict[int, float] = {}
        #: unexplained downs waiting for charon's reason, by IKE_SA unique id (`_down`)
        self._unexplained: dict[str, _Unexplained] = {}
        #: their unique ids by peer: an up is looked up, not compared with each of them
        self._unexplained_by_peer: dict[tuple[str, str], dict[str, None]] = {}
        self._wakeup = asyncio.Event()
        self._queue_limit = queue_limit
        self._overflow = False
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._child_wait = child_wait
        self._log_wait = log_wait
        self._clock = clock
        #: list-sas and stats for resynchronisation: a session shared with other readers
        #: (swand.runtime.charon.Charon), or one of the watcher's own
        self._started: float | None = None
        self._session: ViciSession | None = session
        self._owns_session = session is None
        self._stream: ViciEventStream | None = None
        self._subscribers: list[asyncio.Queue[Action]] = []
        self._processed = asyncio.Event()
        self._busy = False  # the consumer holds an item it has not finished
        if metrics is not None:
            metrics.set_queue_depth(self.queue_depth)

    # --- public API -------------------------------------------------------------------

    def add_callback(self, callback: ActionCallback) -> None:
        """Call `callback(action)` for every action (sync or async; errors are logged)."""
        self._callbacks.append(callback)

    def add_resync_callback(self, callback: Callable[[bool], Awaitable[None] | None]
                            ) -> None:
        """Call `callback(charon_restarted)` after every resynchronisation, i.e. each
        time the event stream is (re)connected to a charon (sync or async)."""
        self._resync_callbacks.append(callback)

    def add_lost_callback(self, callback: Callable[[str], None]) -> None:
        """Call `callback(error)` when the event stream breaks or cannot connect (once
        per outage): charon went away, or its socket refuses."""
        self._lost_callbacks.append(callback)

    def add_event_callback(self, callback: Callable[[SaEvent], None]) -> None:
        """Call `callback(event)` for every SA event as the reader decodes it (before
        the table applies it): the one decoding of an event, shared (e.g. the metrics'
        traffic accumulator, which wants every child's final counters at once)."""
        self._event_callbacks.append(callback)

    def queue_depth(self) -> int:
        return len(self._queue)

    def live(self) -> tuple[IkeSa, ...]:
        """The live IKE SAs, in unique-id order (what per-SA firewall rules follow)."""
        return self.table.snapshot()

    async def actions(self) -> AsyncIterator[Action]:
        """Every action from now on, in order (an async iterator per caller)."""
        queue: asyncio.Queue[Action] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def run(self) -> None:
        """Read and process events until cancelled; survives charon restarts."""
        reader = asyncio.create_task(self._read_forever(), name="events-reader")
        consumer = asyncio.create_task(self._consume_forever(), name="events-consumer")
        try:
            await asyncio.gather(reader, consumer)
        finally:
            for task in (reader, consumer):
                task.cancel()
            for task in (reader, consumer):
                with contextlib.suppress(BaseException):
                    await task
            await self.close()

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None
        self.connected = False

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every queued event has been processed (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            while self._queue or self._busy or self._unexplained:
                self._processed.clear()
                await self._processed.wait()

    # --- reader -----------------------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = Backoff(self._backoff_min, self._backoff_max, jitter=0.2)
        first = True
        connections = 0
        while True:
            try:
                self._stream = await ViciEventStream.connect(self.uri, self._connect_timeout)
                registered = await self._stream.register(self._wanted)
            except ViciError as exc:
                self.connected = False
                if self._stream is not None:  # connected, but registering failed
                    await self._stream.close()
                    self._stream = None
                if first:  # once per outage, not once per retry
                    log.warning("events_connect_failed", vici=self.uri, error=str(exc))
                    first = False
                    self._lost(str(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            missing = sorted(set(self._wanted) - registered)
            if registered != self.stats.registered:
                log.info("events_registered", vici=self.uri, events=sorted(registered),
                         unsupported=missing)
            self.stats.registered = frozenset(registered)
            connections += 1
            if connections > 1:
                self.stats.reconnects += 1
                if self._metrics is not None:
                    self._metrics.record_vici_reconnect()
            first = False
            backoff.reset()
            self.connected = True
            self._push(_ResyncMark())
            try:
                await self._pump(self._stream)
            except ViciConnectionError as exc:
                log.warning("events_connection_lost", vici=self.uri, error=str(exc))
                self._lost(str(exc))
            finally:
                self.connected = False
                first = True
                stream, self._stream = self._stream, None
                if stream is not None:
                    await stream.close()

    async def _pump(self, stream: ViciEventStream) -> None:
        burst = 0
        while True:
            name, payload = await stream.next_event()
            burst += 1
            if burst % 256 == 0:
                # buffered events are read without suspending: let the loop breathe
                # (consumer, watchdog) during a flood
                await asyncio.sleep(0)
            self.stats.events[name] += 1
            if self._metrics is not None:
                self._metrics.record_event(name)
            if name == "log" and not any(k in payload.get("msg", "") for k in LOG_KEEP):
                continue
            try:
                parsed = parse_event(name, payload, report_unparsable)
            except Exception as exc:  # malformed payload: count, keep reading
                log.error("events_parse_failed", event=name, error=repr(exc))
                continue
            for event in parsed:
                for callback in self._event_callbacks:
                    try:
                        callback(event)
                    except Exception as exc:  # a consumer's bug must not stop the reader
                        log.error("events_event_callback_failed", error=repr(exc))
                self._push(event)

    def _lost(self, error: str) -> None:
        for callback in self._lost_callbacks:
            try:
                callback(error)
            except Exception as exc:
                log.error("events_lost_callback_failed", error=repr(exc))

    def _push(self, item: SaEvent | _ResyncMark) -> None:
        if len(self._queue) >= self._queue_limit and not isinstance(item, _ResyncMark):
            self.stats.dropped += 1
            if not self._overflow:
                self._overflow = True
                log.error("events_queue_overflow", limit=self._queue_limit)
            return
        self._queue.append(item)
        if isinstance(item, IkeDown):
            self._down_read_at[id(item)] = self._clock()
        depth = len(self._queue)
        if depth > self.stats.queue_high_water:
            self.stats.queue_high_water = depth
        self._wakeup.set()

    # --- consumer ---------------------------------------------------------------------

    async def _next(self, timeout: float | None = None) -> SaEvent | _ResyncMark | None:
        """The next queued item; None after `timeout` seconds, or at a wake-up with
        nothing queued (`poke`: the caller looks at its clock again)."""
        while not self._queue:
            if not self._unexplained:
                self._processed.set()
            self._wakeup.clear()
            if timeout is None:
                await self._wakeup.wait()
                continue
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                return None
            if not self._queue:
                return None
        return self._queue.popleft()

    def poke(self) -> None:
        """Wake the consumer to look at its clock (tests that move an injected clock)."""
        self._wakeup.set()

    async def _consume_forever(self) -> None:
        while True:
            item = await self._next(self._until_due())
            self._busy = True
            try:
                if item is None:  # an unexplained down's wait is over
                    await self._settle()
                    continue
                if self._overflow:
                    # we dropped events: the queue is no longer a complete history
                    self._overflow = False
                    self._queue.clear()
                    self._down_read_at.clear()
                    item = _ResyncMark()
                if isinstance(item, _ResyncMark):
                    await self._resync()
                elif isinstance(item, IkeDown):
                    await self._down(item)
                else:
                    await self._explain_or_apply(item)
                await self._settle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one event stop the watcher
                log.error("events_processing_failed", error=repr(exc))
            finally:
                self._busy = False
            if not self._queue and not self._unexplained:
                self._processed.set()

    async def _down(self, item: IkeDown) -> None:
        """An IKE_SA down. One while ESTABLISHED without the IKE_DPD task is not yet
        explained: it may be a DPD (charon's "giving up" log line is raised
        asynchronously and can trail the down event) or an INITIAL_CONTACT replacement
        (charon destroys the old SA before the new one's up, and logs "destroying
        duplicate IKE_SA"). Such a down waits, up to `log_wait` after it was read, for
        the log line or the new SA's up, which are then applied first; the events
        behind it are not held meanwhile (at 100 disconnects a second, holding them held
        every connect too), and the SA leaves the per-SA reconcilers' view at once
        (`PeerTable.leaving`): whatever the reason, it is gone."""
        read_at = self._down_read_at.pop(id(item), None)
        down = await self._with_children(item)
        sa = down.sa
        if sa.state != "ESTABLISHED" or "IKE_DPD" in sa.tasks_active:
            await self._apply(down)
            return
        deadline = (self._clock() if read_at is None else read_at) + self._log_wait
        earlier = self._unexplained.get(sa.uniqueid)
        if earlier is not None:  # a duplicate down: one wait (its place: deadlines stay
            deadline = earlier.deadline  # in order), the later counters
        self._unexplained[sa.uniqueid] = _Unexplained(down, deadline)
        self._unexplained_by_peer.setdefault(sa.peer, {})[sa.uniqueid] = None
        if sa.uniqueid in self.table.live and sa.uniqueid not in self.table.leaving:
            self.table.leaving.add(sa.uniqueid)
            await self._dispatch(SA_SET_CHANGED)

    async def _explain_or_apply(self, item: SaEvent) -> None:
        """Apply `item`; first, if it explains an unexplained down, as evidence."""
        if self._unexplained:
            if isinstance(item, IkeUp):
                waiting = self._unexplained_of_peer(item.sa.peer)
                if waiting is not None:
                    await self._apply(item)  # the replacement first: the peer stays
                    await self._apply(self._explained(waiting))
                    return
            elif isinstance(item, LogLine):
                uid = dpd_evidence(item)
                if uid is not None and uid in self._unexplained:
                    self.table.apply(item, now=self._clock())
                    await self._apply(self._explained(uid))
                    return
                uid = replaced_sa(item)
                if uid is not None and uid in self._unexplained:
                    self.table.apply(item, now=self._clock())  # now wait for its up
                    return
        await self._apply(item)

    def _unexplained_of_peer(self, peer: tuple[str, str]) -> str | None:
        uids = self._unexplained_by_peer.get(peer)
        return next(iter(uids)) if uids else None

    def _explained(self, uid: str) -> IkeDown:
        """Take `uid`'s down out of the waiting ones, to be applied now."""
        down = self._unexplained.pop(uid).down
        uids = self._unexplained_by_peer.get(down.sa.peer)
        if uids is not None:
            uids.pop(uid, None)
            if not uids:
                del self._unexplained_by_peer[down.sa.peer]
        return down

    def _until_due(self) -> float | None:
        """Seconds until the first unexplained down's wait is over (None: none waits)."""
        if not self._unexplained:
            return None
        first = next(iter(self._unexplained.values())).deadline  # they wait in read order
        return max(0.0, first - self._clock())

    async def _settle(self) -> None:
        """Apply the unexplained downs whose wait is over, in the order they were read."""
        now = self._clock()
        while self._unexplained:
            uid, first = next(iter(self._unexplained.items()))
            if first.deadline > now:
                return
            await self._apply(self._explained(uid))

    async def _with_children(self, down: IkeDown) -> IkeDown:
        """Attach the CHILD SA downs that follow an IKE down (they carry the counters)."""
        uid = down.sa.uniqueid
        children = []
        known = self.table.live.get(uid)
        expected = len(known.children) if known is not None else 0
        while True:
            if self._queue:
                nxt = self._queue[0]
                if isinstance(nxt, ChildDown) and nxt.sa.uniqueid == uid:
                    self._queue.popleft()
                    children.append(nxt.child)
                    continue
                break
            if len(children) >= expected:
                break
            item = await self._next(self._child_wait)
            if item is None:
                break
            self._queue.appendleft(item)
        return IkeDown(attach_children(down.sa, children)) if children else down

    async def _resync(self) -> None:
        """list-sas + stats through the watcher's own command session, into the table."""
        if self._session is None:
            self._session = ViciSession(self.uri, self._connect_timeout)
        retry = Backoff(0.1, 0.2)
        for attempt in range(3):
            try:
                # a session left from before charon restarted fails once, then reconnects
                stats = await self._session.request("stats", timeout=self._command_timeout)
                # blocking: `noblock` skips IKE_SAs that are mid-exchange, and the resync
                # would then report them down
                sa_events, _ = await self._session.streamed(
                    "list-sas", "list-sa", timeout=self._command_timeout)
                break
            except ViciError as exc:
                if attempt == 2:
                    log.warning("events_resync_failed", vici=self.uri, error=str(exc))
                    asyncio.get_running_loop().call_later(1.0, self._push, _ResyncMark())
                    return
                await asyncio.sleep(retry.next_delay())
        self.last_stats = stats
        instance = self._instance(stats)
        pending = frozenset(
            e.sa.uniqueid for e in self._queue if isinstance(e, IkeDown)
        ) | frozenset(self._unexplained)
        resync = parse_list_sas(sa_events, instance=instance, on_skip=report_unparsable)
        restarted = bool(self.table.instance and instance and instance != self.table.instance)
        if restarted:
            # counted, not logged: swand.runtime.charon.Charon logs it once
            self.stats.charon_restarts += 1
        self.stats.resyncs += 1
        log.info("events_resync", vici=self.uri, sas=len(resync.sas))
        await self._apply(Resync(resync.sas, instance, pending=pending))
        self.ready.set()
        for callback in self._resync_callbacks:
            try:
                result = callback(restarted)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("events_resync_callback_failed", error=repr(exc))

    def _instance(self, stats: dict[str, Any]) -> str:
        """Which charon process answers (swand's one restart detector: see
        swand.runtime.charon). For a unix socket the socket file's inode and mtime (a
        restarted charon binds a new one, so a restart within the same second is still
        noticed); else its start time from `stats`, which jitters by a second between
        replies of one process (`swand.core.charon.is_restart` allows for that)."""
        kind, path, _ = parse_uri(self.uri)
        if kind == "unix":
            with contextlib.suppress(OSError):
                st = os.stat(path)
                return f"{st.st_ino}:{st.st_mtime_ns}"
        started = charon_start_time(stats)
        if self.table.instance and not is_restart(self._started, started):
            return self.table.instance
        self._started = started
        return f"started {started:.0f}" if started is not None else ""

    async def _apply(self, event: SaEvent) -> None:
        for action in self.table.apply(event, now=self._clock()):
            self._account(action)
            await self._dispatch(action)

    def _account(self, action: Action) -> None:
        if isinstance(action, SaUp):
            self.stats.ups += 1
            log.info("sa_up", peer_new=action.peer_new, resync=action.resync,
                     **action.sa.log_fields())
        elif isinstance(action, SaDown):
            self.stats.downs[action.reason.value] += 1
            if self._metrics is not None:
                self._metrics.record_down(action.reason.value, connection=action.sa.conn,
                                          peer=action.sa.identity)
            log.info("sa_down", reason=action.reason.value, confirmed=action.confirmed,
                     detail=action.detail, peer_gone=action.peer_gone, resync=action.resync,
                     **action.sa.log_fields())
        elif isinstance(action, SaRekeyed):
            self.stats.rekeys += 1
            log.info("sa_rekeyed", old_ike_id=action.old.uniqueid, **action.new.log_fields())
        elif isinstance(action, SaMoved):
            self.stats.moves += 1
            log.info("sa_moved", old_local=action.old_local, old_remote=action.old_remote,
                     local_addr=action.sa.local_host, **action.sa.log_fields())
        elif isinstance(action, SaSetChanged):
            pass

    async def _dispatch(self, action: Action) -> None:
        for queue in self._subscribers:
            queue.put_nowait(action)
        for callback in self._callbacks:
            try:
                result = callback(action)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("events_callback_failed", action=type(action).__name__,
                          error=repr(exc))
