"""The Charon session owner's publications and the one wiring of `swand run`, without
charon: what each subscriber hears (the lab tests prove the same wiring end to end)."""

from __future__ import annotations

import asyncio
from typing import Any

from swand.core.events import ChildSa, ChildUp, IkeSa, IkeUp, SaUp
from swand.runtime.charon import Charon, CharonUp
from swand.runtime.wiring import wire


class Recorder:
    """Stands in for the firewall, the config runner and the metrics poller."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def poke(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("poke", *args, *sorted(kwargs.items())))

    def on_sa_event(self, event: Any) -> None:
        self.calls.append(("event", type(event).__name__))

    def use_live_sas(self, live_sas: Any) -> None:
        self.live_sas = live_sas

    def sa_set_changed(self) -> None:
        self.calls.append(("sa-set-changed",))

    def charon_lost(self) -> None:
        self.calls.append(("lost",))

    def charon_restarted(self) -> None:
        self.calls.append(("restarted",))

    def on_action(self, action: Any) -> None:
        self.calls.append(("action", type(action).__name__))

    def on_resync(self, restarted: bool) -> None:
        self.calls.append(("resync", restarted))


def test_charon_publishes_up_a_restart_and_down_once_each() -> None:
    async def main() -> tuple[Charon, list[CharonUp], list[str]]:
        charon = Charon("unix:///nonexistent/charon.vici")
        ups: list[CharonUp] = []
        downs: list[str] = []
        charon.on_up(ups.append)
        charon.on_down(downs.append)
        await charon._resynced(False)  # first contact
        await charon._resynced(False)  # a resync after a queue overflow: charon stayed
        charon._lost("charon closed the connection")
        charon._lost("cannot connect")  # the same outage
        await charon._resynced(True)
        await charon.close()
        return charon, ups, downs

    charon, ups, downs = asyncio.run(main())
    assert [(u.first, u.restarted) for u in ups] == [(True, False), (False, True)]
    assert downs == ["charon closed the connection"]
    assert charon.restarts == 1 and charon.up is True


def test_wire_pokes_the_firewall_on_every_sa_set_change_and_charon_coming_back() -> None:
    sa = IkeSa("rw", "1", state="ESTABLISHED", remote_id="c1", remote_vips=("10.8.0.2",))
    child = ChildSa("web", "5", state="INSTALLED", reqid="3")

    async def main() -> tuple[Recorder, Recorder, Recorder]:
        charon = Charon("unix:///nonexistent/charon.vici")
        firewall, poller, runner = Recorder(), Recorder(), Recorder()
        wire(charon, firewall=firewall, poller=poller,  # type: ignore[arg-type]
             config_runner=runner)  # type: ignore[arg-type]
        await charon._resynced(False)  # first: the start passes are queued already
        watcher = charon.events
        for callback in watcher._event_callbacks:  # the reader's one decoding, shared
            callback(ChildUp(sa, child))
        await watcher._apply(IkeUp(sa))  # SaUp + SaSetChanged: one poke
        await watcher._apply(ChildUp(sa, child))  # a child-only change: one poke
        await watcher._dispatch(SaUp(sa, peer_new=True))  # not a change of the set
        watcher._lost("gone")  # the event stream broke: charon_down
        await charon._resynced(True)
        await charon.close()
        return firewall, poller, runner

    firewall, poller, runner = asyncio.run(main())
    assert firewall.calls == [("poke", "sa-change"), ("poke", "sa-change"),
                              ("poke", "charon-up")]
    assert runner.calls == [("poke", "charon-up", ("full", True))]
    # the SA set changes reach the poller as such (a re-render from the table, no poll)
    assert poller.calls == [("event", "ChildUp"), ("sa-set-changed",), ("sa-set-changed",),
                            ("lost",), ("restarted",), ("poke",)]
    assert [sa.uniqueid for sa in poller.live_sas()] == ["1"]  # the watcher's table


def test_wire_gives_keepalive_every_action_and_each_time_charon_is_reached() -> None:
    sa = IkeSa("home", "1", state="ESTABLISHED")

    async def main() -> Recorder:
        charon = Charon("unix:///nonexistent/charon.vici")
        keepalive = Recorder()
        wire(charon, keepalive=keepalive)  # type: ignore[arg-type]
        await charon._resynced(False)  # first contact: a connection still down is tried
        await charon.events._dispatch(SaUp(sa, peer_new=True))
        charon._lost("gone")
        await charon._resynced(True)
        await charon.close()
        return keepalive

    assert asyncio.run(main()).calls == [("resync", False), ("action", "SaUp"),
                                         ("resync", True)]
