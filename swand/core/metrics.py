"""What swand knows about charon, as immutable data, and how it becomes metric families.

Pure: no sockets, no asyncio, no prometheus_client. The runtime poller turns VICI replies
into a `CharonView` with the `parse_*` functions, folds SA counters into a
`TrafficAccumulator`, and swaps a new `MetricsSnapshot` in; the HTTP thread renders the
snapshot with `charon_families()` / `self_families()` and never talks to charon.

Label policy: connection and child names (stable) by default; never unique ids or SPIs
(they change on every rekey and explode series). Per-peer series (remote id, virtual IP)
only when asked for, and pruned once the peer has been gone for `peer_ttl` seconds.

Traffic counters (`TrafficAccumulator`): charon's per-CHILD_SA counters restart at zero on
every rekey and vanish with the SA. swand keeps, per (connection, child):

    total = closed + sum(latest values of the CHILD_SAs alive now)

- An SA seen alive (list-sas poll, or an up/rekey event) updates its latest values; a
  value never goes down (max per field), so a poll answered before a later event cannot
  lower anything.
- An SA going down (child-updown down; its payload carries the final counters) and an SA
  missing from a later poll are *retired*: their latest values move into `closed` and the
  unique id is remembered. If a retired id shows up again (a poll that raced with the down
  event, a duplicate event after a reconnect), it is *revived*: its retired values leave
  `closed` and it is alive again with the larger of both. So the same SA is never counted
  twice, and no total ever decreases. How long an id is remembered depends on who said
  it left: one a poll did not list may only have been skipped (`noblock` skips an SA in an
  exchange, DPD retransmits can take minutes), so it is kept among the last
  `retired_memory` (65,536); one charon's down event deleted can only come back in a poll
  already in flight, i.e. one sent before the event arrived. A poll notes `poll_mark()`
  when it sends `list-sas` and passes it to `observe`: ids deleted before that mark can
  never be listed again and are forgotten once it is observed; the rest wait for the next
  poll (no clock: a poll may take minutes; at most `retired_memory` of them if polls
  stop). A churning gateway's memory then follows its deletes per poll, not its history
  (10,000 SAs with 100 deletes a second, polled every 10 s: ~1,000 ids, not 65,536 at
  ~0.5 KB each), and is full within one poll of start-up.
- A CHILD_SA rekey: the old SA's final values (carried by child-rekey) update it, the new
  SA starts from its own (near-zero) values; the old one is retired when it leaves the
  list (charon deletes it a few seconds later) — bytes it carries after the rekey event
  still count.
- SAs that vanish without an event (charon crashed or restarted: unique ids start again
  at 1): `charon_restarted()` retires everything alive at its last seen values and forgets
  the retired ids. The bytes an SA moved between the last poll and the crash are lost:
  an undercount bounded by one poll interval, never an overcount, never a decrease.
"""

from __future__ import annotations

import calendar
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from swand.core.charon import parse_charon_time
from swand.core.events import (
    ALIVE_STATES,
    ChildDown,
    ChildRekey,
    ChildSa,
    ChildUp,
    IkeSa,
    SaEvent,
    owned_text,
    parse_event,
    parse_list_sas,
    vici_text,
)
from swand.core.untrusted import SkipFn, ignore_skip, shown, unparsable, valid_text

PRIORITIES = ("critical", "high", "medium", "low")


_s = vici_text
_own = owned_text


def _i(value: Any, default: int = 0) -> int:
    try:
        return int(_s(value) or default)
    except (TypeError, ValueError):
        return default


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(_own(v) for v in value)
    return (_own(value),)


# --- model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Traffic:
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.bytes_in + other.bytes_in, self.bytes_out + other.bytes_out,
            self.packets_in + other.packets_in, self.packets_out + other.packets_out,
        )

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.bytes_in - other.bytes_in, self.bytes_out - other.bytes_out,
            self.packets_in - other.packets_in, self.packets_out - other.packets_out,
        )

    def max(self, other: Traffic) -> Traffic:
        return Traffic(
            max(self.bytes_in, other.bytes_in), max(self.bytes_out, other.bytes_out),
            max(self.packets_in, other.packets_in), max(self.packets_out, other.packets_out),
        )


ZERO = Traffic()


def child_traffic(child: ChildSa) -> Traffic:
    """A CHILD_SA's counters (the SA model's `swand.core.events.ChildSa`)."""
    return Traffic(child.bytes_in, child.bytes_out, child.packets_in, child.packets_out)


@dataclass(frozen=True)
class CharonInfo:
    daemon: str = ""
    version: str = ""
    sysname: str = ""
    release: str = ""
    machine: str = ""


@dataclass(frozen=True)
class CharonStats:
    start_time: float | None = None
    workers_total: int = 0
    workers_idle: int = 0
    workers_active: tuple[tuple[str, int], ...] = ()
    queues: tuple[tuple[str, int], ...] = ()
    scheduled: int = 0
    ike_sas_total: int = 0
    ike_sas_half_open: int = 0


@dataclass(frozen=True)
class ConfiguredConn:
    name: str
    children: tuple[str, ...] = ()
    remote_addrs: tuple[str, ...] = ()
    remote_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lease:
    address: str
    identity: str
    online: bool


@dataclass(frozen=True)
class PoolUsage:
    """A pool as charon reports it (list-pools): its use and leases right now, not its
    configuration (checks.ConfiguredPool) nor its networks (firewall.Pool)."""

    name: str
    base: str = ""
    size: int = 0
    online: int = 0
    offline: int = 0
    leases: tuple[Lease, ...] = ()


@dataclass(frozen=True, slots=True)
class Certificate:
    subject: str
    issuer: str = ""
    serial: str = ""
    flag: str = ""
    not_before: float = 0.0
    not_after: float = 0.0


@dataclass(frozen=True)
class CharonView:
    """One consistent read of charon (poll)."""

    taken_at: float
    info: CharonInfo = field(default_factory=CharonInfo)
    stats: CharonStats = field(default_factory=CharonStats)
    #: get-counters (counters plugin), empty when the plugin is not loaded
    counters: tuple[tuple[str, int], ...] = ()
    conns: tuple[ConfiguredConn, ...] = ()
    sas: tuple[IkeSa, ...] = ()
    pools: tuple[PoolUsage, ...] = ()
    certs: tuple[Certificate, ...] = ()
    #: when each SA in `sas` was established (Unix time), by unique id; None for a
    #: poll's view, whose `established` fields are relative to `taken_at`
    established_at: Mapping[str, float] | None = None


def established_times(view: CharonView) -> Mapping[str, float]:
    """When each SA of `view` was established (Unix time), by unique id."""
    if view.established_at is not None:
        return view.established_at
    return {sa.uniqueid: view.taken_at - sa.established
            for sa in view.sas if sa.established is not None}


def view_with_live_sas(view: CharonView, live: Iterable[IkeSa],
                       up_at: Mapping[str, float], now: float) -> CharonView:
    """`view` (the last poll, or the last such refresh of it) with its SA set taken
    from the event table's live SAs (`swand.core.events.PeerTable.live`): what SA
    counts, peers and virtual IPs follow between polls without re-reading `list-sas`.

    The table holds established (or rekeying) IKE_SAs only; the SAs in other states
    (connecting, half-open, deleting) stay as the last poll saw them, unless the table
    now has them. Everything else in `view` (stats, counters, connections, pools with
    their leases, certificates) is the last poll's. Establishment times: the poll's
    where it saw the SA, else `up_at` (when its up event arrived), else `now` minus the
    SA's own `established` (what its event said)."""
    sas = tuple(live)
    live_ids = {sa.uniqueid for sa in sas}
    others = tuple(sa for sa in view.sas if sa.uniqueid not in live_ids
                   and sa.state.upper() not in ALIVE_STATES)
    known = established_times(view)
    established: dict[str, float] = {}
    for sa in sas:
        at = known.get(sa.uniqueid)
        if at is None:
            at = up_at.get(sa.uniqueid)
        if at is None:
            at = now - (sa.established or 0)
        established[sa.uniqueid] = at
    for sa in others:
        at = known.get(sa.uniqueid)
        if at is not None:
            established[sa.uniqueid] = at
    return replace(view, sas=sas + others, established_at=established)


@dataclass(frozen=True, slots=True)
class PeerTotals:
    connection: str
    peer: str
    traffic: Traffic
    up: bool


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the HTTP thread renders; swapped in whole by the loop."""

    charon_up: bool = False
    view: CharonView | None = None
    traffic: tuple[tuple[tuple[str, str], Traffic], ...] = ()
    peers: tuple[PeerTotals, ...] = ()
    per_peer: bool = False
    poll_duration: float = 0.0
    polled_at: float = 0.0


# --- parsing VICI replies ---------------------------------------------------------------


def parse_version(reply: Mapping[str, Any]) -> CharonInfo:
    return CharonInfo(
        daemon=_s(reply.get("daemon")), version=_s(reply.get("version")),
        sysname=_s(reply.get("sysname")), release=_s(reply.get("release")),
        machine=_s(reply.get("machine")),
    )


def parse_stats(reply: Mapping[str, Any]) -> CharonStats:
    uptime = reply.get("uptime") or {}
    workers = reply.get("workers") or {}
    active = workers.get("active") or {}
    queues = reply.get("queues") or {}
    ikesas = reply.get("ikesas") or {}
    return CharonStats(
        start_time=parse_charon_time(_s(uptime.get("since"))),
        workers_total=_i(workers.get("total")),
        workers_idle=_i(workers.get("idle")),
        workers_active=tuple((p, _i(active.get(p))) for p in PRIORITIES),
        queues=tuple((p, _i(queues.get(p))) for p in PRIORITIES),
        scheduled=_i(reply.get("scheduled")),
        ike_sas_total=_i(ikesas.get("total")),
        ike_sas_half_open=_i(ikesas.get("half-open")),
    )


def parse_counters(reply: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """get-counters (global) -> sorted pairs. charon 5.9 nests the global set in a
    section with an empty name: {counters: {"": {name: n}}}; a flat set is taken too."""
    counters = reply.get("counters") or {}
    if not isinstance(counters, Mapping):
        return ()
    if isinstance(counters.get(""), Mapping):
        counters = counters[""]
    return tuple(sorted((str(k), _i(v)) for k, v in counters.items()
                        if not isinstance(v, Mapping)))


def parse_conns(
    events: Iterable[Mapping[str, Any]], on_skip: SkipFn = ignore_skip,
) -> tuple[ConfiguredConn, ...]:
    """list-conns' list-conn events -> configured connections (no secrets are read)."""
    conns = []
    for event in events:
        for name, body in event.items():
            if not isinstance(body, Mapping):
                continue
            try:
                conns.append(_conn(name, body))
            except Exception as exc:  # never fail the poll for one connection
                on_skip(unparsable("metrics", f"conn {shown(name)}", {}, "list-conn", exc))
    return tuple(sorted(conns, key=lambda c: c.name))


def _conn(name: str, body: Mapping[str, Any]) -> ConfiguredConn:
    remote_ids = tuple(
        _s(section.get("id"))
        for key, section in body.items()
        if key.startswith("remote") and isinstance(section, Mapping)
        and section.get("id") is not None
    )
    children = body.get("children") or {}
    return ConfiguredConn(
        name=name, children=tuple(children) if isinstance(children, Mapping) else (),
        remote_addrs=_strs(body.get("remote_addrs")), remote_ids=remote_ids,
    )


def established_at(sa: IkeSa, taken_at: float) -> float | None:
    """When `sa` was established (Unix time), from a list-sas read at `taken_at`."""
    return taken_at - sa.established if sa.established is not None else None


def parse_sas(
    events: Iterable[Mapping[str, Any]], on_skip: SkipFn = ignore_skip,
    component: str = "metrics",
) -> tuple[IkeSa, ...]:
    """list-sas' list-sa events (one IKE_SA each) -> the SA model (`IkeSa`); an IKE_SA
    that cannot be read goes to `on_skip` (as `component`), the others are returned."""
    return parse_list_sas(events, on_skip=on_skip, component=component).sas


def parse_pools(reply: Mapping[str, Any], on_skip: SkipFn = ignore_skip) -> tuple[PoolUsage, ...]:
    """get-pools (with leases = yes); a pool that cannot be read goes to `on_skip`."""
    pools = []
    for name, body in reply.items():
        if not isinstance(body, Mapping):
            continue
        try:
            pools.append(_pool(name, body))
        except Exception as exc:  # lease identities are the clients': never fail the poll
            on_skip(unparsable("metrics", f"pool {shown(name)}", {}, "get-pools", exc))
    return tuple(sorted(pools, key=lambda p: p.name))


def _pool(name: str, body: Mapping[str, Any]) -> PoolUsage:
    leases_section = body.get("leases") or {}
    leases = tuple(
        Lease(_s(lease.get("address")), _s(lease.get("identity")),
              _s(lease.get("status")) == "online")
        for lease in leases_section.values() if isinstance(lease, Mapping)
    ) if isinstance(leases_section, Mapping) else ()
    return PoolUsage(
        name=name, base=_s(body.get("base")), size=_i(body.get("size")),
        online=_i(body.get("online")), offline=_i(body.get("offline")), leases=leases,
    )


def parse_cert(event: Mapping[str, Any]) -> Certificate | None:
    """A list-cert event (X509 only) -> Certificate, from the DER blob; None otherwise.

    The blob must be bytes (the session's decode=False); unparsable blobs are skipped
    rather than failing the whole poll.
    """
    if _s(event.get("type")).upper() != "X509":
        return None
    data = event.get("data")
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    if not isinstance(data, bytes | bytearray):
        return None

    try:
        cert = x509.load_der_x509_certificate(bytes(data))
    except ValueError:
        try:
            cert = x509.load_pem_x509_certificate(bytes(data))
        except ValueError:
            return None
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        flag=_s(event.get("flag")) or "NONE",
        not_before=float(calendar.timegm(cert.not_valid_before_utc.utctimetuple())),
        not_after=float(calendar.timegm(cert.not_valid_after_utc.utctimetuple())),
    )


def parse_certs(
    events: Iterable[Mapping[str, Any]], on_skip: SkipFn = ignore_skip,
) -> tuple[Certificate, ...]:
    certs: set[Certificate] = set()
    for event in events:
        try:
            cert = parse_cert(event)
        except Exception as exc:  # a certificate a peer sent may be cached: never fail
            on_skip(unparsable("metrics", "certificate", {}, "list-cert", exc))
            continue
        if cert is not None:
            certs.add(cert)
    return tuple(sorted(certs, key=lambda c: (c.subject, c.serial)))


# --- traffic accumulator ----------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    connection: str
    child: str
    peer: str
    traffic: Traffic


class TrafficAccumulator:
    """Bytes/packets per (connection, child), and per (connection, peer), that never
    decrease across rekeys, deletes and charon restarts. See the module docstring.

    Mutable but pure: callers pass `now`; no I/O.
    """

    def __init__(self, *, retired_memory: int = 65536, peer_ttl: float = 900.0) -> None:
        self._live: dict[str, _Entry] = {}
        self._retired: OrderedDict[str, _Entry] = OrderedDict()
        #: ids a down event retired, with their place in `_deletes` (oldest first; see
        #: the module docstring)
        self._deleted: OrderedDict[str, tuple[_Entry, int]] = OrderedDict()
        #: down-event deletes so far: a poll's mark, see `poll_mark`
        self._deletes = 0
        #: the newest mark observed: an older poll arriving after it is stale
        self._observed_mark = 0
        self._closed: dict[tuple[str, str], Traffic] = {}
        self._closed_peer: dict[tuple[str, str], Traffic] = {}
        self._peer_seen: dict[tuple[str, str], float] = {}
        self._key_seen: dict[tuple[str, str], float] = {}
        self.retired_memory = retired_memory
        self.peer_ttl = peer_ttl

    # -- the three inputs --

    def poll_mark(self) -> int:
        """Taken when a poll sends `list-sas`, handed back to `observe`: the deletes
        applied before it are ones that poll cannot list."""
        return self._deletes

    def observe(self, sas: Iterable[IkeSa], now: float, mark: int | None = None) -> None:
        """A complete list-sas: every CHILD_SA in it is alive, every other one retired.

        With `mark` (`poll_mark()` when it was sent), an SA deleted after the mark is
        one the listing raced: its down event's final counters stand and it stays
        deleted. The ids deleted before the mark are forgotten afterwards. A poll sent
        before one already observed is stale and changes nothing (it could list SAs
        forgotten since)."""
        if mark is not None:
            if mark < self._observed_mark:
                return
            self._observed_mark = mark
        seen: set[str] = set()
        live, peer_seen, key_seen = self._live, self._peer_seen, self._key_seen
        deleted = self._deleted
        for ike in sas:
            for child in ike.children:
                uid = child.uniqueid
                if not uid:
                    continue
                seen.add(uid)
                entry = live.get(uid)
                if entry is None:
                    if mark is not None and uid in deleted and deleted[uid][1] >= mark:
                        continue  # raced its down event, which has the final counters
                    self._alive(uid, ike.conn, child.name, ike.identity,
                                child_traffic(child), now)
                    continue
                # as _alive for a live entry, inline (100,000 SAs a poll): counters
                # that did not grow keep the entry's Traffic instead of a new one
                peer_seen[(ike.conn, ike.identity)] = now
                key_seen[(ike.conn, child.name)] = now
                old = entry.traffic
                if (child.bytes_in > old.bytes_in or child.bytes_out > old.bytes_out
                        or child.packets_in > old.packets_in
                        or child.packets_out > old.packets_out):
                    entry.traffic = old.max(child_traffic(child))
        for uid in [u for u in live if u not in seen]:
            self._retire(uid)
        if mark is not None:
            while deleted and next(iter(deleted.values()))[1] < mark:
                deleted.popitem(last=False)

    def apply_event(self, name: str, payload: Mapping[str, Any], now: float,
                    on_skip: SkipFn = ignore_skip) -> None:
        """child-updown / child-rekey payloads (others are ignored), decoded by the one
        SA-event decoder, `swand.core.events.parse_event`."""
        if name not in ("child-updown", "child-rekey"):
            return
        for event in parse_event(name, payload, on_skip):
            self.apply_sa_event(event, now)

    def apply_sa_event(self, event: SaEvent, now: float) -> None:
        """One decoded SA event (the daemon's event watcher decodes each once and hands
        it here); only CHILD_SA ups, downs and rekeys carry counters."""
        if isinstance(event, ChildUp | ChildDown):
            uid = self._child_alive(event.sa, event.child, now)
            if uid and isinstance(event, ChildDown):
                self._retire(uid, deleted=True)
        elif isinstance(event, ChildRekey):
            self._child_alive(event.sa, event.old, now)
            self._child_alive(event.sa, event.new, now)

    def _child_alive(self, sa: IkeSa, child: ChildSa, now: float) -> str:
        """An event's CHILD_SA is (or was, up to now) alive with these counters; its
        unique id ("" when it has none: ignored)."""
        if not child.uniqueid:
            return ""
        # the model's strings are own copies already (IkeSa.from_vici)
        uid = child.uniqueid
        self._alive(uid, sa.conn, child.name, sa.identity, child_traffic(child), now)
        return uid

    def charon_restarted(self) -> None:
        """charon lost its SAs without events: retire all at their last seen values; its
        unique ids start again, so forget the retired ones."""
        for uid in list(self._live):
            self._retire(uid)
        self._retired.clear()
        self._deleted.clear()

    # -- reading --

    def totals(self) -> dict[tuple[str, str], Traffic]:
        # summed as plain ints first: one Traffic per (connection, child), not per SA
        sums: dict[tuple[str, str], list[int]] = {}
        for entry in self._live.values():
            key = (entry.connection, entry.child)
            t = entry.traffic
            acc = sums.get(key)
            if acc is None:
                sums[key] = [t.bytes_in, t.bytes_out, t.packets_in, t.packets_out]
            else:
                acc[0] += t.bytes_in
                acc[1] += t.bytes_out
                acc[2] += t.packets_in
                acc[3] += t.packets_out
        out = dict(self._closed)
        for key, acc in sums.items():
            out[key] = out.get(key, ZERO) + Traffic(*acc)
        return out

    def peer_totals(self) -> list[PeerTotals]:
        out = dict(self._closed_peer)
        up: set[tuple[str, str]] = set()
        for entry in self._live.values():
            key = (entry.connection, entry.peer)
            up.add(key)
            out[key] = out.get(key, ZERO) + entry.traffic
        return [PeerTotals(c, p, t, (c, p) in up) for (c, p), t in sorted(out.items())]

    def prune(self, now: float, keep: Iterable[tuple[str, str]] = ()) -> None:
        """Forget peers gone for `peer_ttl` seconds, and (connection, child) totals that
        are neither configured (`keep`) nor seen for as long."""
        live_peers = {(e.connection, e.peer) for e in self._live.values()}
        for key in [k for k, t in self._peer_seen.items()
                    if k not in live_peers and now - t > self.peer_ttl]:
            self._peer_seen.pop(key, None)
            self._closed_peer.pop(key, None)
        keep_set = set(keep) | {(e.connection, e.child) for e in self._live.values()}
        for key in [k for k, t in self._key_seen.items()
                    if k not in keep_set and now - t > self.peer_ttl]:
            self._key_seen.pop(key, None)
            self._closed.pop(key, None)

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- internals --

    def _alive(self, uid: str, conn: str, child: str, peer: str, traffic: Traffic,
               now: float) -> None:
        self._peer_seen[(conn, peer)] = now
        self._key_seen[(conn, child)] = now
        entry = self._live.get(uid)
        if entry is not None:
            entry.traffic = entry.traffic.max(traffic)
            return
        retired = self._retired.pop(uid, None)
        if retired is None:
            deleted = self._deleted.pop(uid, None)
            retired = deleted[0] if deleted is not None else None
        if retired is not None:  # revive: take its retired values back out of `closed`
            self._add_closed(retired, ZERO - retired.traffic)
            traffic = traffic.max(retired.traffic)
            conn, child, peer = retired.connection, retired.child, retired.peer
        self._live[uid] = _Entry(conn, child, peer, traffic)

    def _retire(self, uid: str, deleted: bool = False) -> None:
        """Move a live SA's values into `closed` and remember its id: among the last
        `retired_memory`, or (a down event's, `deleted`) until a later poll is read."""
        entry = self._live.pop(uid, None)
        if entry is None:
            return
        self._add_closed(entry, entry.traffic)
        if not deleted:
            self._retired[uid] = entry
            while len(self._retired) > self.retired_memory:
                self._retired.popitem(last=False)
            return
        self._deleted[uid] = (entry, self._deletes)
        self._deletes += 1
        while len(self._deleted) > self.retired_memory:
            self._deleted.popitem(last=False)

    def _add_closed(self, entry: _Entry, delta: Traffic) -> None:
        key = (entry.connection, entry.child)
        self._closed[key] = self._closed.get(key, ZERO) + delta
        pkey = (entry.connection, entry.peer)
        self._closed_peer[pkey] = self._closed_peer.get(pkey, ZERO) + delta


# --- metric families --------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One metric family, independent of any client library. `name` is the full sample
    name (counters end in `_total`)."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()


Samples = Iterable[tuple[tuple[str, ...], float]]


def _gauge(name: str, help_: str, labels: tuple[str, ...] = (),
           samples: Samples = ()) -> Family:
    return Family(name, "gauge", help_, labels, valid_samples(samples, max))


def _counter(name: str, help_: str, labels: tuple[str, ...] = (),
             samples: Samples = ()) -> Family:
    return Family(name, "counter", help_, labels, valid_samples(samples, _add))


def _add(a: float, b: float) -> float:
    return a + b


def valid_samples(
    samples: Samples, merge: Callable[[float, float], float],
) -> tuple[tuple[tuple[str, ...], float], ...]:
    """`samples` with every label value valid text (`valid_text`): connection names,
    remote ids and lease identities come from charon, possibly with bytes that are not
    UTF-8, and one such value would make the whole exposition unencodable. Two series
    that become equal are merged (`merge`: summed for counters, the larger for gauges) so
    the exposition never holds a duplicate series."""
    out = tuple(samples)
    if all(_plain_labels(labels) for labels, _ in out):
        return out  # the usual case: ASCII labels, nothing to copy
    merged: dict[tuple[str, ...], float] = {}
    for labels, value in out:
        if not _plain_labels(labels):
            labels = tuple(valid_text(v if isinstance(v, str) else str(v)) for v in labels)
        merged[labels] = merge(merged[labels], value) if labels in merged else value
    return tuple(merged.items())


def _plain_labels(labels: tuple[str, ...]) -> bool:
    return all(isinstance(v, str) and v.isascii() for v in labels)


IKE_STATES = ("CREATED", "CONNECTING", "ESTABLISHED", "PASSIVE", "REKEYING", "REKEYED",
              "DELETING", "DESTROYING")


def charon_families(snap: MetricsSnapshot) -> list[Family]:
    """Everything that comes from charon (plus swand's traffic totals)."""
    fams: list[Family] = [
        _gauge("swand_charon_up", "1 if charon answered the last poll over VICI, else 0",
               samples=[((), 1.0 if snap.charon_up else 0.0)]),
    ]
    if snap.polled_at:
        fams += [
            _gauge("swand_charon_poll_duration_seconds",
                   "time the last successful poll of charon over VICI took",
                   samples=[((), snap.poll_duration)]),
            _gauge("swand_charon_last_poll_timestamp_seconds",
                   "when charon was last polled successfully, Unix time",
                   samples=[((), snap.polled_at)]),
        ]
    traffic = _traffic_families(snap)
    view = snap.view
    if not snap.charon_up or view is None:
        return fams + traffic
    info, stats = view.info, view.stats
    fams.append(_gauge(
        "swand_charon_info", "charon's daemon name and version (value 1)",
        ("daemon", "version", "sysname", "release", "machine"),
        [((info.daemon, info.version, info.sysname, info.release, info.machine), 1.0)],
    ))
    if stats.start_time is not None:
        fams.append(_gauge("swand_charon_start_time_seconds",
                           "when charon started, Unix time", samples=[((), stats.start_time)]))
    fams += [
        _gauge("swand_charon_worker_threads", "charon's worker thread pool size",
               samples=[((), stats.workers_total)]),
        _gauge("swand_charon_worker_threads_idle", "charon's idle worker threads",
               samples=[((), stats.workers_idle)]),
        _gauge("swand_charon_worker_threads_active", "busy worker threads by job priority",
               ("priority",), [((p,), n) for p, n in stats.workers_active]),
        _gauge("swand_charon_queued_jobs", "jobs waiting for a worker, by priority",
               ("priority",), [((p,), n) for p, n in stats.queues]),
        _gauge("swand_charon_scheduled_jobs", "jobs scheduled for later",
               samples=[((), stats.scheduled)]),
        _gauge("swand_charon_ike_sas", "IKE_SAs charon holds (stats)",
               samples=[((), stats.ike_sas_total)]),
        _gauge("swand_charon_ike_sas_half_open", "half-open IKE_SAs (stats)",
               samples=[((), stats.ike_sas_half_open)]),
    ]
    if view.counters:
        fams.append(_counter(
            "swand_charon_ike_events_total",
            "charon's IKE counters (counters plugin), by counter name",
            ("counter",), [((k,), v) for k, v in view.counters],
        ))

    configured = {c.name: c for c in view.conns}
    ike_states: dict[tuple[str, str], int] = {}
    child_states: dict[tuple[str, str, str], int] = {}
    conn_up: dict[str, int] = dict.fromkeys(configured, 0)
    child_up: dict[tuple[str, str], int] = {
        (c.name, ch): 0 for c in view.conns for ch in c.children
    }
    vips: dict[tuple[str, str], int] = {}
    for ike in view.sas:
        ike_states[(ike.conn, ike.state)] = ike_states.get((ike.conn, ike.state), 0) + 1
        for vip in ike.remote_vips:
            fam = (ike.conn, "ipv6" if ":" in vip else "ipv4")
            vips[fam] = vips.get(fam, 0) + 1
        established = ike.state == "ESTABLISHED"
        if established or ike.conn not in conn_up:
            conn_up[ike.conn] = max(conn_up.get(ike.conn, 0), int(established))
        for ch in ike.children:
            key3 = (ike.conn, ch.name, ch.state)
            child_states[key3] = child_states.get(key3, 0) + 1
            installed = int(ch.state == "INSTALLED")
            k2 = (ike.conn, ch.name)
            child_up[k2] = max(child_up.get(k2, 0), installed)
    fams += [
        _gauge("swand_connection_configured",
               "1 for each connection loaded in charon", ("connection",),
               [((n,), 1) for n in sorted(configured)]),
        _gauge("swand_connection_up",
               "1 if the connection has an ESTABLISHED IKE_SA, 0 if configured (or seen) "
               "but not established", ("connection",),
               [((n,), v) for n, v in sorted(conn_up.items())]),
        _gauge("swand_child_configured", "1 for each child loaded in charon",
               ("connection", "child"),
               [((c.name, ch), 1) for c in view.conns for ch in sorted(c.children)]),
        _gauge("swand_child_up",
               "1 if the child has an INSTALLED CHILD_SA, 0 if configured but none",
               ("connection", "child"), [(k, v) for k, v in sorted(child_up.items())]),
        _gauge("swand_ike_sas", "IKE_SAs by connection and state", ("connection", "state"),
               [(k, v) for k, v in sorted(ike_states.items())]),
        _gauge("swand_child_sas", "CHILD_SAs by connection, child and state",
               ("connection", "child", "state"),
               [(k, v) for k, v in sorted(child_states.items())]),
        _gauge("swand_pool_size", "addresses in the virtual IP pool", ("pool",),
               [((p.name,), p.size) for p in view.pools]),
        _gauge("swand_pool_leases", "leases of the virtual IP pool by state",
               ("pool", "state"),
               [s for p in view.pools
                for s in (((p.name, "online"), p.online), ((p.name, "offline"), p.offline))]),
        _gauge("swand_virtual_ips",
               "virtual IPs leased to the peers of IKE_SAs, by connection and address "
               "family (a dual-stack client holds one of each)", ("connection", "family"),
               [(k, v) for k, v in sorted(vips.items())]),
        _gauge("swand_certificate_not_after_timestamp_seconds",
               "expiry (notAfter) of each X.509 certificate loaded in charon, Unix time",
               ("subject", "issuer", "serial", "flag"),
               [((c.subject, c.issuer, c.serial, c.flag), c.not_after) for c in view.certs]),
    ]
    if snap.per_peer:
        fams.append(_gauge(
            "swand_peer_info",
            "one series per road-warrior IKE_SA (per_peer = true): remote id, address, "
            "virtual IP", ("connection", "remote_id", "remote_host", "virtual_ip", "state"),
            sorted({((ike.conn, ike.identity, ike.remote_host,
                      ",".join(ike.remote_vips), ike.state), 1.0) for ike in view.sas}),
        ))
        established_at = established_times(view)
        fams.append(_gauge(
            "swand_peer_established_timestamp_seconds",
            "when the peer's current IKE_SA was established, Unix time",
            ("connection", "remote_id"),
            sorted({(ike.conn, ike.identity): established_at[ike.uniqueid]
                    for ike in view.sas if ike.uniqueid in established_at}.items()),
        ))
    return fams + traffic


def _traffic_families(snap: MetricsSnapshot) -> list[Family]:
    fams = []
    for attr, unit, direction in (
        ("bytes_in", "bytes", "in"), ("bytes_out", "bytes", "out"),
        ("packets_in", "packets", "in"), ("packets_out", "packets", "out"),
    ):
        fams.append(_counter(
            f"swand_child_{unit}_{direction}_total",
            f"{unit} {direction} per (connection, child), monotonic across rekeys and "
            "SA deletes", ("connection", "child"),
            [(key, getattr(t, attr)) for key, t in snap.traffic],
        ))
    if snap.per_peer:
        fams.append(_gauge("swand_peer_up",
                           "1 while the peer has an SA, 0 until it is pruned",
                           ("connection", "remote_id"),
                           [((p.connection, p.peer), int(p.up)) for p in snap.peers]))
        for attr, unit, direction in (("bytes_in", "bytes", "in"),
                                      ("bytes_out", "bytes", "out")):
            fams.append(_counter(
                f"swand_peer_{unit}_{direction}_total",
                f"{unit} {direction} per peer (per_peer = true)", ("connection", "remote_id"),
                [((p.connection, p.peer), getattr(p.traffic, attr)) for p in snap.peers],
            ))
    return fams


@dataclass(frozen=True)
class RouteCounters:
    """``[routes]``: passes by result, route churn, routes kept now (None: not enabled)."""

    passes: tuple[tuple[str, int], ...] = ()
    added: int = 0
    removed: int = 0
    routes: int = 0
    drift_repairs: int = 0


@dataclass(frozen=True)
class SelfCounters:
    """swand's own metrics at one instant (copied out of the runtime registry)."""

    reloads: tuple[tuple[str, int], ...] = ()
    last_reload_success: float | None = None
    loaded_items: tuple[tuple[str, int], ...] = ()
    sa_downs: tuple[tuple[str, int], ...] = ()
    firewall_reconciles: tuple[tuple[str, int], ...] = ()
    firewall_drift_repairs: int = 0
    #: wall time spent in firewall passes
    firewall_pass_seconds: float = 0.0
    #: routed IPv6 only (None/empty otherwise: no series)
    ndp_proxy_reconciles: tuple[tuple[str, int], ...] = ()
    ndp_proxy_entries: int | None = None
    routes: RouteCounters = RouteCounters()
    #: this gateway's name in a fleet (`[fleet] gateway`), "" = not exported
    gateway: str = ""
    vici_reconnects: int = 0
    charon_restarts: int = 0
    events: tuple[tuple[str, int], ...] = ()
    #: SAs skipped because charon's view of them could not be read, by component
    unparsable_sas: tuple[tuple[str, int], ...] = ()
    event_queue_depth: int = 0
    last_scrape_duration: float = 0.0


def self_families(c: SelfCounters) -> list[Family]:
    fams = [
        _counter("swand_reloads_total", "configuration loads into charon by result",
                 ("result",), [((k,), v) for k, v in c.reloads]),
        _gauge("swand_loaded_items", "items swand keeps loaded in charon, by kind",
               ("kind",), [((k,), v) for k, v in c.loaded_items]),
        _counter("swand_sa_downs_total", "SAs that went down, by classified reason",
                 ("reason",), [((k,), v) for k, v in c.sa_downs]),
        _counter("swand_firewall_reconciles_total", "firewall reconcile passes by result",
                 ("result",), [((k,), v) for k, v in c.firewall_reconciles]),
        _counter("swand_firewall_drift_repairs_total",
                 "firewall passes that had to repair drift",
                 samples=[((), c.firewall_drift_repairs)]),
        _counter("swand_firewall_pass_seconds_total",
                 "wall time spent in firewall passes (reading SAs, computing and "
                 "committing rules)", samples=[((), c.firewall_pass_seconds)]),
        _counter("swand_vici_reconnects_total", "VICI connections re-established",
                 samples=[((), c.vici_reconnects)]),
        _counter("swand_charon_restarts_total", "charon restarts swand noticed",
                 samples=[((), c.charon_restarts)]),
        _counter("swand_vici_events_total", "VICI events received, by event name",
                 ("event",), [((k,), v) for k, v in c.events]),
        _counter("swand_unparsable_sas_total",
                 "SAs swand could not read from charon's replies and events and skipped "
                 "(each logged once), by the component that met them",
                 ("component",), [((k,), v) for k, v in c.unparsable_sas]),
        _gauge("swand_event_queue_depth", "events waiting to be handled",
               samples=[((), c.event_queue_depth)]),
        _gauge("swand_scrape_duration_seconds", "time the previous /metrics scrape took",
               samples=[((), c.last_scrape_duration)]),
    ]
    if c.ndp_proxy_reconciles:
        fams.append(_counter("swand_ndp_proxy_reconciles_total",
                             "NDP proxy passes (routed IPv6) by result", ("result",),
                             [((k,), v) for k, v in c.ndp_proxy_reconciles]))
    if c.ndp_proxy_entries is not None:
        fams.append(_gauge("swand_ndp_proxy_entries",
                           "NDP proxy entries swand keeps on the IPv6 egress, one per "
                           "leased IPv6 address", samples=[((), c.ndp_proxy_entries)]))
    if c.routes.passes:
        r = c.routes
        fams += [
            _counter("swand_route_reconciles_total", "[routes] passes by result", ("result",),
                     [((k,), v) for k, v in r.passes]),
            _counter("swand_route_changes_total",
                     "kernel routes added and removed for leased virtual IPs (route churn)",
                     ("op",), [(("add",), r.added), (("remove",), r.removed)]),
            _gauge("swand_routes", "kernel routes kept for leased virtual IPs",
                   samples=[((), r.routes)]),
            _counter("swand_route_drift_repairs_total",
                     "[routes] passes that had to repair drift",
                     samples=[((), r.drift_repairs)]),
        ]
    if c.gateway:
        fams.append(_gauge("swand_gateway_info", "this gateway's name in its fleet",
                           ("gateway",), [((c.gateway,), 1)]))
    if c.last_reload_success is not None:
        fams.append(_gauge("swand_last_reload_success_timestamp_seconds",
                           "when the configuration was last loaded successfully, Unix time",
                           samples=[((), c.last_reload_success)]))
    return fams
