"""Keepalive's retries while charon refuses to initiate: 1 s doubling, cut short by a
network change, reset by success. Time is a FakeClock; charon is a scripted session."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from swand.adapters.vici import ViciCommandError
from swand.clock import FakeClock
from swand.core.events import IkeSa, SaUp
from swand.runtime.keepalive import Keepalive


class Watcher:
    """The EventWatcher surface keepalive uses: callbacks and the live SA table."""

    def __init__(self) -> None:
        self.table = SimpleNamespace(live_for_conn=lambda conn: [])

    def add_callback(self, _callback: Any) -> None:
        pass

    def add_resync_callback(self, _callback: Any) -> None:
        pass


class Charon:
    """No IKE SA; `home` is loaded; `initiate` fails until `accept` is set, then the SA
    comes up as charon says it: by an event (keepalive initiates without blocking)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.accept = False
        self.initiated_at: list[float] = []
        self.keepalive: Keepalive | None = None

    async def streamed(self, command: str, _event: str, _msg: Any = None,
                       **_kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if command == "list-conns":
            return [{"home": {"children": {"home": {}}}}], {}
        return [], {}

    async def request(self, command: str, _msg: Any = None, **_kw: Any) -> dict[str, Any]:
        assert command == "initiate"
        self.initiated_at.append(self.clock.monotonic() - 1000.0)
        if not self.accept:
            raise ViciCommandError("initiate", "establishing CHILD_SA 'home' failed")
        assert self.keepalive is not None
        asyncio.get_running_loop().call_soon(
            self.keepalive.on_action, SaUp(IkeSa("home", "1", "ESTABLISHED"), True))
        return {}

    async def close(self) -> None:
        pass


def test_failed_initiations_back_off_and_a_network_change_cuts_the_wait() -> None:
    async def main() -> tuple[Keepalive, list[float]]:
        clock = FakeClock()
        charon = Charon(clock)
        keepalive = Keepalive("unix:///nonexistent", ["home"], Watcher(),  # type: ignore[arg-type]
                              follow_network=False, backoff_jitter=0.0, clock=clock,
                              session=charon)  # type: ignore[arg-type]
        charon.keepalive = keepalive
        task = asyncio.create_task(keepalive.run())
        await clock.advance(0.5)  # down_grace: charon's own start_action goes first
        await clock.advance(1.0 + 2.0 + 4.0)
        assert charon.initiated_at == [0.5, 1.5, 3.5, 7.5]
        assert keepalive.last_delay["home"] == 8.0
        assert keepalive.next_retry["home"] == clock.monotonic() + 8.0
        await clock.advance(3.0)
        charon.accept = True
        keepalive.kick("home", network=True)  # the way out changed: try now, not in 5 s
        await clock.run_loop()
        assert charon.initiated_at[-1] == 10.5
        assert keepalive.last_delay["home"] == 0.0 and keepalive.failures["home"] == 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return keepalive, charon.initiated_at

    keepalive, initiated_at = asyncio.run(main())
    assert keepalive.initiations["home"] == len(initiated_at) == 5
