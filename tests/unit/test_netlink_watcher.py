"""NetlinkWatcher's life cycle over a fake RTNL socket: subscribe-then-dump, publish only
changes, ignore charon's table 220, reopen and re-read on ENOBUFS, retry other failures."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any

import pytest

from swand.adapters.netlink import NetlinkWatcher, NetState
from swand.clock import FakeClock


class FakeSocket:
    """Each `get()` hands out the next batch of messages, or raises what it holds."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches
        self.closed = False

    async def get(self) -> AsyncIterator[dict[str, Any]]:
        if not self.batches:
            await asyncio.Event().wait()  # nothing more: until cancelled
        batch = self.batches.pop(0)
        if isinstance(batch, BaseException):
            raise batch
        for msg in batch:
            yield msg

    def close(self) -> None:
        self.closed = True


def route(table: int) -> dict[str, Any]:
    return {"event": "RTM_NEWROUTE", "table": table}


def run_watcher(sockets: list[FakeSocket], states: list[NetState], seconds: float
                ) -> tuple[NetlinkWatcher, list[Any]]:
    """Run a watcher over `sockets` (one per open) and `states` (one per dump, the last
    repeated) for `seconds` of fake time."""
    opened: list[FakeSocket] = []

    async def fake_open(_netns: str | None) -> FakeSocket:
        opened.append(sockets.pop(0))
        return opened[-1]

    async def fake_dump(_ipr: Any) -> NetState:
        return states.pop(0) if len(states) > 1 else states[0]

    published: list[NetState] = []

    async def main() -> NetlinkWatcher:
        clock = FakeClock()
        watcher = NetlinkWatcher(settle=0.0, clock=clock, open_socket=fake_open,
                                 dump=fake_dump)
        watcher.add_callback(published.append)
        task = asyncio.create_task(watcher.run())
        await clock.advance(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return watcher

    watcher = asyncio.run(main())
    assert all(s.closed for s in opened)
    return watcher, published


A = NetState("eth0", {"eth0": ("192.0.2.1/24",)})
B = NetState("eth1", {"eth1": ("198.51.100.2/24",)})


def test_table_220_is_ignored_and_only_changes_are_published() -> None:
    sock = FakeSocket([[route(220)], [route(254)], [route(254)]])
    # dumps: the first state, then one per main-table event (A unchanged, then B); a
    # dump for the table-220 event would shift them and publish A once more at the end
    watcher, published = run_watcher([sock], [A, A, B, A], 0.1)
    assert published == [A, B] and watcher.state == B and watcher.ready.is_set()


def test_enobufs_reopens_and_reads_again() -> None:
    first = FakeSocket([OSError(errno.ENOBUFS, "No buffer space available")])
    second = FakeSocket([])
    watcher, published = run_watcher([first, second], [A, B], 0.1)
    assert watcher.resyncs == 1 and published == [A, B]


def test_other_failures_are_retried_after_a_backoff() -> None:
    first = FakeSocket([OSError(errno.EBADF, "Bad file descriptor")])
    second = FakeSocket([])
    watcher, published = run_watcher([first, second], [A, B], 0.99)
    assert published == [A]  # the retry waits 1 s
    first = FakeSocket([OSError(errno.EBADF, "Bad file descriptor")])
    watcher, published = run_watcher([first, FakeSocket([])], [A, B], 1.0)
    assert watcher.resyncs == 0 and published == [A, B]
