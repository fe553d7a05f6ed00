"""SA event decoding, down classification and peer tracking, table-driven from payloads
recorded from charon 5.9.8 in the lab (tests/unit/data/events/*.json; re-record with
SWAND_RECORD_EVENTS=DIR pytest tests/integration/test_events_lab.py -k record)."""

from __future__ import annotations

import dataclasses
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from swand.core.events import (
    ChildDown,
    ChildRekey,
    ChildSa,
    ChildUp,
    DownReason,
    IkeDown,
    IkeRekey,
    IkeSa,
    IkeUp,
    IkeUpdate,
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
    classify_down,
    locally_deleted,
    parse_event,
    parse_list_sas,
)

DATA = Path(__file__).parent / "data" / "events"


def load(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(n, p) for n, p in json.loads((DATA / f"{name}.json").read_text())["events"]]


def decoded(name: str) -> list[SaEvent]:
    return [e for n, p in load(name) for e in parse_event(n, p)]


def seeded(events: list[SaEvent]) -> PeerTable:
    """A table that already knows, as ESTABLISHED, every SA the events act on without
    having brought it up first (the recordings start mid-life)."""
    table = PeerTable()
    seen_up: set[str] = set()
    for e in events:
        if isinstance(e, IkeUp):
            seen_up.add(e.sa.uniqueid)
            continue
        sa = getattr(e, "sa", None) or getattr(e, "old", None)
        if isinstance(sa, IkeSa) and sa.uniqueid not in seen_up and sa.state != "CONNECTING":
            seen_up.add(sa.uniqueid)
            table.apply(IkeUp(dataclasses.replace(sa, state="ESTABLISHED", children=())))
    return table


def run(name: str) -> tuple[PeerTable, list[Any]]:
    events = decoded(name)
    table = seeded(events)
    actions = []
    for i, e in enumerate(events):
        actions += table.apply(e, now=float(i))
    return table, actions


def summary(actions: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for a in actions:
        if isinstance(a, SaUp):
            out.append(("up", a.sa.uniqueid, a.peer_new))
        elif isinstance(a, SaDown):
            out.append(("down", a.sa.uniqueid, a.reason.value, a.confirmed, a.peer_gone))
        elif isinstance(a, SaRekeyed):
            out.append(("rekeyed", a.old.uniqueid, a.new.uniqueid))
        elif isinstance(a, SaMoved):
            out.append(("moved", f"{a.old_local}>{a.sa.local_host}",
                        f"{a.old_remote}>{a.sa.remote_host}"))
    return out


# scenario -> (expected actions, live unique ids afterwards, peers afterwards)
CASES: dict[str, tuple[list[tuple[Any, ...]], list[str], int]] = {
    "up-gateway": ([("up", "1", True)], ["1"], 1),
    "up-client": ([("up", "1", True)], ["1"], 1),
    # the old SA never gets a down: the rekey moves the peer to the new unique id
    "ike-rekey-gateway": ([("rekeyed", "1", "2")], ["2"], 1),
    "child-rekey-gateway": ([], ["2"], 1),
    "delete-by-client-gateway": ([("down", "2", "deleted", True, True)], [], 0),
    "delete-by-client-client": ([("down", "2", "deleted", True, True)], [], 0),
    "delete-by-gateway-gateway": ([("down", "3", "deleted", True, True)], [], 0),
    "delete-by-gateway-client": ([("down", "3", "deleted", True, True)], [], 0),
    "mobike-update-gateway": (
        [("moved", "198.51.100.1>198.51.100.1", "198.51.100.10>198.51.100.20")], ["4"], 1),
    "mobike-update-client": (  # our own address moved
        [("moved", "198.51.100.10>198.51.100.20", "198.51.100.1>198.51.100.1")], ["4"], 1),
    # make-before-break: new up before old down; the old one is replaced, peer stays
    "reauth-mbb-gateway": (
        [("up", "6", False), ("down", "5", "rekeyed", True, False)], ["6"], 1),
    # failed attempts were never live: reported, nothing to clean up
    "auth-failed-gateway": ([("down", "7", "failed", True, False)], [], 0),
    "auth-failed-client": ([("down", "3", "failed", True, False)], [], 0),
    # the log's "giving up" arrives *after* the down (vici's logger is asynchronous):
    # the active IKE_DPD task in the payload is what confirms it
    "dpd-gateway": ([("down", "4", "dpd", True, True)], [], 0),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
def test_recorded_scenarios(scenario: str) -> None:
    expected, live, peers = CASES[scenario]
    table, actions = run(scenario)
    assert summary(actions) == expected
    assert sorted(table.live) == live
    assert table.peer_count() == peers


def test_every_recording_has_a_case() -> None:
    assert {p.stem for p in DATA.glob("*.json")} == set(CASES)


def test_recordings_hold_no_secrets() -> None:
    for path in DATA.glob("*.json"):
        text = path.read_text()
        assert "lab-psk" not in text and "PRIVATE KEY" not in text, path


@pytest.mark.parametrize(
    ("scenario", "state", "reason"),
    [
        ("dpd-gateway", "ESTABLISHED", DownReason.DPD),
        ("delete-by-client-gateway", "DELETING", DownReason.DELETED),
        ("auth-failed-gateway", "CONNECTING", DownReason.FAILED),
    ],
)
def test_classify_down_by_state(scenario: str, state: str, reason: DownReason) -> None:
    down = next(e for e in decoded(scenario) if isinstance(e, IkeDown))
    assert down.sa.state == state
    assert classify_down(down.sa).reason is reason


def test_classification_edge_cases() -> None:
    down = next(e for e in decoded("dpd-gateway") if isinstance(e, IkeDown)).sa
    no_task = dataclasses.replace(down, tasks_active=())
    unconfirmed = classify_down(no_task)
    assert (unconfirmed.reason, unconfirmed.confirmed) == (DownReason.DPD, False)
    assert classify_down(no_task, gave_up=True).confirmed
    assert classify_down(down, replaced=True).reason is DownReason.REKEYED
    assert classify_down(dataclasses.replace(down, state="REKEYED")).reason is \
        DownReason.REKEYED
    assert classify_down(dataclasses.replace(down, state="PASSIVE")).reason is \
        DownReason.UNKNOWN


def test_locally_deleted_tells_our_terminate_from_the_peers() -> None:
    ours = next(e for e in decoded("delete-by-client-client") if isinstance(e, IkeDown))
    theirs = next(e for e in decoded("delete-by-gateway-client") if isinstance(e, IkeDown))
    assert locally_deleted(ours.sa)
    assert not locally_deleted(theirs.sa)


def test_log_evidence_confirms_dpd_when_it_comes_first() -> None:
    events = decoded("dpd-gateway")
    down = next(e for e in events if isinstance(e, IkeDown))
    table = seeded(events)
    no_task = IkeDown(dataclasses.replace(down.sa, tasks_active=()))
    log = LogLine("IKE", 1, "rw", down.sa.uniqueid, "giving up after 2 retransmits")
    assert table.apply(log, now=1.0) == []
    (sa_down, _changed) = table.apply(no_task, now=2.0)
    assert sa_down.reason is DownReason.DPD and sa_down.confirmed
    assert "gave up" in sa_down.detail


def test_down_carries_child_counters_and_lifetime() -> None:
    events = decoded("delete-by-client-gateway")
    ike = next(e for e in events if isinstance(e, IkeDown))
    children = [e.child for e in events if isinstance(e, ChildDown)]
    table = PeerTable()
    table.apply(IkeUp(dataclasses.replace(ike.sa, state="ESTABLISHED")), now=100.0)
    (sa_down, _) = table.apply(IkeDown(attach_children(ike.sa, children)), now=142.4)
    fields = sa_down.sa.log_fields()
    assert fields["lifetime_s"] == 42
    assert fields["vips"] == ["10.8.0.1"] and fields["remote_id"] == "c1.lab"
    assert {"bytes_in", "bytes_out", "packets_in", "packets_out"} <= fields.keys()
    assert not any(k in fields for k in ("secret", "psk", "data"))


# --- charon's quirks and duplicate deliveries ------------------------------------------


def up_event() -> IkeUp:
    return next(e for e in decoded("up-gateway") if isinstance(e, IkeUp))


def test_duplicate_up_and_down_change_nothing() -> None:
    table = PeerTable()
    up = up_event()
    assert summary(table.apply(up)) == [("up", "1", True)]
    assert table.apply(up) == []  # replayed after a reconnect
    down = IkeDown(dataclasses.replace(up.sa, state="DELETING"))
    assert summary(table.apply(down)) == [("down", "1", "deleted", True, True)]
    assert table.apply(down) == []
    assert table.apply(up) == []  # a stale up after the down does not resurrect it
    assert table.peer_count() == 0


def test_resync_adds_missed_sas_and_drops_vanished_ones_once() -> None:
    table = PeerTable()
    up = up_event()
    other = dataclasses.replace(up.sa, uniqueid="9", remote_id="c9.lab", remote_vips=("10.8.0.9",))
    table.apply(up)
    actions = table.apply(Resync((other,), instance="A"))
    assert summary(actions) == [("down", "1", "unknown", False, True), ("up", "9", True)]
    assert isinstance(actions[-1], SaSetChanged) and list(table.live.values()) == [other]
    assert all(a.resync for a in actions if isinstance(a, SaUp | SaDown))
    # the same snapshot again, and the events that were in flight: nothing new
    assert table.apply(Resync((other,), instance="A")) == []
    assert table.apply(IkeUp(other)) == []
    assert table.apply(IkeDown(dataclasses.replace(up.sa, state="DELETING"))) == []


def test_a_child_sa_added_and_deleted_while_its_ike_sa_stays_changes_the_set() -> None:
    """A second CHILD_SA (its own reqid and selectors) is a change of the firewall's
    input: before, only IKE_SA changes were, and its forward rules waited for the
    periodic pass (this test failed then: the child events gave no action)."""
    table = PeerTable()
    up = up_event()
    table.apply(up)
    second = ChildSa("web", "77", state="INSTALLED", reqid="9",
                     local_ts=("192.0.2.0/24",), remote_ts=("10.8.0.1/32",))
    (changed,) = table.apply(ChildUp(up.sa, second))
    assert isinstance(changed, SaSetChanged) and second in table.live["1"].children
    assert table.apply(ChildUp(up.sa, second)) == []  # duplicate
    (gone,) = table.apply(ChildDown(up.sa, second))
    assert isinstance(gone, SaSetChanged) and second not in table.live["1"].children
    assert table.apply(ChildDown(up.sa, second)) == []  # duplicate
    # a CHILD_SA rekey keeps reqid and selectors: nothing for the firewall to do
    table.apply(ChildUp(up.sa, second))
    rekeyed = dataclasses.replace(second, uniqueid="78")
    assert table.apply(ChildRekey(up.sa, second, rekeyed)) == []
    assert rekeyed in table.live[up.sa.uniqueid].children


def test_stale_resync_does_not_resurrect_a_down() -> None:
    table = PeerTable()
    up = up_event()
    table.apply(Resync((up.sa,), instance="A"))
    table.apply(IkeDown(dataclasses.replace(up.sa, state="DELETING")))
    # list-sas answered before the down happened, but its reply came after the event
    assert table.apply(Resync((up.sa,), instance="A")) == []
    assert table.live == {}


def test_charon_restart_resets_unique_ids() -> None:
    table = PeerTable()
    up = up_event()
    table.apply(Resync((up.sa,), instance="Nov 26 17:00:00 2026"))
    table.apply(IkeDown(dataclasses.replace(up.sa, state="DELETING")))
    table.apply(IkeUp(dataclasses.replace(up.sa, uniqueid="2")))
    # charon restarted: unique id 1 exists again and belongs to a new SA
    again = dataclasses.replace(up.sa, uniqueid="1")
    actions = table.apply(Resync((again,), instance="Nov 26 17:05:00 2026"))
    assert summary(actions) == [("down", "2", "unknown", False, True), ("up", "1", True)]
    assert actions[0].detail == "charon restarted"
    assert list(table.live) == ["1"]


def test_two_sas_of_one_peer_count_once() -> None:
    table = PeerTable()
    sa = up_event().sa
    table.apply(IkeUp(sa))
    newer = dataclasses.replace(sa, uniqueid="2")  # INITIAL_CONTACT from a new address
    assert summary(table.apply(IkeUp(newer))) == [("up", "2", False)]
    assert table.peer_count() == 1
    # charon drops the stale SA while ESTABLISHED: not a DPD, the peer is still there
    old_down = IkeDown(dataclasses.replace(sa, tasks_active=()))
    assert summary(table.apply(old_down)) == [("down", "1", "rekeyed", True, False)]
    assert table.peer_count() == 1


def test_same_identity_other_vip_is_another_device() -> None:
    table = PeerTable()
    sa = up_event().sa
    table.apply(IkeUp(sa))
    laptop = dataclasses.replace(sa, uniqueid="2", remote_vips=("10.8.0.7",))
    table.apply(IkeUp(laptop))
    down = IkeDown(dataclasses.replace(laptop, state="ESTABLISHED", tasks_active=("IKE_DPD",)))
    assert summary(table.apply(down)) == [("down", "2", "dpd", True, False)]


def test_parse_list_sas_and_unnamed_sas() -> None:
    up = load("up-gateway")
    unnamed = next(p for n, p in up if n == "ike-update")
    assert parse_event("ike-update", unnamed) == []
    body = next(p for n, p in up if n == "child-updown")
    resync = parse_list_sas([{k: v for k, v in body.items() if k != "up"}], instance="x")
    (sa,) = resync.sas
    assert sa.conn == "rw" and sa.remote_vips == ("10.8.0.1",)
    assert [c.name for c in sa.children] == ["net"]


def test_memory_is_bounded_over_many_cycles() -> None:
    """10,000 up/down cycles (synthetic feed built from a recorded payload) use no more
    memory than 1,000: the table forgets old unique ids beyond `remember`."""
    sa = up_event().sa

    def cycles(table: PeerTable, start: int, n: int) -> None:
        for i in range(start, start + n):
            s = dataclasses.replace(sa, uniqueid=str(i), remote_id=f"c{i % 50}.lab")
            table.apply(IkeUp(s), now=float(i))
            table.apply(LogLine("IKE", 1, "rw", str(i), "giving up after 2 retransmits"),
                        now=float(i))
            table.apply(IkeDown(dataclasses.replace(s, tasks_active=("IKE_DPD",))),
                        now=float(i))

    # CPython keeps up to 2,000 freed tuples per size on a free list, which tracemalloc
    # counts as live: fill it first, so only the table's own growth is measured
    table = PeerTable(remember=256)  # steady state well before 1,000 cycles
    tracemalloc.start()
    keep = [(i,) for i in range(2500)]
    del keep
    cycles(table, 1, 1000)
    at_1k = tracemalloc.get_traced_memory()[0]
    cycles(table, 1001, 9000)
    at_10k = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert at_10k <= at_1k * 1.10, (at_1k, at_10k)
    assert table.live == {}


def test_the_peer_index_follows_every_change_of_the_table() -> None:
    """peer_new, peer_gone and replacement read an index of each peer's SAs (a scan of
    every live SA per event cost ~1 ms at 10,000 SAs); it must equal the table's view
    after ups, duplicate ups, rekeys, moves, downs and a charon restart."""
    rng = random.Random(16)
    table = PeerTable()
    base = up_event().sa
    next_uid = 100

    def check() -> None:
        by_peer: dict[tuple[str, str], set[str]] = {}
        for uid, sa in table.live.items():
            by_peer.setdefault(sa.peer, set()).add(uid)
        assert {p: set(u) for p, u in table._by_peer.items()} == by_peer
        assert table.peer_count() == len(by_peer)

    for step in range(2000):
        live = list(table.live.values())
        roll = rng.random()
        if roll < 0.4 or not live:
            next_uid += 1
            peer = f"c{rng.randrange(30)}.lab"
            sa = dataclasses.replace(base, uniqueid=str(next_uid), remote_id=peer,
                                     remote_vips=(f"10.8.0.{rng.randrange(1, 60)}",))
            table.apply(IkeUp(sa), now=float(step))
            if rng.random() < 0.1:
                table.apply(IkeUp(sa), now=float(step))  # duplicate
        elif roll < 0.6:
            old = rng.choice(live)
            next_uid += 1
            table.apply(IkeRekey(old, dataclasses.replace(old, uniqueid=str(next_uid))))
        elif roll < 0.7:
            sa = rng.choice(live)
            table.apply(IkeUpdate(sa, local_host="192.0.2.1",
                                  remote_host=f"198.51.100.{step % 200}"))
        elif roll < 0.98:
            sa = rng.choice(live)
            table.apply(IkeDown(dataclasses.replace(sa, state="DELETING")), now=float(step))
        else:
            table.apply(Resync(tuple(live[:3]), instance=f"restart {step}"), now=float(step))
        check()


# --- keepalive decisions (no charon: the callback and the backoff only) ----------------


def client_down(scenario: str) -> SaDown:
    events = decoded(scenario)
    table = seeded(events)
    for e in events:
        for action in table.apply(e):
            if isinstance(action, SaDown):
                return action
    raise AssertionError(f"no down in {scenario}")


def keepalive() -> Any:
    from swand.runtime.events import EventWatcher
    from swand.runtime.keepalive import Keepalive

    return Keepalive("unix:///nonexistent", ["home"], EventWatcher("unix:///nonexistent"))


def test_keepalive_reinitiates_after_a_peers_delete_or_dpd() -> None:
    k = keepalive()
    k.on_action(client_down("delete-by-gateway-client"))
    assert k._kick["home"].is_set() and not k.held


def test_keepalive_holds_after_a_local_terminate_until_up_again() -> None:
    k = keepalive()
    down = client_down("delete-by-client-client")
    k.on_action(down)
    assert k.held == {"home"} and not k._kick["home"].is_set()
    k.on_action(SaUp(down.sa, peer_new=True))
    assert not k.held


def test_keepalive_does_not_hold_after_its_own_terminate() -> None:
    k = keepalive()
    down = client_down("delete-by-client-client")
    k._own_terminates.add(down.sa.uniqueid)
    k.on_action(down)
    assert not k.held and k._kick["home"].is_set()


def test_initial_contact_log_makes_an_established_down_a_replacement() -> None:
    """charon destroys the stale SA before the new one's up; its log line says why."""
    table = PeerTable()
    sa = up_event().sa
    table.apply(IkeUp(sa), now=0.0)
    # logged with the old SA checked out: the event names the SA being replaced
    log = LogLine("IKE", 1, "rw", sa.uniqueid,
                  "destroying duplicate IKE_SA for peer 'c1.lab', received INITIAL_CONTACT")
    assert table.apply(log, now=1.0) == []
    (down, _) = table.apply(IkeDown(dataclasses.replace(sa, tasks_active=())), now=1.1)
    assert (down.reason, down.confirmed) == (DownReason.REKEYED, True)
    # the evidence is used once: a later unexplained down of the peer is a DPD again
    table.apply(IkeUp(dataclasses.replace(sa, uniqueid="2")), now=2.0)
    (later, _) = table.apply(
        IkeDown(dataclasses.replace(sa, uniqueid="2", tasks_active=())), now=3.0)
    assert later.reason is DownReason.DPD and not later.confirmed


def test_alert_retransmit_send_timeout_confirms_dpd() -> None:
    sa = up_event().sa
    (alert,) = parse_event("alert", {"type": "retransmit-send-timeout",
                                     "rw": {"uniqueid": sa.uniqueid, "state": "ESTABLISHED"}})
    table = PeerTable()
    table.apply(IkeUp(sa))
    assert table.apply(alert) == []
    (down, _) = table.apply(IkeDown(dataclasses.replace(sa, tasks_active=())))
    assert (down.reason, down.confirmed) == (DownReason.DPD, True)


def test_resync_leaves_leaving_sas_to_their_own_down_event() -> None:
    table = PeerTable()
    sa = up_event().sa
    table.apply(IkeUp(sa))
    deleting = dataclasses.replace(sa, state="DELETING")
    rekeying = dataclasses.replace(sa, uniqueid="5", remote_id="c5.lab", state="REKEYING",
                                   remote_vips=("10.8.0.5",))
    actions = table.apply(Resync((deleting, rekeying), instance="A"))
    assert summary(actions) == [("up", "5", True)]  # 1 is still listed: no guess
    (down, _) = table.apply(IkeDown(deleting))
    assert down.reason is DownReason.DELETED  # the real event classifies it


def test_last_down_names_the_peer_by_its_identity() -> None:
    """`swand status` shows the peer of the last down as every log line and metric label
    does: its EAP/XAuth identity when it has one, not the IKE id."""
    import asyncio

    from swand.runtime.events import EventWatcher

    downs: list[dict[str, str]] = []

    class Metrics:
        def record_down(self, reason: str, connection: str = "", peer: str = "") -> None:
            downs.append({"reason": reason, "connection": connection, "peer": peer})

        def record_event(self, name: str) -> None: ...
        def record_vici_reconnect(self) -> None: ...
        def set_queue_depth(self, depth: object) -> None: ...

    async def main() -> None:
        watcher = EventWatcher("unix:///nonexistent", metrics=Metrics())
        sa = IkeSa("rw", "7", state="ESTABLISHED", remote_id="192.0.2.50",
                   remote_eap_id="carol@example.org", tasks_active=("IKE_DPD",))
        await watcher._apply(IkeUp(sa))
        await watcher._apply(IkeDown(sa))

    asyncio.run(main())
    assert downs == [{"reason": "dpd", "connection": "rw", "peer": "carol@example.org"}]


def test_a_burst_of_unexplained_downs_waits_for_evidence_once_not_once_each() -> None:
    """An ESTABLISHED down without IKE_DPD waits up to `log_wait` for charon's log line
    (DPD) or the new SA's up (INITIAL_CONTACT). The wait counts from when the down was
    read: 50 clients gone at once, read 1 s ago, are all applied without waiting (the
    consumer used to wait `log_wait` for each in turn: 25 s here)."""
    import asyncio

    from swand.runtime.events import EventWatcher

    now = [0.0]

    async def main() -> None:
        watcher = EventWatcher("unix:///nonexistent", clock=lambda: now[0], log_wait=0.5)
        sas = [IkeSa("rw", str(uid), state="ESTABLISHED", remote_id=f"c{uid}@lab.test",
                     remote_vips=(f"10.8.0.{uid}",)) for uid in range(1, 51)]
        for sa in sas:
            await watcher._apply(IkeUp(sa))
        for sa in sas:
            watcher._push(IkeDown(sa))
        now[0] = 1.0  # the consumer reaches them a second after they were read
        consumer = asyncio.create_task(watcher._consume_forever())
        try:
            await watcher.idle(timeout=2.0)
        finally:
            consumer.cancel()
        assert not watcher.table.live and sum(watcher.stats.downs.values()) == 50
        assert not watcher._down_read_at

    asyncio.run(main())


def _watching(now: list[float]) -> tuple[Any, list[Any]]:
    """A watcher on an injected clock with its actions recorded (no charon: events are
    pushed as the reader would push them)."""
    from swand.runtime.events import EventWatcher

    actions: list[Any] = []
    watcher = EventWatcher("unix:///nonexistent", clock=lambda: now[0], log_wait=0.5,
                           on_action=actions.append)
    return watcher, actions


def _downs_after(first: IkeSa, *events: Any) -> list[SaDown]:
    """`first` up, then `events` through the watcher's consumer until it is idle (on a
    clock that never moves): the downs it reported."""
    import asyncio

    async def main() -> list[SaDown]:
        watcher, actions = _watching([0.0])
        await watcher._apply(IkeUp(first))
        consumer = asyncio.create_task(watcher._consume_forever())
        try:
            for event in events:
                watcher._push(event)
            await watcher.idle(timeout=2.0)
        finally:
            consumer.cancel()
        assert set(watcher.table.current()) == set(watcher.table.live)
        return [a for a in actions if isinstance(a, SaDown)]

    return asyncio.run(main())


def _client(uid: int, **kw: Any) -> IkeSa:
    return IkeSa("rw", str(uid), state="ESTABLISHED", remote_id=f"c{uid}@lab.test",
                 remote_vips=(f"10.8.0.{uid}",), **kw)


def test_an_unexplained_down_leaves_the_firewalls_view_and_holds_no_other_event() -> None:
    """Churn (issue 16, goal 3): a down while ESTABLISHED waits up to `log_wait` for its
    reason, but its SA leaves what the firewall, NDP and routes read (`current`) at
    once, and the connects behind it are applied meanwhile (they used to wait with it:
    at 100 disconnects a second every connect waited ~0.5 s)."""
    import asyncio

    from swand.core.events import SaSetChanged

    now = [0.0]

    async def main() -> None:
        watcher, actions = _watching(now)
        await watcher._apply(IkeUp(_client(1)))
        consumer = asyncio.create_task(watcher._consume_forever())
        try:
            watcher._push(IkeDown(_client(1)))
            watcher._push(IkeUp(_client(2)))
            for _ in range(20):
                await asyncio.sleep(0)
            assert set(watcher.table.current()) == {"2"}  # 1 gone for the firewall
            assert "1" in watcher.table.live  # and still waiting for its reason
            assert any(isinstance(a, SaSetChanged) for a in actions)
            assert not [a for a in actions if isinstance(a, SaDown)]
            now[0] = 0.6  # the wait is over: classified without evidence
            watcher.poke()
            await watcher.idle(timeout=2.0)
        finally:
            consumer.cancel()
        (down,) = [a for a in actions if isinstance(a, SaDown)]
        assert (down.sa.uniqueid, down.reason, down.confirmed) == ("1", DownReason.DPD, False)
        assert set(watcher.table.live) == {"2"} and not watcher.table.leaving

    asyncio.run(main())


def test_evidence_after_other_events_still_explains_the_down() -> None:
    """charon's "giving up" line may trail the down behind other clients' events: it
    still confirms the DPD, and the down is applied when it arrives, not at the end of
    the wait (the clock never moves)."""
    (down,) = _downs_after(_client(1), IkeDown(_client(1)), IkeUp(_client(3)),
                           LogLine("IKE", 1, "rw", "1", "giving up after 2 retransmits"))
    assert (down.reason, down.confirmed) == (DownReason.DPD, True)


def test_a_replacement_up_behind_other_events_keeps_the_peer() -> None:
    """INITIAL_CONTACT: the old SA's down, another client's up, then the peer's new SA:
    the new SA is applied first, so the peer never counts as gone."""
    old = _client(1)
    (down,) = _downs_after(old, IkeDown(old), IkeUp(_client(4)),
                           IkeUp(dataclasses.replace(old, uniqueid="9")))
    assert down.sa.uniqueid == "1" and not down.peer_gone


# --- text a peer can put into charon's log (issue 12, item 6) ----------------------------

#: every phrase swand looks for in a log line, as (part of) a peer's identity
PHRASES = (
    "duplicate IKE_SA for peer 'c1.lab'",
    "destroying duplicate IKE_SA for peer 'c1.lab', received INITIAL_CONTACT",
    "deleting duplicate IKE_SA for peer 'c1.lab' due to uniqueness policy",
    "giving up after 5 retransmits",
    "x', received INITIAL_CONTACT",
)


def peer_lines(identity: str, attacker_uid: str = "99") -> list[LogLine]:
    """Lines charon logs with an unauthenticated peer's IDi in them, in the context of
    the attacker's own half-open IKE_SA (the only one its packets can reach)."""
    return [
        LogLine("CFG", 1, "rw", attacker_uid,
                f"looking for peer configs matching 192.0.2.1[gw.lab]...198.51.100.9"
                f"[{identity}]"),
        LogLine("IKE", 1, "rw", attacker_uid, f"received EAP identity '{identity}'"),
        LogLine("IKE", 1, "(unnamed)", "", f"{identity}"),
        LogLine("CFG", 1, "rw", attacker_uid,
                f"no peer config found for '{identity}'"),
    ]


@pytest.mark.parametrize("identity", PHRASES)
def test_a_peers_identity_cannot_relabel_a_victims_delete(identity: str) -> None:
    """Failed before: an IDi of "duplicate IKE_SA for peer 'c1.lab'" logged inside
    "looking for peer configs matching" made the victim's next normal delete `rekeyed`."""
    table = PeerTable()
    victim = up_event().sa
    table.apply(IkeUp(victim), now=0.0)
    for line in peer_lines(identity) + peer_lines(identity, attacker_uid=victim.uniqueid):
        assert table.apply(line, now=1.0) == []
    (down, _) = table.apply(IkeDown(dataclasses.replace(victim, state="DELETING")), now=1.1)
    assert down.reason is DownReason.DELETED
    # nor turn an unexplained down into a confirmed DPD or a replacement
    table.apply(IkeUp(dataclasses.replace(victim, uniqueid="2")), now=2.0)
    for line in peer_lines(identity, attacker_uid="2"):
        table.apply(line, now=2.5)
    (later, _) = table.apply(
        IkeDown(dataclasses.replace(victim, uniqueid="2", tasks_active=())), now=3.0)
    assert (later.reason, later.confirmed) == (DownReason.DPD, False)


@pytest.mark.parametrize("identity", PHRASES)
def test_charons_own_replacement_line_counts_whatever_the_identity(identity: str) -> None:
    """charon's real line names the old SA in its log event: the ID inside the text,
    whatever it says, changes nothing about which SA was replaced."""
    table = PeerTable()
    victim = up_event().sa
    other = dataclasses.replace(victim, uniqueid="7", remote_id=identity,
                                remote_vips=("10.8.0.7",))
    table.apply(IkeUp(victim), now=0.0)
    table.apply(IkeUp(other), now=0.0)
    line = LogLine("IKE", 1, "rw", other.uniqueid,
                   f"destroying duplicate IKE_SA for peer '{identity}', "
                   "received INITIAL_CONTACT")
    table.apply(line, now=1.0)
    (victim_down, _) = table.apply(
        IkeDown(dataclasses.replace(victim, tasks_active=())), now=1.1)
    assert victim_down.reason is DownReason.DPD
    (other_down, _) = table.apply(
        IkeDown(dataclasses.replace(other, tasks_active=())), now=1.1)
    assert other_down.reason is DownReason.REKEYED


def test_only_charons_whole_line_is_evidence() -> None:
    from swand.core.events import dpd_evidence, replaced_sa

    assert replaced_sa(LogLine("IKE", 1, "rw", "3", "deleting duplicate IKE_SA for peer "
                               "'a' due to uniqueness policy")) == "3"
    assert replaced_sa(LogLine("IKE", 1, "rw", "", "deleting duplicate IKE_SA for peer "
                               "'a' due to uniqueness policy")) is None
    assert dpd_evidence(LogLine("IKE", 1, "rw", "3", "giving up after 5 retransmits")) == "3"
    assert dpd_evidence(LogLine("IKE", 1, "rw", "3",
                                "received EAP identity 'giving up after 5 retransmits'")) \
        is None


def test_a_tcp_charon_is_the_same_process_despite_a_second_of_start_time_jitter() -> None:
    """charon's `stats` start time is "now minus uptime" at one second resolution: two
    replies of one process may differ by a second. The watcher (swand's one restart
    detector) must not call that a restart; it compared the text before."""
    import asyncio

    from swand.runtime.events import EventWatcher

    def stats(since: str) -> dict[str, Any]:
        return {"uptime": {"running": "1 minute", "since": since}}

    async def main() -> list[str]:
        watcher = EventWatcher("tcp://127.0.0.1:4502")
        first = watcher._instance(stats("Nov 26 17:45:29 2026"))
        watcher.table.instance = first
        jitter = watcher._instance(stats("Nov 26 17:45:30 2026"))
        later = watcher._instance(stats("Nov 26 17:52:02 2026"))
        return [first, jitter, later]

    first, jitter, later = asyncio.run(main())
    assert first and jitter == first and later != first
