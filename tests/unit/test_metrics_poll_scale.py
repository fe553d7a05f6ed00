"""The metrics poll at scale: decoding and accounting off the loop lose no SA event.

A fake charon (the real VICI wire protocol over a unix socket, no root) answers the
poller's commands; list-sas streams more SAs than one decoder batch and pauses midway.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import struct
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from vici.protocol import Message, Packet

from swand.runtime.metrics import GC_PAUSE_MIN_SAS, MetricsPoller, MetricsRegistry

DATA = Path(__file__).parent / "data" / "events"
SAS = 1200
CHURNED = 300


def _template() -> dict[str, Any]:
    events = json.loads((DATA / "child-rekey-gateway.json").read_text())["events"]
    ike = copy.deepcopy(events[0][1]["rw"])
    child = ike["child-sas"]["net"]["new"]
    ike.pop("tasks-passive", None)
    ike["child-sas"] = {"net-2": child}
    return ike


TEMPLATE = _template()


def ike_sa(i: int, bytes_in: int) -> dict[str, Any]:
    sa = copy.deepcopy(TEMPLATE)
    sa.update({"uniqueid": str(2 * i + 1), "remote-id": f"c{i}.lab",
               "remote-vips": [f"10.8.{i // 250}.{i % 250 + 1}"]})
    child = sa["child-sas"].pop("net-2")
    child.update({"uniqueid": str(2 * i + 2), "bytes-in": str(bytes_in),
                  "remote-ts": [f"10.8.{i // 250}.{i % 250 + 1}/32"]})
    sa["child-sas"][f"net-{2 * i + 2}"] = child
    return sa


def frame(packet: bytes) -> bytes:
    return struct.pack("!I", len(packet)) + packet


def event(name: str, msg: dict) -> bytes:
    return frame(bytes([Packet.EVENT, len(name)]) + name.encode() + Message.serialize(msg))


def response(msg: dict) -> bytes:
    return frame(bytes([Packet.CMD_RESPONSE]) + Message.serialize(msg))


class SlowCharon:
    """Answers a poll; list-sas stops after `pause_after` SAs until `release` is set."""

    def __init__(self, pause_after: int) -> None:
        self.pause_after = pause_after
        self.listing = asyncio.Event()
        self.release = asyncio.Event()
        #: SAs charon no longer lists
        self.gone: set[int] = set()
        self.dir = tempfile.TemporaryDirectory()
        self.path = str(Path(self.dir.name) / "charon.vici")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                packet = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return
            kind, name = packet[0], packet[2:2 + packet[1]].decode()
            if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                writer.write(frame(bytes([Packet.EVENT_CONFIRM])))
            elif name == "stats":
                writer.write(response({"uptime": {"since": "Nov 26 18:00:26 2026"},
                                       "ikesas": {"total": str(SAS)}}))
            elif name == "version":
                writer.write(response({"daemon": "charon", "version": "5.9.8"}))
            elif name == "list-sas":
                for i in range(SAS):
                    if i not in self.gone:
                        writer.write(event("list-sa", {"rw": ike_sa(i, 100)}))
                    if i == self.pause_after:
                        await writer.drain()
                        self.listing.set()
                        await self.release.wait()
                writer.write(response({}))
            elif name in ("list-conns", "list-certs", "get-pools"):
                writer.write(response({}))
            else:
                writer.write(frame(bytes([Packet.CMD_UNKNOWN])))
            await writer.drain()


def down_event(i: int, bytes_in: int) -> dict[str, Any]:
    """child-updown (down) of SA i with its final counters, as the watcher hands it on."""
    sa = ike_sa(i, bytes_in)
    return {"rw": sa}


async def _poll_with_events(pause_in_account: bool) -> tuple[MetricsPoller, bool]:
    charon = SlowCharon(pause_after=SAS // 2)
    server = await asyncio.start_unix_server(charon.handle, charon.path)
    poller = MetricsPoller(f"unix://{charon.path}", MetricsRegistry(), own_events=False)
    accounting = threading.Event()
    go_on = threading.Event()
    if pause_in_account:
        real = poller._account

        def held(*args: Any) -> Any:
            accounting.set()
            go_on.wait(10)
            return real(*args)

        poller._account = held  # type: ignore[method-assign]
    try:
        poll = asyncio.create_task(poller.poll_once())
        await charon.listing.wait()
        if not pause_in_account:
            # the loop is free while the listing is under way: the event is handled now
            poller.on_event("child-updown", down_event(3, 5000))
            handled_during_poll = not poll.done()
            charon.release.set()
        else:
            charon.release.set()
            await asyncio.get_running_loop().run_in_executor(None, accounting.wait, 10)
            for i in range(CHURNED):  # a burst of downs while the thread accounts
                poller.on_event("child-updown", down_event(i, 5000))
            handled_during_poll = not poll.done()
            go_on.set()
        assert await poll
        return poller, handled_during_poll
    finally:
        go_on.set()
        await poller.close()
        server.close()
        charon.dir.cleanup()


def _bytes_in(poller: MetricsPoller) -> int:
    return sum(t.bytes_in for t in poller.accumulator.totals().values())


def test_an_sa_event_is_handled_while_a_slow_poll_is_in_progress() -> None:
    poller, during = asyncio.run(asyncio.wait_for(_poll_with_events(False), 30))
    assert during
    view = poller.snapshot.view
    assert view is not None and len(view.sas) == SAS
    # SA 3's final 5000 bytes count, beside every other SA's 100
    assert _bytes_in(poller) == (SAS - 1) * 100 + 5000


def test_events_during_the_accounting_thread_are_applied_not_lost() -> None:
    """The poll's accounting runs on a thread; a burst of SA events arriving then is
    kept and applied after it (it would otherwise race the thread or be dropped)."""
    poller, during = asyncio.run(asyncio.wait_for(_poll_with_events(True), 30))
    assert during
    assert _bytes_in(poller) == (SAS - CHURNED) * 100 + CHURNED * 5000
    assert poller._deferred is None


async def _delete_during_a_poll_then_poll_again() -> tuple[int, bool, int, bool]:
    charon = SlowCharon(pause_after=SAS // 2)
    server = await asyncio.start_unix_server(charon.handle, charon.path)
    poller = MetricsPoller(f"unix://{charon.path}", MetricsRegistry(), own_events=False)
    try:
        poll = asyncio.create_task(poller.poll_once())
        await charon.listing.wait()
        poller.on_event("child-updown", down_event(3, 5000))  # already listed
        charon.gone.add(3)
        charon.release.set()
        assert await poll
        after_first = _bytes_in(poller), "8" in poller.accumulator._deleted
        charon.pause_after = SAS  # no pause
        assert await poller.poll_once()
        return (*after_first, _bytes_in(poller), "8" in poller.accumulator._deleted)
    finally:
        await poller.close()
        server.close()
        charon.dir.cleanup()


def test_a_delete_during_a_slow_poll_is_kept_until_a_later_poll_is_read() -> None:
    """The poll in flight listed SA 3 (CHILD_SA id 8) before its down arrived: the id
    stays remembered, so that listing cannot count it again; the next poll was sent
    after the down, so once it is read the id is forgotten. Counted once throughout."""
    first, kept, second, still_kept = asyncio.run(
        asyncio.wait_for(_delete_during_a_poll_then_poll_again(), 30))
    assert first == second == (SAS - 1) * 100 + 5000
    assert kept and not still_kept


class _Node:
    """An object that can sit in a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.me: _Node | None = self


def test_a_small_gateway_never_freezes_its_garbage() -> None:
    """gc.freeze after a poll keeps the cyclic garbage of that moment forever; only a
    large gateway (>= GC_PAUSE_MIN_SAS SAs in the last poll) pays that each poll. On a
    small one, a cycle that became garbage in the old generation before a poll is still
    collected after it. (The first poll, size unknown, freezes start-up's objects once.)"""

    async def two_polls() -> weakref.ref[_Node]:
        charon = SlowCharon(pause_after=SAS)  # never pauses
        server = await asyncio.start_unix_server(charon.handle, charon.path)
        poller = MetricsPoller(f"unix://{charon.path}", MetricsRegistry(), own_events=False)
        try:
            assert await poller.poll_once()
            node = _Node()
            gc.collect()  # still referenced: survives into the oldest generation
            watch = weakref.ref(node)
            del node  # now garbage that only a full collection finds
            assert await poller.poll_once()
            return watch
        finally:
            await poller.close()
            server.close()
            charon.dir.cleanup()

    assert SAS < GC_PAUSE_MIN_SAS
    try:
        watch = asyncio.run(asyncio.wait_for(two_polls(), 30))
        gc.collect()
        assert watch() is None, "the garbage cycle was frozen by a small gateway's poll"
    finally:
        gc.unfreeze()
