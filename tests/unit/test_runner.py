"""The bounded-frequency runner: coalescing, rate limit, periodic pass, backoff.

Time is a `FakeClock`: each test says when time moves, nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from structlog.testing import capture_logs

from swand.clock import FakeClock
from swand.runtime.runner import BoundedFrequencyRunner, PassRequest


def run(scenario: Callable[[FakeClock], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(scenario(FakeClock()), 10)

    asyncio.run(main())


def start(runner: BoundedFrequencyRunner) -> asyncio.Task[None]:
    return asyncio.create_task(runner.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def recorder(clock: FakeClock, seen: list[tuple[float, PassRequest]],
             fail_first: int = 0) -> Callable[[PassRequest], Coroutine[Any, Any, None]]:
    async def pass_fn(req: PassRequest) -> None:
        seen.append((clock.monotonic(), req))
        if len(seen) <= fail_first:
            raise RuntimeError("charon said no")

    return pass_fn


def test_pokes_coalesce_into_one_pass() -> None:
    seen: list[tuple[float, PassRequest]] = []

    async def scenario(clock: FakeClock) -> None:
        r = BoundedFrequencyRunner("t", recorder(clock, seen), min_interval=0.05,
                                   max_interval=60, clock=clock)
        r.poke("a")
        r.poke("b", full=True)
        task = start(r)
        await r.wait_idle()
        await stop(task)

    run(scenario)
    assert len(seen) == 1
    assert seen[0][1].reasons == {"a", "b"} and seen[0][1].full


def test_min_interval_is_respected() -> None:
    seen: list[tuple[float, PassRequest]] = []

    async def scenario(clock: FakeClock) -> None:
        r = BoundedFrequencyRunner("t", recorder(clock, seen), min_interval=0.2,
                                   max_interval=60, clock=clock)
        task = start(r)
        r.poke("x")
        await r.wait_idle()
        r.poke("y")
        await clock.advance(0.19)
        assert len(seen) == 1  # 0.19 s after the first pass: still waiting
        await clock.advance(0.01)
        await r.wait_idle()
        assert len(seen) == 2
        await stop(task)

    run(scenario)
    assert seen[1][0] - seen[0][0] == pytest.approx(0.2)


def pass_starts_under_pokes(
    one_pass: Callable[[FakeClock, int], Awaitable[None]],
    cpu_time: Callable[[FakeClock], Callable[[], float]], pokes: int,
) -> list[float]:
    """When each pass started while an SA event pokes the runner every 0.1 s; pass n
    (from 1) runs `one_pass(clock, n)`, the process's CPU time is `cpu_time(clock)`."""
    starts: list[float] = []

    async def scenario(clock: FakeClock) -> None:
        async def pass_fn(req: PassRequest) -> None:
            starts.append(clock.monotonic())
            await one_pass(clock, len(starts))

        r = BoundedFrequencyRunner("t", pass_fn, min_interval=0.2, max_interval=60,
                                   clock=clock, cpu_time=cpu_time(clock))
        task = start(r)
        for _ in range(pokes):
            r.poke("sa-change")
            await clock.advance(0.1)
        await stop(task)

    run(scenario)
    return starts


def test_long_passes_leave_as_much_time_free_while_pokes_keep_coming() -> None:
    """max_busy 0.5: a pass of 1 s (a whole-table commit of a big legacy rule set) is
    followed by 1 s without a pass, though pokes keep coming; short passes keep
    min_interval."""
    async def slow_pass(clock: FakeClock, n: int) -> None:
        if n <= 2:
            await clock.advance(1.0)  # the pass takes a second

    # the pass computes the whole second: the process's CPU time runs with the clock
    starts = pass_starts_under_pokes(slow_pass, lambda clock: clock.monotonic, 40)
    assert starts[1] - starts[0] == pytest.approx(2.0)  # 1 s pass + 1 s free
    assert starts[2] - starts[1] == pytest.approx(2.0)
    assert starts[3] - starts[2] == pytest.approx(0.2, abs=0.1)  # short again: min_interval


def test_a_pass_that_waited_for_a_core_is_not_followed_by_a_gap() -> None:
    """A reconnect storm: the pass takes 1 s of wall time among busy charons but uses
    0.05 s of CPU; the next one follows at min_interval, not a second later."""
    cpu = [0.0]

    async def waiting_pass(clock: FakeClock, n: int) -> None:
        cpu[0] += 0.05
        await clock.advance(1.0)

    starts = pass_starts_under_pokes(waiting_pass, lambda clock: lambda: cpu[0], 30)
    assert starts[1] - starts[0] == pytest.approx(1.0, abs=0.1)  # right after the pass


def test_periodic_pass_without_pokes() -> None:
    seen: list[tuple[float, PassRequest]] = []

    async def scenario(clock: FakeClock) -> None:
        r = BoundedFrequencyRunner("t", recorder(clock, seen), min_interval=0.0,
                                   max_interval=10.0, clock=clock)
        task = start(r)
        await clock.advance(8.9)  # the earliest periodic pass: 10 s - 10 % jitter
        assert seen == []
        await clock.advance(2.1)  # the latest: 10 s + 10 %
        assert len(seen) == 1
        for passes in (2, 3):  # each 9 to 11 s after the one before
            await clock.advance(11.0)
            assert len(seen) == passes
        await stop(task)

    run(scenario)
    assert len(seen) == 3
    assert all("periodic" in req.reasons and not req.full for _, req in seen)


def test_failure_retries_with_backoff_and_full_pass() -> None:
    seen: list[tuple[float, PassRequest]] = []

    async def scenario(clock: FakeClock) -> None:
        r = BoundedFrequencyRunner("t", recorder(clock, seen, fail_first=2), min_interval=0.0,
                                   max_interval=60, backoff_initial=1.0, jitter=0.0,
                                   clock=clock)
        r.poke("start")
        task = start(r)
        await clock.advance(0.99)
        assert len(seen) == 1  # the first retry: after 1 s
        await clock.advance(0.01)
        assert len(seen) == 2
        await clock.advance(1.99)  # the second: 2 s after the first retry
        assert len(seen) == 2
        await clock.advance(0.01)
        await r.wait_idle()
        assert r.failed_passes == 2 and r.last_success is not None
        await stop(task)

    run(scenario)
    assert len(seen) == 3
    assert seen[1][1].full and "retry" in seen[1][1].reasons


def test_the_retry_delay_logged_is_the_one_waited() -> None:
    """`retry_in` in the 'pass failed' line is what an operator reads: the retry must
    come after that delay, not after a second, differently jittered one."""
    seen: list[tuple[float, PassRequest]] = []

    async def scenario(clock: FakeClock) -> None:
        r = BoundedFrequencyRunner("t", recorder(clock, seen, fail_first=1),
                                   min_interval=0.0, max_interval=60, jitter=0.5, clock=clock)
        r.poke("start")
        task = start(r)
        await clock.run_loop()
        (failed,) = [e for e in logs if e["event"] == "pass failed"]
        await clock.advance(failed["retry_in"] - 0.01)
        assert len(seen) == 1
        await clock.advance(0.02)
        assert len(seen) == 2
        await stop(task)

    with capture_logs() as logs:
        run(scenario)
