"""Keepalive's reaction to the way out changing (NetlinkWatcher states), without charon."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from swand.adapters.netlink import NetState
from swand.clock import FakeClock
from swand.runtime.keepalive import Keepalive


class FakeWatcher:
    """The EventWatcher surface keepalive uses: callbacks and the live SA table."""

    def __init__(self) -> None:
        self.live: dict[str, list[Any]] = {}
        self.table = SimpleNamespace(live_for_conn=lambda conn: self.live.get(conn, []))

    def add_callback(self, _callback: Any) -> None:
        pass

    def add_resync_callback(self, _callback: Any) -> None:
        pass


class FakeNetlink:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.state: NetState | None = None

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def publish(self, addresses: set[str], routes: Iterable[tuple[str, str]] = (),
                interfaces: dict[str, tuple[str, ...]] | None = None) -> None:
        self.state = NetState("up0", interfaces or {}, frozenset(addresses),
                              frozenset(routes))
        for callback in self.callbacks:
            callback(self.state)


class FakeSession:
    """Records the requests keepalive sends to charon."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def request(self, cmd: str, msg: dict[str, Any], **_kw: Any) -> dict[str, Any]:
        self.sent.append((cmd, msg.get("ike-id")))
        return {}

    async def close(self) -> None:
        pass


def make(clock: FakeClock, settle: float = 0.05, session: FakeSession | None = None,
         ) -> tuple[Keepalive, FakeWatcher, FakeNetlink, list[str]]:
    watcher, netlink = FakeWatcher(), FakeNetlink()
    keepalive = Keepalive("unix:///nonexistent", ["home"], watcher,  # type: ignore[arg-type]
                          netlink=netlink, settle=settle, clock=clock,  # type: ignore[arg-type]
                          session=session or FakeSession())  # type: ignore[arg-type]
    kicks: list[str] = []
    keepalive.kick = lambda conn, network=False: kicks.append(conn)  # type: ignore[method-assign]
    return keepalive, watcher, netlink, kicks


def test_first_state_is_only_noted_and_a_burst_is_checked_once() -> None:
    async def main() -> list[str]:
        clock = FakeClock()
        _, _, netlink, kicks = make(clock)
        netlink.publish({"192.0.2.5"})  # the state at start: not a change
        await clock.advance(1.0)
        assert kicks == []
        netlink.publish(set())  # old address gone ...
        await clock.advance(0.04)
        netlink.publish({"198.51.100.30"})  # ... new one, then its route: one burst
        await clock.advance(0.04)
        netlink.publish({"198.51.100.30"}, {("up0", "198.51.100.1")})
        await clock.advance(0.049)
        assert kicks == []  # still settling: 49 ms into the 50 ms after the last change
        await clock.advance(0.001)
        assert kicks == ["home"]
        await clock.advance(1.0)
        return kicks

    assert asyncio.run(main()) == ["home"]  # no SA: initiated at once, once


def test_a_change_elsewhere_than_the_way_out_is_ignored() -> None:
    async def main() -> list[str]:
        clock = FakeClock()
        _, _, netlink, kicks = make(clock)
        netlink.publish({"192.0.2.5"})
        # a virtual IP on ipsec0, a link-local address: other parts of the state
        netlink.publish({"192.0.2.5"}, interfaces={"ipsec0": ("10.8.0.1/32",)})
        await clock.advance(1.0)
        return kicks

    assert asyncio.run(main()) == []


def test_an_sa_whose_address_is_gone_is_replaced_after_the_mobike_grace() -> None:
    async def main() -> tuple[list[str], list[Any]]:
        clock = FakeClock()
        session = FakeSession()
        keepalive, watcher, netlink, kicks = make(clock, session=session)
        keepalive.mobike_grace = 1.0
        sa = SimpleNamespace(conn="home", uniqueid="7", local_host="192.0.2.5")
        watcher.live["home"] = [sa]
        sent = session.sent
        netlink.publish({"192.0.2.5"})
        netlink.publish({"198.51.100.30"})
        await clock.advance(0.05 + 0.99)  # settled; MOBIKE may still move the SA
        assert sent == [] and kicks == []
        await clock.advance(0.01)
        assert keepalive._own_terminates == {"7"}
        return kicks, sent

    kicks, sent = asyncio.run(main())
    assert sent == [("terminate", "7")] and kicks == ["home"]
