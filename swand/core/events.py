"""SA events from charon's VICI stream: decoding, down classification, peer tracking.

`IkeSa` and `ChildSa` here are swand's one model of charon's SAs: the event watcher, the
metrics (`swand.core.metrics`: a poll's `list-sas`, the traffic accumulator) and
`swand status` read the same objects, decoded by the same `from_vici`.

Pure: no asyncio, no sockets. The runtime (`swand.runtime.events`) feeds decoded VICI
payloads through `parse_event()` into a `PeerTable` and acts on the actions it returns.

What charon 5.9.8 actually sends (payloads recorded in `tests/unit/data/events/`):

- A DPD timeout is `ike-updown` *down* with the IKE SA still ``ESTABLISHED`` and
  ``IKE_DPD`` in ``tasks-active``; the `log` stream said "giving up after N retransmits"
  for the same ``ikesa-uniqueid`` just before (6.0.3+ also raises `alert`
  ``retransmit-send-timeout``).
- A delete by either peer is a down in state ``DELETING`` (``IKE_DELETE`` in
  ``tasks-active`` on the side that deleted, ``tasks-passive`` on the other).
- A failed attempt (wrong credentials, no proposal) is a down in ``CONNECTING``.
- An IKE rekey is one `ike-rekey` event with ``old``/``new``: the new SA has a new unique
  id, and the old one never gets a down event.
- Make-before-break reauthentication: the new SA's *up* arrives before the old SA's
  *down* (``DELETING``); both carry the same virtual IP for a moment.
- `ike-updown` down precedes the `child-updown` downs of its CHILD SAs, which carry the
  final byte and packet counters.
- Unique ids restart at 1 when charon restarts.
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any

from swand.core.untrusted import SkipFn, ignore_skip, unparsable, valid_text


class DownReason(StrEnum):
    DPD = "dpd"  # charon gave up on the peer (retransmits exhausted)
    DELETED = "deleted"  # a delete by either peer
    REKEYED = "rekeyed"  # replaced: IKE rekey, reauthentication, INITIAL_CONTACT
    FAILED = "failed"  # never established
    UNKNOWN = "unknown"  # anything else, e.g. gone while swand was not listening


# --- decoded SAs ----------------------------------------------------------------------


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _count(value: Any) -> int | None:
    """A counter or age of an SA: a non-negative whole number, else None (a client's
    malformed value must never subtract from the totals of the others)."""
    text = vici_text(value) if isinstance(value, str | bytes) else None
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def vici_text(value: Any, default: str = "") -> str:
    """A VICI scalar as text (a session may hand out str or bytes)."""
    if value is None:
        return default
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return ",".join(vici_text(v) for v in value)
    return str(value)


def owned_text(value: Any) -> str:
    """A fresh copy of a text value that outlives the decoded VICI message: keeping a
    reference into the message would pin the allocator arenas of the whole (possibly
    100k-SA) payload, and resident memory would stay at the poll's peak."""
    text = vici_text(value)
    # surrogatepass: any lone surrogate survives the copy (surrogateescape only those
    # of undecodable bytes, and raises on the others)
    return text.encode("utf-8", errors="surrogatepass").decode(
        "utf-8", errors="surrogatepass") if text else ""


def _name(value: Any, default: str = "") -> str:
    """A name shared by many SAs (connection, child, state): one interned copy."""
    return sys.intern(vici_text(value) or default)


def _names(value: Any) -> tuple[str, ...]:
    """Values many SAs share (tasks, a gateway's local selectors): one tuple for all."""
    if value is None:
        return ()
    return _shared(tuple(vici_text(v) for v in (value if isinstance(value, list | tuple)
                                                 else (value,))))


@lru_cache(maxsize=1024)
def _shared(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sys.intern(n) for n in names)


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return tuple(owned_text(v) for v in value)
    return (owned_text(value),)


@dataclass(frozen=True, slots=True)
class ChildSa:
    """One CHILD SA as VICI describes it (only what swand logs, counts or acts on: the
    fields nothing reads are left out, this model is held for every SA a poll lists)."""

    name: str
    uniqueid: str
    state: str = ""
    reqid: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()
    #: "ESP" or "AH" ("" when charon did not say)
    protocol: str = ""

    @classmethod
    def from_vici(cls, key: str, body: Mapping[str, Any]) -> ChildSa:
        return cls(
            name=_name(body.get("name"), key),
            uniqueid=owned_text(body.get("uniqueid")),
            state=_name(body.get("state")),
            reqid=owned_text(body.get("reqid")),
            bytes_in=_count(body.get("bytes-in")) or 0,
            bytes_out=_count(body.get("bytes-out")) or 0,
            packets_in=_count(body.get("packets-in")) or 0,
            packets_out=_count(body.get("packets-out")) or 0,
            local_ts=_names(body.get("local-ts")),
            remote_ts=_strs(body.get("remote-ts")),
            protocol=_name(body.get("protocol")),
        )


@dataclass(frozen=True, slots=True)
class IkeSa:
    """One IKE SA as VICI describes it; `conn` is the connection (config) name."""

    conn: str
    uniqueid: str
    state: str = ""
    local_host: str = ""
    remote_host: str = ""
    local_id: str = ""
    remote_id: str = ""
    remote_eap_id: str = ""
    remote_xauth_id: str = ""
    established: int | None = None
    local_vips: tuple[str, ...] = ()
    remote_vips: tuple[str, ...] = ()
    tasks_active: tuple[str, ...] = ()
    tasks_passive: tuple[str, ...] = ()
    children: tuple[ChildSa, ...] = ()

    @classmethod
    def from_vici(cls, conn: str, body: Mapping[str, Any]) -> IkeSa:
        children = body.get("child-sas")
        return cls(
            conn=_name(conn),
            uniqueid=owned_text(body.get("uniqueid")),
            state=_name(body.get("state")),
            local_host=_name(body.get("local-host")),
            remote_host=owned_text(body.get("remote-host")),
            local_id=_name(body.get("local-id")),
            remote_id=owned_text(body.get("remote-id")),
            remote_eap_id=owned_text(body.get("remote-eap-id")),
            remote_xauth_id=owned_text(body.get("remote-xauth-id")),
            established=_count(body.get("established")),
            local_vips=_strs(body.get("local-vips")),
            remote_vips=_strs(body.get("remote-vips")),
            tasks_active=_names(body.get("tasks-active")),
            tasks_passive=_names(body.get("tasks-passive")),
            children=tuple(
                ChildSa.from_vici(k, v) for k, v in children.items() if isinstance(v, Mapping)
            ) if isinstance(children, Mapping) else (),
        )

    @property
    def identity(self) -> str:
        """Who the peer is: the EAP/XAuth identity when there is one, else its IKE id."""
        return self.remote_eap_id or self.remote_xauth_id or self.remote_id

    @property
    def peer(self) -> tuple[str, str]:
        return (self.conn, self.identity)

    @property
    def vips(self) -> tuple[str, ...]:
        """Virtual IPs: those assigned to the peer (gateway), else ours (client)."""
        return self.remote_vips or self.local_vips

    def totals(self) -> dict[str, int]:
        return {
            "bytes_in": sum(c.bytes_in for c in self.children),
            "bytes_out": sum(c.bytes_out for c in self.children),
            "packets_in": sum(c.packets_in for c in self.children),
            "packets_out": sum(c.packets_out for c in self.children),
        }

    def log_fields(self) -> dict[str, Any]:
        """What one log line says about this SA: never a key, never a secret, and only
        valid text (a client's identity may hold bytes that are not UTF-8)."""
        return {
            "conn": valid_text(self.conn),
            "ike_id": valid_text(self.uniqueid),
            "remote_id": valid_text(self.identity),
            "remote_addr": valid_text(self.remote_host),
            "vips": [valid_text(v) for v in self.vips],
            "lifetime_s": self.established,
            **self.totals(),
        }


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IkeUp:
    sa: IkeSa


@dataclass(frozen=True, slots=True)
class IkeDown:
    sa: IkeSa


@dataclass(frozen=True, slots=True)
class ChildUp:
    sa: IkeSa
    child: ChildSa


@dataclass(frozen=True, slots=True)
class ChildDown:
    sa: IkeSa
    child: ChildSa


@dataclass(frozen=True, slots=True)
class IkeRekey:
    old: IkeSa
    new: IkeSa


@dataclass(frozen=True, slots=True)
class ChildRekey:
    sa: IkeSa
    old: ChildSa
    new: ChildSa


@dataclass(frozen=True, slots=True)
class IkeUpdate:
    """MOBIKE / NAT-T moved an SA: the new endpoints, and the SA as it was."""

    sa: IkeSa
    local_host: str
    remote_host: str


@dataclass(frozen=True, slots=True)
class Alert:
    alert: str
    sa: IkeSa | None


@dataclass(frozen=True, slots=True)
class LogLine:
    group: str
    level: int
    ike_name: str
    ike_uniqueid: str
    msg: str


@dataclass(frozen=True, slots=True)
class Resync:
    """Synthetic: the complete SA list (`list-sas`) after (re)connecting.

    `instance` identifies the charon process (its start time from `stats`): when it
    differs from the previous one, charon restarted and every SA known before is gone.
    """

    sas: tuple[IkeSa, ...]
    instance: str = ""
    #: SAs whose own down event is already queued behind the snapshot: missing from
    #: it, but left to that event (it classifies them better than "unknown")
    pending: frozenset[str] = frozenset()


SaEvent = IkeUp | IkeDown | ChildUp | ChildDown | IkeRekey | ChildRekey | IkeUpdate | Alert \
    | LogLine | Resync


def _sections(payload: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(k, v) for k, v in payload.items() if isinstance(v, Mapping)]


def parse_event(
    name: str, payload: Mapping[str, Any], on_skip: SkipFn = ignore_skip,
) -> list[SaEvent]:
    """Decode one VICI event (values already str) into zero or more SA events.

    Unnamed SAs (``(unnamed)``: still in IKE_SA_INIT, no config yet) are skipped. An SA
    whose section cannot be decoded is left out and passed to `on_skip`; the event's
    other SAs are still decoded.
    """
    out: list[SaEvent] = []
    if name == "log":
        return [LogLine(
            group=str(payload.get("group", "")), level=_int(payload.get("level")) or 0,
            ike_name=str(payload.get("ikesa-name", "")),
            ike_uniqueid=str(payload.get("ikesa-uniqueid", "")),
            msg=str(payload.get("msg", "")),
        )]
    if name == "alert":
        sas = [IkeSa.from_vici(k, v) for k, v in _sections(payload) if k != "(unnamed)"]
        # 6.0.3+; not available to record here (5.9.8): read the alert's name tolerantly
        kind = payload.get("type") or payload.get("alert") or payload.get("name") or ""
        return [Alert(alert=str(kind), sa=sas[0] if sas else None)]
    for conn, body in _sections(payload):
        if conn == "(unnamed)":
            continue
        try:
            out += _section_events(name, payload, conn, body)
        except Exception as exc:  # client-controlled values: never fail the others
            on_skip(unparsable("events", conn, body, name, exc))
    return out


def _section_events(
    name: str, payload: Mapping[str, Any], conn: str, body: Mapping[str, Any],
) -> list[SaEvent]:
    """The SA events of one IKE_SA's section of event `name`."""
    out: list[SaEvent] = []
    if name == "ike-updown":
        sa = IkeSa.from_vici(conn, body)
        out.append(IkeUp(sa) if payload.get("up") == "yes" else IkeDown(sa))
    elif name == "child-updown":
        sa = IkeSa.from_vici(conn, body)
        for child in sa.children:
            out.append(ChildUp(sa, child) if payload.get("up") == "yes"
                       else ChildDown(sa, child))
    elif name == "ike-rekey":
        old, new = body.get("old"), body.get("new")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out.append(IkeRekey(IkeSa.from_vici(conn, old), IkeSa.from_vici(conn, new)))
    elif name == "child-rekey":
        sa = IkeSa.from_vici(conn, {k: v for k, v in body.items() if k != "child-sas"})
        children = body.get("child-sas")
        for key, pair in (children.items() if isinstance(children, Mapping) else ()):
            old, new = pair.get("old"), pair.get("new")
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                out.append(ChildRekey(sa, ChildSa.from_vici(key, old),
                                      ChildSa.from_vici(key, new)))
    elif name == "ike-update":
        out.append(IkeUpdate(IkeSa.from_vici(conn, body),
                             local_host=str(payload.get("local-host", "")),
                             remote_host=str(payload.get("remote-host", ""))))
    return out


def parse_list_sas(
    events: Iterable[Mapping[str, Any]], instance: str = "", on_skip: SkipFn = ignore_skip,
    component: str = "events",
) -> Resync:
    """The `list-sa` events of one `list-sas` call as a Resync (an SA that cannot be
    decoded is passed to `on_skip`, as met by `component`, and left out)."""
    sas: list[IkeSa] = []
    for payload in events:
        for conn, body in _sections(payload):
            try:
                sas.append(IkeSa.from_vici(conn, body))
            except Exception as exc:  # client-controlled values: never fail the others
                on_skip(unparsable(component, conn, body, "list-sa", exc))
    return Resync(sas=tuple(sas), instance=instance)


# --- classification -------------------------------------------------------------------

#: charon's line when it gives up on a peer (task_manager_v2: "giving up after %d
#: retransmits"), matched whole: a peer can put any text into *other* log lines (its
#: IDi appears in "looking for peer configs matching ...[ID]")
GIVING_UP = re.compile(r"giving up after \d+ retransmits\Z")
DPD_ALERTS = frozenset({"retransmit-send-timeout", "peer-init-unreachable"})
#: charon's lines when a new SA replaces an old one of the same peer: INITIAL_CONTACT
#: (the old SA goes down while ESTABLISHED, before the new one's up) or `unique =
#: replace`, as (start, end) around the peer's ID. ike_sa_manager's check_uniqueness
#: logs them with the *old* SA checked out, so the log event's ``ikesa-uniqueid`` names
#: the SA being replaced: that, never the ID text, is what swand acts on.
REPLACED_SHAPES = (
    ("destroying duplicate IKE_SA for peer '", "', received INITIAL_CONTACT"),
    ("deleting duplicate IKE_SA for peer '", "' due to uniqueness policy"),
)


def dpd_evidence(event: SaEvent) -> str | None:
    """The IKE unique id a log line or alert proves charon gave up on, else None."""
    if isinstance(event, LogLine) and event.ike_uniqueid and GIVING_UP.match(event.msg):
        return event.ike_uniqueid
    if isinstance(event, Alert) and event.alert in DPD_ALERTS and event.sa is not None:
        return event.sa.uniqueid
    return None


def replaced_sa(event: SaEvent) -> str | None:
    """The unique id of the IKE_SA a log line says charon replaced by a newer SA of the
    same peer, else None.

    Only a line that *is* one of charon's `REPLACED_SHAPES` from start to end counts, and
    it is attributed to the IKE_SA the log event names, never to the ID inside it: an
    unauthenticated peer can make charon log any ID text inside other lines."""
    if not isinstance(event, LogLine) or not event.ike_uniqueid:
        return None
    msg = event.msg
    for start, end in REPLACED_SHAPES:
        if msg.startswith(start) and msg.endswith(end) and len(msg) >= len(start) + len(end):
            return event.ike_uniqueid
    return None


@dataclass(frozen=True, slots=True)
class DownClassification:
    reason: DownReason
    #: for dpd: True when a log line, an alert or the active IKE_DPD task confirms it
    confirmed: bool
    detail: str


def classify_down(
    sa: IkeSa, *, gave_up: bool = False, replaced: bool = False
) -> DownClassification:
    """Why an IKE SA went down.

    `gave_up`: the log/alert stream said charon gave up retransmitting to this SA.
    `replaced`: another live SA of the same peer holds its virtual IPs (reauthentication,
    INITIAL_CONTACT), so the peer did not go anywhere.
    """
    state = sa.state.upper()
    if state in ("CONNECTING", "CREATED"):
        return DownClassification(DownReason.FAILED, True, f"never established ({state})")
    if replaced:
        return DownClassification(DownReason.REKEYED, True, "replaced by a newer SA of the peer")
    if state in ("REKEYING", "REKEYED"):
        return DownClassification(DownReason.REKEYED, True, f"state {state}")
    if state == "ESTABLISHED":
        dpd_task = "IKE_DPD" in sa.tasks_active
        if gave_up or dpd_task:
            why = "gave up after retransmits" if gave_up else "IKE_DPD task active"
            return DownClassification(DownReason.DPD, True, why)
        return DownClassification(DownReason.DPD, False,
                                  "down while ESTABLISHED, not confirmed by log or task")
    if state == "DELETING":
        side = "local" if "IKE_DELETE" in sa.tasks_active else "remote"
        return DownClassification(DownReason.DELETED, True, f"deleted by the {side} side")
    return DownClassification(DownReason.UNKNOWN, False, f"state {state or '?'}")


def locally_deleted(sa: IkeSa) -> bool:
    """This charon sent the delete (an operator's terminate, or charon's own decision)."""
    return sa.state.upper() == "DELETING" and "IKE_DELETE" in sa.tasks_active


#: states in which a listed SA that swand did not know yet counts as up
ALIVE_STATES = frozenset({"ESTABLISHED", "REKEYING"})


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaUp:
    sa: IkeSa
    #: the peer had no live SA before this one
    peer_new: bool
    #: synthetic: found by a resync, not seen as an event
    resync: bool = False


@dataclass(frozen=True, slots=True)
class SaDown:
    sa: IkeSa
    reason: DownReason
    confirmed: bool
    detail: str
    #: the peer has no live SA left (its forward rules go)
    peer_gone: bool
    resync: bool = False


@dataclass(frozen=True, slots=True)
class SaRekeyed:
    old: IkeSa
    new: IkeSa


@dataclass(frozen=True, slots=True)
class SaMoved:
    """MOBIKE moved the SA (either end's address changed); `sa` has the new ones."""

    sa: IkeSa
    old_local: str
    old_remote: str


@dataclass(frozen=True, slots=True)
class SaSetChanged:
    """The set of live IKE SAs changed: firewall per-SA rules must be reconciled.

    It carries nothing: the reconcilers read the table itself (`PeerTable.live`) when
    their pass runs. A copy of the set per event would cost O(n log n) at every event of
    a 10,000-SA gateway, for a pass that runs at most every `min_interval`."""


#: the one `SaSetChanged` (it has no fields: every change is the same news)
SA_SET_CHANGED = SaSetChanged()


Action = SaUp | SaDown | SaRekeyed | SaMoved | SaSetChanged


# --- peer table -----------------------------------------------------------------------


@dataclass
class PeerTable:
    """Live IKE SAs and the peers they belong to, driven by events; pure.

    Guarantees, whatever charon's quirks or duplicate deliveries: an SA is live at most
    once, a peer is counted once however many SAs it has, a down for an SA that is not
    live changes nothing (duplicates after a reconnect, late events), and an SA that went
    down is never resurrected by a stale resync. Memory is bounded (`remember`).
    """

    remember: int = 4096
    evidence_ttl: float = 120.0
    live: dict[str, IkeSa] = field(default_factory=dict)
    instance: str = ""
    _gone: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _gave_up: OrderedDict[str, float] = field(default_factory=OrderedDict)
    #: when each live SA was established (in `now` units), for its lifetime at down
    _since: dict[str, float] = field(default_factory=dict)
    #: unique ids of SAs charon just said it replaced (INITIAL_CONTACT, unique = replace)
    _replaced_ids: OrderedDict[str, float] = field(default_factory=OrderedDict)
    replaced_ttl: float = 10.0
    #: the unique ids of each peer's live SAs: whether a peer is new or gone, and which
    #: SA replaced which, without a scan of every live SA per event (10,000 SAs: ~1 ms)
    _by_peer: dict[tuple[str, str], dict[str, None]] = field(default_factory=dict)
    #: live SAs whose down has been read but waits (the watcher's `log_wait`) for
    #: charon's reason: gone for the firewall, NDP and routes already (`current`), still
    #: here for the classification and the peer's bookkeeping
    leaving: set[str] = field(default_factory=set)

    # -- queries --

    def current(self) -> Mapping[str, IkeSa]:
        """The live SAs less those `leaving`: what the per-SA reconcilers act on."""
        if not self.leaving:
            return self.live
        return {uid: sa for uid, sa in self.live.items() if uid not in self.leaving}

    def peers(self) -> dict[tuple[str, str], list[IkeSa]]:
        out: dict[tuple[str, str], list[IkeSa]] = {}
        for sa in self.live.values():
            out.setdefault(sa.peer, []).append(sa)
        return out

    def peer_count(self) -> int:
        return len(self._by_peer)

    def live_for_conn(self, conn: str) -> list[IkeSa]:
        return [sa for sa in self.live.values() if sa.conn == conn]

    def snapshot(self) -> tuple[IkeSa, ...]:
        return tuple(self.live[k] for k in sorted(self.live, key=_uid_key))

    # -- bookkeeping --

    def _put(self, sa: IkeSa) -> None:
        """Make `sa` live (or its new version): every write of `live` goes here or
        through `_pop`, so the peer index stays true."""
        old = self.live.get(sa.uniqueid)
        if old is not None and old.peer != sa.peer:
            self._unindex(old)
        self.live[sa.uniqueid] = sa
        self._by_peer.setdefault(sa.peer, {})[sa.uniqueid] = None

    def _pop(self, uid: str) -> IkeSa | None:
        self.leaving.discard(uid)
        sa = self.live.pop(uid, None)
        if sa is not None:
            self._unindex(sa)
        return sa

    def _unindex(self, sa: IkeSa) -> None:
        uids = self._by_peer.get(sa.peer)
        if uids is not None:
            uids.pop(sa.uniqueid, None)
            if not uids:
                del self._by_peer[sa.peer]

    def _forget(self, uid: str) -> None:
        self._gone[uid] = None
        self._gone.move_to_end(uid)
        while len(self._gone) > self.remember:
            self._gone.popitem(last=False)

    def _note_gave_up(self, uid: str, now: float) -> None:
        self._gave_up[uid] = now
        self._gave_up.move_to_end(uid)
        while len(self._gave_up) > self.remember:
            self._gave_up.popitem(last=False)

    def _take_gave_up(self, uid: str, now: float) -> bool:
        at = self._gave_up.pop(uid, None)
        return at is not None and now - at <= self.evidence_ttl

    def _replaced(self, sa: IkeSa) -> bool:
        """Another live SA of the same peer covers this one's virtual IPs (or neither
        has any): the peer is still there."""
        for uid in self._by_peer.get(sa.peer, ()):
            other = self.live[uid]
            if other.uniqueid == sa.uniqueid:
                continue
            if not sa.vips and not other.vips:
                return True
            if set(sa.vips) & set(other.vips):
                return True
        return False

    def _changed(self) -> SaSetChanged:
        return SA_SET_CHANGED

    # -- the state machine --

    def apply(self, event: SaEvent, now: float = 0.0) -> list[Action]:
        """Apply one event; return what happened (empty when nothing did)."""
        uid = dpd_evidence(event)
        if uid is not None:
            self._note_gave_up(uid, now)
            return []
        replaced = replaced_sa(event)
        if replaced is not None:
            self._replaced_ids[replaced] = now
            self._replaced_ids.move_to_end(replaced)
            while len(self._replaced_ids) > self.remember:
                self._replaced_ids.popitem(last=False)
            return []
        if isinstance(event, IkeUp):
            return self._up(event.sa, now)
        if isinstance(event, IkeDown):
            return self._down(event.sa, now)
        if isinstance(event, ChildUp | ChildDown):
            return self._child(event)
        if isinstance(event, IkeRekey):
            return self._rekey(event, now)
        if isinstance(event, ChildRekey):
            return self._child_rekey(event)
        if isinstance(event, IkeUpdate):
            return self._update(event)
        if isinstance(event, Resync):
            return self._resync(event, now)
        return []

    def _up(self, sa: IkeSa, now: float, resync: bool = False) -> list[Action]:
        uid = sa.uniqueid
        if uid in self._gone:
            return []  # a late duplicate of an SA already down
        known = self.live.get(uid)
        if known is not None:
            # duplicate: refresh what we know, keep the children we tracked
            self._put(replace(sa, children=sa.children or known.children))
            return []
        peer_new = sa.peer not in self._by_peer
        self._put(sa)
        self._since[uid] = now - (sa.established or 0)
        return [SaUp(sa, peer_new=peer_new, resync=resync), self._changed()]

    def _down(self, sa: IkeSa, now: float, resync: bool = False) -> list[Action]:
        uid = sa.uniqueid
        gave_up = self._take_gave_up(uid, now)
        known = self._pop(uid)
        if known is None:
            if uid in self._gone:
                return []  # duplicate
            self._forget(uid)
            # never seen up: a failed attempt (or one that was up before swand started
            # and missed by every resync): report it, nothing to clean up
            cls = classify_down(sa, gave_up=gave_up)
            return [SaDown(sa, cls.reason, cls.confirmed, cls.detail, peer_gone=False,
                           resync=resync)]
        self._forget(uid)
        merged = _merge(known, sa)
        since = self._since.pop(uid, None)
        if sa.established is None and since is not None:
            merged = replace(merged, established=max(0, round(now - since)))
        at = self._replaced_ids.pop(uid, None)
        said_replaced = at is not None and now - at <= self.replaced_ttl and not gave_up
        cls = classify_down(merged, gave_up=gave_up,
                            replaced=said_replaced or self._replaced(merged))
        if resync:
            cls = DownClassification(DownReason.UNKNOWN, False,
                                     "gone while swand was not listening")
        peer_gone = merged.peer not in self._by_peer
        return [SaDown(merged, cls.reason, cls.confirmed, cls.detail, peer_gone=peer_gone,
                       resync=resync), self._changed()]

    def _child(self, event: ChildUp | ChildDown) -> list[Action]:
        """A CHILD_SA came or went while its IKE_SA stays: the set of live SAs changed
        (a second CHILD_SA's forward rules must not wait for the periodic pass)."""
        known = self.live.get(event.sa.uniqueid)
        if known is None:
            return []
        others = tuple(c for c in known.children if c.uniqueid != event.child.uniqueid)
        children = others if isinstance(event, ChildDown) else (*others, event.child)
        if isinstance(event, ChildDown) and len(others) == len(known.children):
            return []  # a duplicate down, or the last child's down after its IKE_SA's
        if isinstance(event, ChildUp) and event.child in known.children:
            return []  # a duplicate up
        self._put(replace(known, children=children))
        return [self._changed()]

    def _rekey(self, event: IkeRekey, now: float) -> list[Action]:
        old_uid, new_uid = event.old.uniqueid, event.new.uniqueid
        known = self._pop(old_uid)
        since = self._since.pop(old_uid, now)
        self._forget(old_uid)
        if new_uid in self._gone:
            return [self._changed()] if known else []
        if new_uid in self.live:
            return [self._changed()] if known else []
        new = replace(event.new, children=event.new.children or
                      (known.children if known else ()))
        peer_new = new.peer not in self._by_peer
        self._put(new)
        self._since[new_uid] = since  # a rekey does not restart the peer's session
        if known is None:
            # rekey of an SA we never saw up: treat the new one as an up
            return [SaUp(new, peer_new=peer_new), self._changed()]
        return [SaRekeyed(known, new), self._changed()]

    def _child_rekey(self, event: ChildRekey) -> list[Action]:
        known = self.live.get(event.sa.uniqueid)
        if known is None:
            return []
        others = tuple(c for c in known.children if c.uniqueid != event.old.uniqueid)
        self._put(replace(known, children=(*others, event.new)))
        # the new CHILD_SA carries the old one's reqid and selectors: the firewall's
        # input changes only when they differ
        same = (event.old.reqid, event.old.local_ts, event.old.remote_ts) == \
            (event.new.reqid, event.new.local_ts, event.new.remote_ts)
        return [] if same else [self._changed()]

    def _update(self, event: IkeUpdate) -> list[Action]:
        known = self.live.get(event.sa.uniqueid)
        if known is None or not event.remote_host:
            return []
        if known.remote_host == event.remote_host and known.local_host == event.local_host:
            return []
        moved = replace(known, remote_host=event.remote_host, local_host=event.local_host)
        self._put(moved)
        return [SaMoved(moved, known.local_host, known.remote_host), self._changed()]

    def _resync(self, event: Resync, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.instance and event.instance and event.instance != self.instance:
            # charon restarted: every SA we knew is gone, and unique ids start over
            for uid in list(self.live):
                sa = self._pop(uid)
                assert sa is not None
                self._since.pop(uid, None)
                actions.append(SaDown(sa, DownReason.UNKNOWN, False, "charon restarted",
                                      peer_gone=sa.peer not in self._by_peer,
                                      resync=True))
            self._gone.clear()
            self._gave_up.clear()
            self._replaced_ids.clear()
        if event.instance:
            self.instance = event.instance
        listed = {sa.uniqueid for sa in event.sas}
        # known SAs charon no longer lists went down unseen (those still listed while
        # REKEYED or DELETING are left to their own down event, which says why)
        for uid in [u for u in self.live if u not in listed and u not in event.pending]:
            actions += [a for a in self._down(self.live[uid], now, resync=True)
                        if not isinstance(a, SaSetChanged)]
        alive = {sa.uniqueid: sa for sa in event.sas if sa.state.upper() in ALIVE_STATES}
        for uid in sorted(alive, key=_uid_key):
            actions += [a for a in self._up(alive[uid], now, resync=True)
                        if not isinstance(a, SaSetChanged)]
        if actions:
            actions.append(self._changed())
        return actions


def attach_children(sa: IkeSa, children: Iterable[ChildSa]) -> IkeSa:
    """An IKE SA with the CHILD SAs (final counters) its child-updown downs carried."""
    extra = tuple(children)
    return replace(sa, children=sa.children + extra) if extra else sa


def _merge(known: IkeSa, down: IkeSa) -> IkeSa:
    """The down event's view, with what only the tracked SA knew (children, lifetime)."""
    return replace(
        down,
        children=down.children or known.children,
        established=down.established if down.established is not None else known.established,
        remote_vips=down.remote_vips or known.remote_vips,
        local_vips=down.local_vips or known.local_vips,
    )


def _uid_key(uid: str) -> str:
    """Numeric order for charon's decimal unique ids (no tuples: cheap in a flood)."""
    return uid.rjust(20, "0")
