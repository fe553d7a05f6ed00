"""The bounded-frequency runner: coalescing, rate limit, periodic pass, backoff."""

from __future__ import annotations

import asyncio
import itertools
import time

from swand.runtime.runner import BoundedFrequencyRunner, PassRequest


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_pokes_coalesce_into_one_pass():
    seen: list[PassRequest] = []

    async def scenario():
        async def pass_fn(req):
            seen.append(req)

        r = BoundedFrequencyRunner("t", pass_fn, min_interval=0.05, max_interval=60)
        r.poke("a")
        r.poke("b", full=True)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.02)
        await r.wait_idle()
        task.cancel()

    run(scenario())
    assert len(seen) == 1
    assert seen[0].reasons == {"a", "b"} and seen[0].full


def test_min_interval_is_respected():
    starts: list[float] = []

    async def scenario():
        async def pass_fn(_req):
            starts.append(time.monotonic())

        r = BoundedFrequencyRunner("t", pass_fn, min_interval=0.2, max_interval=60)
        task = asyncio.create_task(r.run())
        for _ in range(3):
            r.poke("x")
            await asyncio.sleep(0.01)
            await r.wait_idle()
        task.cancel()

    run(scenario())
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.19 for g in gaps), gaps


def test_periodic_pass_without_pokes():
    count = 0

    async def scenario():
        nonlocal count

        async def pass_fn(req):
            nonlocal count
            assert "periodic" in req.reasons
            count += 1

        r = BoundedFrequencyRunner("t", pass_fn, min_interval=0.0, max_interval=0.05)
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.3)
        task.cancel()

    run(scenario())
    assert count >= 3


def test_failure_retries_with_backoff_and_full_pass():
    seen: list[PassRequest] = []

    async def scenario():
        async def pass_fn(req):
            seen.append(req)
            if len(seen) < 3:
                raise RuntimeError("charon said no")

        r = BoundedFrequencyRunner(
            "t", pass_fn, min_interval=0.0, max_interval=60, backoff_initial=0.05
        )
        r.poke("start")
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.02)
        await r.wait_idle()
        task.cancel()
        assert r.failed_passes == 2 and r.last_success is not None

    run(scenario())
    assert len(seen) == 3
    assert seen[1].full and "retry" in seen[1].reasons


def test_the_retry_delay_logged_is_the_one_waited():
    """`retry_in` in the 'pass failed' line is what an operator reads: the retry must
    come after that delay, not after a second, differently jittered one."""
    from structlog.testing import capture_logs

    starts: list[float] = []
    delays = iter([0.05, 0.6, 0.6, 0.6])

    async def scenario():
        async def pass_fn(_req):
            starts.append(time.monotonic())
            if len(starts) == 1:
                raise RuntimeError("charon said no")

        r = BoundedFrequencyRunner("t", pass_fn, min_interval=0.0, max_interval=60)
        r._backoff_delay = lambda: next(delays)  # type: ignore[method-assign]
        r.poke("start")
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.02)
        await r.wait_idle()
        task.cancel()

    with capture_logs() as logs:
        run(scenario())
    (failed,) = [e for e in logs if e["event"] == "pass failed"]
    assert failed["retry_in"] == 0.05
    assert len(starts) == 2 and 0.04 <= starts[1] - starts[0] < 0.5, starts
