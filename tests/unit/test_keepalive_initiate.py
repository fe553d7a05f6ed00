"""Keepalive's initiate shares the command connection with the loader: it must not hold
a config load back while the peer does not answer. charon handles a connection's VICI
commands one after the other; the fake session models that with a lock, and a blocking
initiate (``timeout`` > 0) towards an unreachable peer keeps it until the test ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from swand.core.events import DownReason, IkeSa, SaDown, SaUp
from swand.runtime.keepalive import Keepalive


class FakeWatcher:
    """The EventWatcher surface keepalive uses; `publish` plays an SA action."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.table = SimpleNamespace(live_for_conn=lambda conn: [])

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def add_resync_callback(self, _callback: Any) -> None:
        pass

    def publish(self, action: Any) -> None:
        for callback in self.callbacks:
            callback(action)


class SerialCharon:
    """One VICI connection to a charon whose peer `home` never answers."""

    def __init__(self) -> None:
        self.busy = asyncio.Lock()
        self.peer_answers = asyncio.Event()  # never set: the peer is unreachable
        self.initiated = asyncio.Event()
        self.commands: list[str] = []
        #: what `list-sas` answers after the first initiate (before it: no SA)
        self.lists: list[dict[str, Any]] = []

    async def streamed(self, command: str, _event: str, _args: Any = None,
                       timeout: float = 0.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with self.busy:
            self.commands.append(command)
            if command == "list-conns":
                return [{"home": {"children": {"home": {}}}}], {}
            return (list(self.lists) if self.initiated.is_set() else []), {}

    async def request(self, command: str, args: dict[str, Any] | None = None,
                      timeout: float = 0.0, check: bool = True) -> dict[str, Any]:
        async with self.busy:
            self.commands.append(command)
            if command == "initiate":
                self.initiated.set()
                if (args or {}).get("timeout") != -1:
                    await self.peer_answers.wait()  # charon waits for the outcome
            return {"success": "yes"}

    async def close(self) -> None:
        pass


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def _start(initiate_timeout: float = 15.0, initiate_poll: float = 1.0
           ) -> tuple[Keepalive, FakeWatcher, SerialCharon]:
    watcher, charon = FakeWatcher(), SerialCharon()
    keepalive = Keepalive("unix:///nonexistent", ["home"], watcher,  # type: ignore[arg-type]
                          follow_network=False, down_grace=0.0,
                          initiate_timeout=initiate_timeout, initiate_poll=initiate_poll,
                          session=charon)  # type: ignore[arg-type]
    watcher.add_callback(keepalive.on_action)  # what `wire` does with charon's actions
    return keepalive, watcher, charon


def test_a_config_load_is_not_held_back_by_an_initiate_towards_an_unreachable_peer() -> None:
    async def main() -> None:
        keepalive, _, charon = _start()
        task = asyncio.create_task(keepalive.run())
        await charon.initiated.wait()
        load = asyncio.create_task(charon.request("load-conn", {"home": {}}))
        await _until(load.done)  # before the fix: waits for the initiate's 15 s
        assert keepalive.failures["home"] == 0  # still waiting for the SA events
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_the_outcome_comes_from_the_sa_events() -> None:
    async def main() -> None:
        keepalive, watcher, charon = _start()
        task = asyncio.create_task(keepalive.run())
        await charon.initiated.wait()
        await _until(lambda: "home" in keepalive._outcome)
        watcher.publish(SaDown(IkeSa("home", "1", "CONNECTING"), DownReason.FAILED, True,
                               "", True))
        await _until(lambda: keepalive.failures["home"] == 1)
        assert keepalive.next_retry["home"] is not None  # backing off
        keepalive.kick("home", network=True)  # retry now; this time the peer answers
        await _until(lambda: "home" in keepalive._outcome)
        watcher.publish(SaUp(IkeSa("home", "2", "ESTABLISHED"), True))
        await _until(lambda: keepalive.failures["home"] == 0)
        assert keepalive.initiations["home"] == 2 and keepalive.next_retry["home"] is None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


async def _first_failure(keepalive: Keepalive) -> None:
    """Run `keepalive` until its first failed attempt (waiting on the condition, in 5 ms
    steps: these tests' timeouts are a few ms), then stop it."""
    task = asyncio.create_task(keepalive.run())
    for _ in range(200):
        if keepalive.failures["home"]:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert keepalive.failures["home"] == 1


def test_no_sa_event_within_the_initiate_timeout_is_a_failure() -> None:
    keepalive, _, charon = _start(initiate_timeout=0.005)
    charon.lists = [{"home": {"state": "CONNECTING"}}]  # charon still trying
    asyncio.run(_first_failure(keepalive))


def test_an_ike_sa_charon_gave_up_on_without_an_event_is_a_failure() -> None:
    """charon destroys an IKE_SA that never came up without an ike-updown event: the
    poll of `list-sas` no longer showing it decides (the fake lists no SA)."""
    keepalive, _, _ = _start(initiate_poll=0.001)
    asyncio.run(_first_failure(keepalive))
