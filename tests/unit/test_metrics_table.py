"""The metrics between polls in the daemon: SA events re-render the SA-derived families
from the event watcher's peer table (coalesced, no `list-sas`), while traffic counters
keep coming from polls and the final counters of down events.

charon is a fake command session counting the commands (the poll's reads only); the
event watcher and the wiring are the daemon's (`swand.runtime.wiring.wire`); time is a
FakeClock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from vici.protocol import Message

from swand.clock import FakeClock
from swand.core import metrics as m
from swand.core.events import ChildDown, ChildUp, IkeDown, IkeSa, IkeUp, SaEvent
from swand.runtime.charon import Charon
from swand.runtime.metrics import MetricsPoller, MetricsRegistry
from swand.runtime.wiring import wire


def vici_sa(n: int, bytes_in: int, state: str = "ESTABLISHED") -> dict[str, Any]:
    """Client n's IKE_SA (unique id 2n+1) with one CHILD_SA (2n+2), as list-sas has it."""
    return {"rw": {
        "uniqueid": str(2 * n + 1), "state": state, "remote-host": f"192.0.2.{n}",
        "remote-id": f"c{n}.lab", "remote-vips": [f"10.8.0.{n}"], "established": "100",
        "child-sas": {f"net-{2 * n + 2}": {
            "name": "net", "uniqueid": str(2 * n + 2), "state": "INSTALLED",
            "bytes-in": str(bytes_in), "remote-ts": [f"10.8.0.{n}/32"]}},
    }}


def model(n: int, bytes_in: int) -> IkeSa:
    """Client n's SA as the event decoder makes it (the same model as the poll's)."""
    return m.parse_sas([vici_sa(n, bytes_in)])[0]


class FakeSession:
    """Answers the poll's commands from `sas` and counts them."""

    generation = 1
    uri = "unix:///nonexistent/charon.vici"

    def __init__(self, sas: Iterable[dict[str, Any]]) -> None:
        self.sas = list(sas)
        self.commands: Counter[str] = Counter()

    async def request(self, command: str, message: Mapping[str, Any] | None = None, *,
                      timeout: float = 30.0) -> dict[str, Any]:
        self.commands[command] += 1
        if command == "stats":
            return {"ikesas": {"total": str(len(self.sas))}}
        if command == "version":
            return {"daemon": "charon", "version": "5.9.8"}
        return {}

    async def streamed(self, command: str, event: str,
                       message: Mapping[str, Any] | None = None, *, timeout: float = 60.0,
                       decode: bool = True, parse: Callable[[list[Any]], Any] | None = None,
                       parse_raw: Callable[[list[tuple[bytes, int]]], Any] | None = None,
                       ) -> tuple[list[Any], dict[str, Any]]:
        self.commands[command] += 1
        events = list(self.sas) if command == "list-sas" else []
        if parse_raw is not None:  # the messages' bytes, as the session hands them on
            return list(parse_raw([(Message.serialize(e), 0) for e in events])), {}
        return (list(parse(events)) if parse else events), {}

    async def close(self) -> None:
        pass


def samples(poller: MetricsPoller, name: str) -> dict[tuple[str, ...], float]:
    for family in poller.current[1]:
        if family.name == name:
            return dict(family.samples)
    return {}


def peers(poller: MetricsPoller) -> set[str]:
    return {labels[1] for labels in samples(poller, "swand_peer_info")}


def bytes_in(poller: MetricsPoller) -> float:
    return sum(samples(poller, "swand_child_bytes_in_total").values())


async def until(condition: Callable[[], bool]) -> None:
    """Wait (real time, 1 ms steps) for work on a worker thread (the poll's accounting)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


class Daemon:
    """The daemon's Charon owner and wiring, the poller on a fake command session."""

    def __init__(self, session: FakeSession, clock: FakeClock) -> None:
        self.session = session
        self.clock = clock
        self.charon = Charon("unix:///nonexistent/charon.vici")
        self.poller = MetricsPoller(
            self.charon.uri, MetricsRegistry(), per_peer=True, own_events=False,
            interval=3600, session=session,  # type: ignore[arg-type]
            clock=clock)
        wire(self.charon, poller=self.poller)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The table as the watcher's resync made it, then the poller's first poll."""
        for vici in self.session.sas:
            self.charon.events.table.apply(IkeUp(m.parse_sas([vici])[0]))
        task = self.task = asyncio.create_task(self.poller.run())
        await until(lambda: self.poller.snapshot.charon_up or task.done())
        if task.done():
            task.result()  # the poll's error, not a timeout

    async def event(self, event: SaEvent) -> None:
        """One event as the watcher handles it: the reader's callbacks, then the table."""
        for callback in self.charon.events._event_callbacks:
            callback(event)
        await self.charon.events._apply(event)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.poller.close()
        await self.charon.close()


def test_sa_events_update_the_families_from_the_table_without_a_poll() -> None:
    async def main() -> None:
        clock = FakeClock()
        daemon = Daemon(FakeSession([vici_sa(1, 1000), vici_sa(2, 2000)]), clock)
        await daemon.start()
        poller, commands = daemon.poller, daemon.session.commands
        assert peers(poller) == {"c1.lab", "c2.lab"}
        assert commands["list-sas"] == 1

        new = model(3, 0)
        await daemon.event(IkeUp(new))
        await daemon.event(ChildUp(new, new.children[0]))
        await clock.advance(0.3)
        assert peers(poller) == {"c1.lab", "c2.lab"}  # coalescing: not yet
        await clock.advance(0.2)
        assert peers(poller) == {"c1.lab", "c2.lab", "c3.lab"}
        assert samples(poller, "swand_ike_sas") == {("rw", "ESTABLISHED"): 3}
        assert samples(poller, "swand_virtual_ips") == {("rw", "ipv4"): 3}
        info = samples(poller, "swand_peer_info")
        assert info[("rw", "c3.lab", "192.0.2.3", "10.8.0.3", "ESTABLISHED")] == 1
        # when its up event arrived (it said: established 100 s before), not drifting
        assert samples(poller, "swand_peer_established_timestamp_seconds")[
            ("rw", "c3.lab")] == clock.time() - 0.5 - 100

        gone = model(1, 1500)
        await daemon.event(ChildDown(gone, gone.children[0]))
        await daemon.event(IkeDown(gone))
        await clock.advance(0.5)
        assert peers(poller) == {"c2.lab", "c3.lab"}
        assert samples(poller, "swand_ike_sas") == {("rw", "ESTABLISHED"): 2}
        # the down's final counters count at once; no poll happened for any of it
        assert bytes_in(poller) == 1500 + 2000 + 0
        assert commands["list-sas"] == 1 and commands["stats"] == 1
        await daemon.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_burst_of_events_is_one_refresh() -> None:
    async def main() -> None:
        clock = FakeClock()
        daemon = Daemon(FakeSession([vici_sa(1, 10)]), clock)
        await daemon.start()
        renders = 0
        real = daemon.poller._refreshed

        def counted(*args: Any) -> Any:
            nonlocal renders
            renders += 1
            return real(*args)

        daemon.poller._refreshed = counted  # type: ignore[method-assign]
        for n in range(10, 60):
            sa = model(n, 0)
            await daemon.event(IkeUp(sa))
            await clock.advance(0.01)
        await clock.advance(0.5)
        assert renders == 1
        assert len(peers(daemon.poller)) == 51
        assert daemon.session.commands["list-sas"] == 1
        await daemon.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_table_refreshes_never_corrupt_the_polled_counters() -> None:
    """A poll, events, a refresh, a poll: the totals never decrease and are what the
    polls and the downs' final counters say. The table's SAs carry the counters of their
    up events (lower than a poll's since): a refresh must never count them as a poll."""

    async def main() -> list[float]:
        clock = FakeClock()
        session = FakeSession([vici_sa(1, 1000), vici_sa(2, 2000)])
        daemon = Daemon(session, clock)
        await daemon.start()
        poller = daemon.poller
        seen = [bytes_in(poller)]  # 3000

        new = model(3, 0)
        await daemon.event(IkeUp(new))
        await daemon.event(ChildUp(new, new.children[0]))
        gone = model(1, 1200)  # SA 1's final counters
        await daemon.event(ChildDown(gone, gone.children[0]))
        await daemon.event(IkeDown(gone))
        await clock.advance(0.5)
        seen.append(bytes_in(poller))  # 1200 + 2000 + 0

        # charon now: SA 2 at 2500, SA 3 at 700 (its table entry still says 0)
        session.sas = [vici_sa(2, 2500), vici_sa(3, 700)]
        assert await poller.poll_once()
        seen.append(bytes_in(poller))  # 1200 + 2500 + 700
        # SA 4's IKE_SA is up, its CHILD_SA's up not yet handled (not in the table)
        await daemon.event(IkeUp(replace(model(4, 0), children=())))
        await clock.advance(0.5)  # a refresh after the poll: the table's 0 is no poll
        seen.append(bytes_in(poller))
        assert peers(poller) == {"c2.lab", "c3.lab", "c4.lab"}
        session.sas = [vici_sa(2, 2600), vici_sa(3, 800), vici_sa(4, 50)]
        assert await poller.poll_once()
        seen.append(bytes_in(poller))
        await daemon.event(IkeUp(model(5, 0)))
        await clock.advance(0.5)  # SA 4's child, polled, is no less alive for the table
        seen.append(bytes_in(poller))
        assert samples(poller, "swand_peer_up")[("rw", "c4.lab")] == 1
        assert session.commands["list-sas"] == 3  # the first poll and the two above
        await daemon.stop()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    final = 1200 + 2600 + 800 + 50
    assert seen == [3000, 3200, 4400, 4400, final, final]


def test_a_change_during_a_poll_is_rendered_after_it() -> None:
    """The poll's list-sas predates an SA that came up while it was read: the table is
    newer, so a refresh follows the poll's publication."""

    async def main() -> None:
        clock = FakeClock()
        session = FakeSession([vici_sa(1, 10)])
        daemon = Daemon(session, clock)
        await daemon.start()
        real = session.streamed
        new = model(5, 0)

        async def listing_then_up(command: str, *args: Any, **kwargs: Any) -> Any:
            reply = await real(command, *args, **kwargs)
            if command == "list-sas":
                await daemon.event(IkeUp(new))  # arrives after charon answered
            return reply

        session.streamed = listing_then_up  # type: ignore[method-assign]
        assert await daemon.poller.poll_once()
        assert peers(daemon.poller) == {"c1.lab"}  # the poll's (older) view
        await clock.advance(0.5)
        assert peers(daemon.poller) == {"c1.lab", "c5.lab"}
        await daemon.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_no_refresh_publishes_over_charon_being_down() -> None:
    async def main() -> None:
        clock = FakeClock()
        daemon = Daemon(FakeSession([vici_sa(1, 10)]), clock)
        await daemon.start()
        await daemon.event(IkeUp(model(2, 0)))
        daemon.poller.charon_lost()
        await clock.advance(0.5)
        assert samples(daemon.poller, "swand_charon_up") == {(): 0.0}
        await daemon.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_standalone_poller_still_polls_after_an_sa_event() -> None:
    """Without a table (`swand` commands, bench_metrics) an SA event wakes a poll."""
    poller = MetricsPoller("unix:///nonexistent/charon.vici", MetricsRegistry(),
                           own_events=False)
    sa = model(1, 0)
    poller.on_sa_event(IkeUp(sa))
    assert poller._wake.is_set()


def test_view_with_live_sas_keeps_the_polls_other_states() -> None:
    polled = m.parse_sas([vici_sa(1, 0), vici_sa(2, 0, state="CONNECTING"),
                          vici_sa(3, 0, state="DELETING")])
    view = m.CharonView(taken_at=5000.0, sas=polled)
    table = [model(1, 0), model(4, 0)]
    merged = m.view_with_live_sas(view, table, {"9": 5500.0}, now=6000.0)
    assert [sa.uniqueid for sa in merged.sas] == ["3", "9", "5", "7"]
    # the poll's establishment where it saw the SA, else the up event's arrival
    assert merged.established_at == {"3": 4900.0, "9": 5500.0, "5": 4900.0, "7": 4900.0}
    again = m.view_with_live_sas(merged, [model(4, 0)], {}, now=7000.0)
    assert [sa.uniqueid for sa in again.sas] == ["9", "5", "7"]
    assert again.established_at == {"9": 5500.0, "5": 4900.0, "7": 4900.0}
