"""Metrics runtime: swand's own counters, and a poller that keeps a snapshot of charon.

Two pieces, composed by app.py:

- `MetricsRegistry`: thread-safe counters other runtime parts call from the loop
  (`record_reload`, `record_down`, `record_firewall`, `record_vici_reconnect`,
  `record_charon_restart`, `record_event`, `set_loaded_items`, `set_queue_depth`); the
  HTTP thread copies them out with `self_counters()`.
- `MetricsPoller`: reads charon over one persistent VICI command session (`list-sas`
  with `noblock`, never a new session per scrape): in the daemon the session the
  `Charon` owner shares, standalone one of its own plus a small event connection
  (child-updown, child-rekey: final counters for the traffic accumulator). After every
  poll it swaps in a new immutable `MetricsSnapshot` *and* its pre-rendered charon
  families, so a scrape only copies a few hundred lines and answers at once even while
  charon is down (`swand_charon_up 0`).

In the daemon (`swand.runtime.wiring`) the `Charon` owner feeds it: decoded SA events
(`poller.on_sa_event`, idempotent: the accumulator ignores what it already counted),
`poller.charon_lost()` and `poller.charon_restarted()`; the poller detects no restart
itself. There it also reads the event watcher's peer table (`use_live_sas`): a change of
the SA set (`sa_set_changed`) no longer forces a full poll (at 10,000 SAs ~1 s of
`list-sas` per burst of events); the SA-set-derived families (SA counts, peers, virtual
IPs) are re-rendered from the table at most every `refresh_delay` seconds, while traffic
counters, charon's stats and pool leases keep coming from the periodic poll (and the
final counters of down events).

Usage::

    registry = MetricsRegistry()
    poller = MetricsPoller(cfg.charon.vici, registry, per_peer=cfg.metrics.per_peer)
    server = http_metrics.serve(cfg.metrics.listen, MetricsCollector(poller, registry))
    await poller.run()          # until cancelled; then await poller.close(); server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from swand.adapters.files import replace_file
from swand.adapters.vici import (
    ViciCommandError,
    ViciConnectionError,
    ViciError,
    ViciEventStream,
    ViciSession,
    decode_body,
)
from swand.clock import SYSTEM_CLOCK, Clock
from swand.core import metrics as core
from swand.core.events import (
    ChildDown,
    ChildRekey,
    ChildUp,
    IkeDown,
    IkeRekey,
    IkeSa,
    IkeUp,
    SaEvent,
)
from swand.core.list_sa import sas_from_list_sa
from swand.core.untrusted import SkipFn
from swand.log import get_logger
from swand.runtime.untrusted import report_unparsable, unparsable_counts

log = get_logger("swand.metrics")

#: events the poller's own stream follows (final counters and liveness)
POLLER_EVENTS = ("child-updown", "child-rekey", "ike-updown")


def _release_memory() -> None:
    """Give the decoded list-sas payload's memory back to the OS after a poll.

    A poll of N SAs briefly holds N decoded event dicts; glibc keeps freed heap pages
    unless asked, so resident memory would stay at the peak of the largest poll."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _release(holder: list[Any]) -> None:
    """Drop the objects in `holder` (its only reference) and give the memory back."""
    holder.clear()
    _release_memory()


#: the GIL hand-over interval while a poll's decoder and accounting threads run: the
#: loop thread waits up to this long for the GIL after each socket call (default 5 ms)
POLL_SWITCH_INTERVAL = 0.001
#: the collector is paused (and the heap frozen after the poll) only from this many SAs
#: in the last poll: below it a full collection costs milliseconds, and a small gateway's
#: long-lived daemon should not pay freeze's price every poll (cycles frozen while still
#: garbage are never collected)
GC_PAUSE_MIN_SAS = 10_000
#: a refresh from the event table with at least this many SAs renders on a worker
#: thread (10,000 SAs: ~50 ms of pure Python); smaller ones inline
REFRESH_THREAD_MIN = 2_000


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No full garbage collection during a poll; what survives it is frozen.

    A poll of 100,000 SAs allocates ~500,000 tracked objects (IkeSa, ChildSa, their
    tuples, the accumulator's entries), and each allocation burst triggered full
    collections that walk every live object with the GIL held: 0.3-1.6 s stalls of the
    event loop, several per poll (bench/README.md). During a poll only the young
    generations are collected (cheap: they hold the newest objects only, and most
    garbage cycles die young); afterwards everything alive is moved to the permanent
    generation, so later full collections walk only what is newer. The snapshot is
    acyclic (frozen dataclasses and tuples) and is freed by reference counting when
    the next one replaces it. The price: a garbage cycle that outlived two young
    collections and died before the freeze is never collected (bench_churn.py's RSS).
    """
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(POLL_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.freeze()
        gc.set_threshold(young, middle, old)


def parse_list_sa_packets(packets: list[tuple[bytes, int]], uri: str,
                          on_skip: SkipFn = report_unparsable) -> list[IkeSa]:
    """list-sas' list-sa events, undecoded ((packet, offset of the body) each), as the SA
    model: straight from the bytes (`core.list_sa`, ~2.5x less CPU at 100,000 SAs), and
    a message not in charon's plain shape through the general path (`decode_body` +
    `parse_sas`), which decides it as before: an SA it cannot read goes to `on_skip`,
    a malformed message raises ViciConnectionError."""
    sas: list[IkeSa] = []
    for raw, offset in packets:
        plain = sas_from_list_sa(raw, offset)
        sas += plain if plain is not None else core.parse_sas(
            [decode_body(raw, offset, True, uri)], on_skip)
    return sas


class MetricsRegistry:
    """swand's own counters. Safe to call from any thread; cheap (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reloads: dict[str, int] = {}
        self._last_reload_success: float | None = None
        self._loaded: dict[str, int] = {}
        self._downs: dict[str, int] = {}
        self._last_downs: dict[str, dict[str, Any]] = {}
        self._firewall: dict[str, int] = {}
        self._drift = 0
        self._firewall_seconds = 0.0
        self._ndp: dict[str, int] = {}
        self._ndp_entries: int | None = None
        self._routes = core.RouteCounters()
        self._gateway = ""
        self._reconnects = 0
        self._restarts = 0
        self._events: dict[str, int] = {}
        self._queue_depth: Callable[[], int] | int = 0
        self.last_scrape_duration = 0.0

    def record_reload(self, result: str, at: float | None = None) -> None:
        """A configuration load into charon: result "success" | "failure" | "partial"."""
        with self._lock:
            self._reloads[result] = self._reloads.get(result, 0) + 1
            if result == "success":
                self._last_reload_success = at if at is not None else time.time()

    def set_loaded_items(self, items: Mapping[str, int]) -> None:
        """Items loaded by the last reload, by kind (conns, secrets, pools, certs...)."""
        with self._lock:
            self._loaded = dict(items)

    def record_down(self, reason: str, connection: str = "", peer: str = "",
                    at: float | None = None) -> None:
        """An SA went down, classified ("dpd", "deleted", "rekeyed", "failed", "unknown").

        With `connection`, the last down per connection is kept for `swand status`
        (`last_downs()`; the poller writes them to its `state_path`)."""
        with self._lock:
            self._downs[reason] = self._downs.get(reason, 0) + 1
            if connection and reason != "rekeyed":
                self._last_downs[connection] = {
                    "reason": reason, "peer": peer, "at": at if at is not None else time.time(),
                }

    def last_downs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._last_downs.items()}

    def record_firewall(self, result: str, drift_repaired: bool = False,
                        seconds: float = 0.0) -> None:
        """A firewall reconcile pass: result "success" | "failure" | "noop", and the
        wall time it took."""
        with self._lock:
            self._firewall[result] = self._firewall.get(result, 0) + 1
            self._firewall_seconds += seconds
            if drift_repaired:
                self._drift += 1

    def record_ndp_proxies(self, result: str, entries: int | None = None) -> None:
        """An NDP proxy pass (routed IPv6): "success" with the entries it keeps, or
        "failure" (the entries of the last good pass stay)."""
        with self._lock:
            self._ndp[result] = self._ndp.get(result, 0) + 1
            if entries is not None:
                self._ndp_entries = entries

    def set_gateway(self, name: str) -> None:
        """This gateway's name in its fleet (`swand_gateway_info{gateway}`)."""
        self._gateway = name

    def record_routes(self, report: Any, drift_repaired: bool = False) -> None:
        """A `[routes]` pass (`swand.runtime.routes.RoutesReport`): its result, the
        routes it added and removed (route churn), how many it keeps."""
        with self._lock:
            r = self._routes
            result = "success" if report.ok else "failure"
            passes = dict(r.passes)
            passes[result] = passes.get(result, 0) + 1
            self._routes = core.RouteCounters(
                passes=tuple(sorted(passes.items())), added=r.added + report.added,
                removed=r.removed + report.removed,
                routes=report.routes if report.ok else r.routes,
                drift_repairs=r.drift_repairs + int(drift_repaired))

    def record_vici_reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1

    def record_charon_restart(self) -> None:
        with self._lock:
            self._restarts += 1

    def record_event(self, name: str) -> None:
        with self._lock:
            self._events[name] = self._events.get(name, 0) + 1

    def set_queue_depth(self, depth: Callable[[], int] | int) -> None:
        """The event queue's depth, or a callable returning it (e.g. `queue.qsize`)."""
        self._queue_depth = depth

    def self_counters(self) -> core.SelfCounters:
        depth_source = self._queue_depth
        try:
            depth = int(depth_source() if callable(depth_source) else depth_source)
        except Exception:  # a provider must never break a scrape
            depth = 0
        with self._lock:
            return core.SelfCounters(
                reloads=tuple(sorted(self._reloads.items())),
                last_reload_success=self._last_reload_success,
                loaded_items=tuple(sorted(self._loaded.items())),
                sa_downs=tuple(sorted(self._downs.items())),
                firewall_reconciles=tuple(sorted(self._firewall.items())),
                firewall_drift_repairs=self._drift,
                firewall_pass_seconds=self._firewall_seconds,
                ndp_proxy_reconciles=tuple(sorted(self._ndp.items())),
                ndp_proxy_entries=self._ndp_entries,
                routes=self._routes,
                gateway=self._gateway,
                vici_reconnects=self._reconnects,
                charon_restarts=self._restarts,
                events=tuple(sorted(self._events.items())),
                unparsable_sas=tuple(sorted(unparsable_counts().items())),
                event_queue_depth=depth,
                last_scrape_duration=self.last_scrape_duration,
            )


class MetricsPoller:
    """Keeps `current` = (MetricsSnapshot, pre-rendered charon families) fresh.

    `current` is replaced as a whole (one reference assignment) so the HTTP thread always
    sees a consistent pair without a lock.
    """

    def __init__(
        self, uri: str, registry: MetricsRegistry, *, interval: float = 10.0,
        per_peer: bool = False, peer_ttl: float = 900.0, own_events: bool = True,
        cert_interval: float = 300.0, timeout: float = 30.0,
        state_path: str | os.PathLike[str] | None = None,
        session: ViciSession | None = None,
        live_sas: Callable[[], Iterable[IkeSa]] | None = None,
        refresh_delay: float = 0.5, clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.uri = uri
        self.registry = registry
        self.interval = interval
        self.per_peer = per_peer
        self.own_events = own_events
        self.cert_interval = cert_interval
        self.timeout = timeout
        self.state_path = Path(state_path) if state_path is not None else None
        self._state_written: dict[str, Any] | None = None
        self.accumulator = core.TrafficAccumulator(peer_ttl=peer_ttl)
        empty = core.MetricsSnapshot(per_peer=per_peer)
        self.current: tuple[core.MetricsSnapshot, list[core.Family]] = (
            empty, core.charon_families(empty))
        #: a command session shared with other readers (swand.runtime.charon.Charon),
        #: or one of the poller's own
        self._session = session if session is not None else ViciSession(uri, 2.0)
        self._owns_session = session is None
        self._generation = 0
        self._info = core.CharonInfo()
        self._counters_supported = True
        self._certs: tuple[core.Certificate, ...] = ()
        self._certs_at = 0.0
        self._wake = asyncio.Event()
        self._events_task: asyncio.Task[None] | None = None
        self._deferred: list[Callable[[], None]] | None = None
        #: the event table's live SAs (daemon); None: SA events force a poll instead
        self.live_sas = live_sas
        self.refresh_delay = refresh_delay
        self.clock = clock
        self._table_changed = asyncio.Event()
        self._table_changes = 0
        #: a poll's accounting and a table refresh never run at once (both read the
        #: accumulator on a thread, both publish)
        self._accounting = asyncio.Lock()
        #: when the up (or rekey) event of an SA arrived (Unix time), by unique id: its
        #: establishment time until a poll sees it
        self._up_at: dict[str, float] = {}
        self._refresh_task: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> core.MetricsSnapshot:
        return self.current[0]

    # -- inputs from elsewhere --

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        """Feed a raw SA event from this poller's own stream (standalone use)."""
        at = time.time()
        self._to_accumulator(
            lambda: self.accumulator.apply_event(name, payload, at, report_unparsable))
        if name in ("child-updown", "ike-updown", "child-rekey"):
            self._wake.set()  # re-poll soon so up/down shows without waiting an interval

    def on_sa_event(self, event: SaEvent) -> None:
        """Feed an SA event the daemon's event watcher decoded (once, for everyone).

        With the event table (`use_live_sas`) the event only updates the traffic
        accumulator (final counters) and the SA's establishment time; the SA set is
        re-read from the table after `sa_set_changed`. Without it, a re-poll follows."""
        at = time.time()
        self._to_accumulator(lambda: self.accumulator.apply_sa_event(event, at))
        if self.live_sas is not None:
            self._note_establishment(event)
        elif isinstance(event, IkeUp | IkeDown | ChildUp | ChildDown | ChildRekey):
            self._wake.set()  # re-poll soon so up/down shows without waiting an interval

    def _note_establishment(self, event: SaEvent) -> None:
        """Remember when an SA came up (its up event: `established` seconds ago), so
        the peer's establishment timestamp does not drift until a poll states it."""
        up_at = self._up_at
        now = self.clock.time()
        if isinstance(event, IkeUp):
            sa = event.sa

            def up() -> None:
                up_at.setdefault(sa.uniqueid, now - (sa.established or 0))

            self._to_accumulator(up)
        elif isinstance(event, IkeRekey):
            old, new = event.old, event.new

            def rekeyed() -> None:  # the new IKE_SA is established now (as charon says)
                up_at.pop(old.uniqueid, None)
                up_at.setdefault(new.uniqueid, now - (new.established or 0))

            self._to_accumulator(rekeyed)
        elif isinstance(event, IkeDown):
            uid = event.sa.uniqueid

            def down() -> None:
                up_at.pop(uid, None)

            self._to_accumulator(down)

    def use_live_sas(self, live_sas: Callable[[], Iterable[IkeSa]]) -> None:
        """Read the SA set between polls from the event watcher's table (`live_sas()`:
        e.g. `table.live.values()`, read on the loop); see `sa_set_changed`."""
        self.live_sas = live_sas

    def sa_set_changed(self) -> None:
        """The table's SA set changed (`SaSetChanged`): re-render the SA-derived
        families from it within `refresh_delay` (coalesced), without polling charon."""
        self._table_changes += 1
        self._table_changed.set()

    def _to_accumulator(self, change: Callable[[], None]) -> None:
        """Apply a change to the traffic accumulator now, or after the poll's accounting
        thread is done with it (it would otherwise race the thread)."""
        if self._deferred is not None:
            self._deferred.append(change)
        else:
            change()

    def charon_lost(self) -> None:
        """charon went away (its socket closed or refuses): publish `up 0` now."""
        self._publish_down()

    def charon_restarted(self) -> None:
        """charon restarted (swand.runtime.charon.Charon noticed): its SAs went without
        events, so the traffic counters retire them at their last seen values."""
        self.registry.record_charon_restart()
        self._to_accumulator(self.accumulator.charon_restarted)
        self._to_accumulator(self._up_at.clear)
        self._wake.set()

    def _publish_down(self) -> None:
        snap = self.current[0]
        if snap.charon_up:
            self._publish(core.MetricsSnapshot(
                charon_up=False, view=None, traffic=snap.traffic, peers=snap.peers,
                per_peer=self.per_peer, poll_duration=snap.poll_duration,
                polled_at=snap.polled_at,
            ))
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    # -- polling --

    async def poll_once(self) -> bool:
        """Read charon once and publish a snapshot; False (and `up 0`) if unreachable."""
        # size unknown before the first poll: pause (one freeze of start-up's long-lived
        # objects costs nothing); later only where the last poll was large
        view = self.current[0].view
        large = view is None or len(view.sas) >= GC_PAUSE_MIN_SAS
        with _collector_paused() if large else contextlib.nullcontext():
            return await self._poll_once()

    async def _poll_once(self) -> bool:
        started = time.monotonic()
        table_changes = self._table_changes
        try:
            view, mark = await self._read_view()
        except (ViciConnectionError, OSError) as exc:
            text = str(exc)
            if self.current[0].charon_up:
                log.warning("charon_poll_failed", vici=self.uri, error=text)
            self._publish_down()
            return False
        # accounting and rendering are pure and ~10 us per SA: on a thread, so a poll of
        # 100,000 SAs never holds the loop; events arriving meanwhile wait in a list
        async with self._accounting:
            self._deferred = []
            try:
                snap, families = await asyncio.to_thread(self._account, view, started, mark)
            finally:
                deferred, self._deferred = self._deferred, None
            for change in deferred:
                change()
            # the previous snapshot (100,000 SAs: ~500,000 objects) is freed on a thread
            # too: its last reference dropped in the loop would deallocate it there
            previous = [self.current]
            self.current = (snap, families)
            self._write_state()
        if self._table_changes != table_changes:
            # the SA set changed while list-sas was read: the table is newer than it
            self._table_changed.set()
        del view, snap, families
        await asyncio.to_thread(_release, previous)
        return True

    async def refresh_from_table(self) -> bool:
        """Re-render the snapshot with the SA set of the event table (`live_sas`): SA
        counts per connection and state, peers (`swand_peer_info` with `per_peer`),
        virtual IPs, connection/child up; the traffic totals as the accumulator has them
        now (polls plus the final counters of down events: the table's SAs carry the
        counters of their up events and are never fed to `accumulator.observe`).
        charon's stats, counters and pool leases wait for the next poll. False (nothing
        published) before the first poll or while charon is down."""
        if self.live_sas is None:
            return False
        async with self._accounting:
            snap = self.current[0]
            if not snap.charon_up or snap.view is None:
                return False
            live = tuple(self.live_sas())  # on the loop: the table changes there
            now = self.clock.time()
            large = len(live) >= REFRESH_THREAD_MIN
            self._deferred = []
            try:
                if large:
                    result = await asyncio.to_thread(self._refreshed, snap, live, now)
                else:
                    result = self._refreshed(snap, live, now)
            finally:
                deferred, self._deferred = self._deferred, None
            for change in deferred:
                change()
            if self.current[0] is not snap:
                return False  # charon went away meanwhile: its `up 0` stays
            previous = [self.current]
            self.current = result
            self._write_state()
        del result, snap, live
        if large:
            await asyncio.to_thread(previous.clear)
        return True

    def _refreshed(self, snap: core.MetricsSnapshot, live: tuple[IkeSa, ...], now: float
                   ) -> tuple[core.MetricsSnapshot, list[core.Family]]:
        """`snap` with the table's SA set and the accumulator's totals (pure; on a
        worker thread when large, while `_deferred` holds the events arriving)."""
        assert snap.view is not None
        if len(self._up_at) > 2 * len(live) + 1024:  # SAs gone without a down event
            ids = {sa.uniqueid for sa in live}
            for uid in [u for u in self._up_at if u not in ids]:
                del self._up_at[uid]
        view = core.view_with_live_sas(snap.view, live, self._up_at, now)
        refreshed = replace(
            snap, view=view, traffic=tuple(sorted(self.accumulator.totals().items())),
            peers=tuple(self.accumulator.peer_totals()) if self.per_peer else ())
        return refreshed, core.charon_families(refreshed)

    async def _refresh_forever(self) -> None:
        """Refresh from the table after each change, at most every `refresh_delay`."""
        while True:
            await self._table_changed.wait()
            await self.clock.sleep(self.refresh_delay)  # let a burst of events settle
            self._table_changed.clear()
            try:
                await self.refresh_from_table()
            except Exception as exc:  # never stop refreshing for one bad render
                log.error("metrics_table_refresh_failed", error=repr(exc))

    def _account(self, view: core.CharonView, started: float, mark: int
                 ) -> tuple[core.MetricsSnapshot, list[core.Family]]:
        """The accumulator brought up to `view`, and the snapshot with its families
        (on a worker thread while `_deferred` holds the events arriving meanwhile)."""
        now = view.taken_at
        self.accumulator.observe(view.sas, now, mark)
        keep = [(c.name, ch) for c in view.conns for ch in c.children]
        self.accumulator.prune(now, keep)
        snap = core.MetricsSnapshot(
            charon_up=True, view=view,
            traffic=tuple(sorted(self.accumulator.totals().items())),
            peers=tuple(self.accumulator.peer_totals()) if self.per_peer else (),
            per_peer=self.per_peer, poll_duration=time.monotonic() - started,
            polled_at=now,
        )
        return snap, core.charon_families(snap)

    async def _read_view(self) -> tuple[core.CharonView, int]:
        """One read of charon, and the accumulator's `poll_mark` when list-sas was
        sent (the deletes it cannot list)."""
        s = self._session
        stats_reply = await s.request("stats", timeout=self.timeout)
        stats = core.parse_stats(stats_reply)
        reconnected = s.generation != self._generation
        if reconnected:
            if self._generation and self.own_events:
                # in the daemon the EventWatcher owns the stream and counts reconnects
                self.registry.record_vici_reconnect()
            self._generation = s.generation
            self._info = core.parse_version(await s.request("version", timeout=self.timeout))
            self._counters_supported = True
            self._certs_at = 0.0
            await self._ensure_events()
        counters: tuple[tuple[str, int], ...] = ()
        if self._counters_supported:
            try:
                counters = core.parse_counters(
                    await s.request("get-counters", timeout=self.timeout))
            except ViciCommandError:
                self._counters_supported = False  # counters plugin not loaded
        conns = tuple(core.parse_conns(
            (await s.streamed("list-conns", "list-conn", timeout=self.timeout))[0],
            report_unparsable))
        now = time.time()
        mark = self.accumulator.poll_mark()
        # each batch of list-sa events is parsed on the decoder thread as it arrives,
        # straight from the bytes
        sas, _ = await s.streamed(
            "list-sas", "list-sa", {"noblock": "yes"}, timeout=self.timeout,
            parse_raw=lambda batch: parse_list_sa_packets(batch, s.uri))
        pools = core.parse_pools(await s.request("get-pools", {"leases": "yes"},
                                                 timeout=self.timeout), report_unparsable)
        if now - self._certs_at >= self.cert_interval:
            cert_events, _ = await s.streamed("list-certs", "list-cert", {"type": "X509"},
                                              timeout=self.timeout, decode=False)
            self._certs = core.parse_certs(cert_events, report_unparsable)
            self._certs_at = now
        return core.CharonView(
            taken_at=now, info=self._info, stats=stats, counters=counters,
            conns=conns, sas=tuple(sas), pools=pools, certs=self._certs,
        ), mark

    def _publish(self, snap: core.MetricsSnapshot) -> None:
        self.current = (snap, core.charon_families(snap))
        self._write_state()

    def _write_state(self) -> None:
        """The last down per connection, for `swand status` (only when changed; a
        failure is logged, never raised). Written like the PKI files: a random temporary
        name, O_EXCL|O_NOFOLLOW, 0600, then rename, so a link planted in the folder
        never makes root write elsewhere."""
        if self.state_path is None:
            return
        downs = self.registry.last_downs()
        if downs == self._state_written:
            return
        try:
            replace_file(self.state_path, json.dumps(downs, sort_keys=True).encode(), 0o600)
            self._state_written = downs
        except OSError as exc:
            log.warning("status_state_write_failed", path=str(self.state_path), error=str(exc))

    async def _ensure_events(self) -> None:
        if not self.own_events:
            return
        if self._events_task is not None and not self._events_task.done():
            return
        self._events_task = asyncio.create_task(self._follow_events(), name="metrics-events")

    async def _follow_events(self) -> None:
        """Follow SA events until charon goes away; then say so at once."""
        try:
            async with await ViciEventStream.connect(self.uri, timeout=2.0) as stream:
                await stream.register(POLLER_EVENTS)
                while True:
                    name, payload = await stream.next_event()
                    self.on_event(name, payload)
        except (ViciError, OSError) as exc:
            log.debug("metrics_event_stream_closed", error=str(exc))
        self.charon_lost()

    async def run(self) -> None:
        """Poll every `interval` seconds (sooner after an SA event), retrying every
        second while charon is unreachable. Runs until cancelled. With the event table
        (`use_live_sas`) the refresher from it runs beside."""
        if self.live_sas is not None and self._refresh_task is None:
            self._refresh_task = asyncio.create_task(self._refresh_forever(),
                                                     name="metrics-table-refresh")
        try:
            await self._poll_forever()
        finally:
            if self._refresh_task is not None:
                self._refresh_task.cancel()

    async def _poll_forever(self) -> None:
        while True:
            ok = await self.poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval if ok else 1.0):
                    await self._wake.wait()
                    await asyncio.sleep(0.2)  # let a burst of events settle

    async def close(self) -> None:
        for task in (self._events_task, self._refresh_task):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._owns_session:
            await self._session.close()


class MetricsCollector:
    """Source of families for the HTTP adapter: the poller's pre-rendered charon
    families plus swand's own counters. Runs on the HTTP thread; reads only."""

    def __init__(self, poller: MetricsPoller, registry: MetricsRegistry) -> None:
        self.poller = poller
        self.registry = registry

    def families(self) -> list[core.Family]:
        _, charon = self.poller.current
        return [*charon, *core.self_families(self.registry.self_counters())]

    def scrape_took(self, seconds: float) -> None:
        self.registry.last_scrape_duration = seconds
