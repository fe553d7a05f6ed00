"""The one backoff rule (swand.core.backoff) and the clocks every timed decision uses."""

from __future__ import annotations

import asyncio

import pytest

from swand.clock import FakeClock
from swand.core.backoff import Backoff


def test_keepalives_backoff_doubles_to_a_minute_with_jitter() -> None:
    steady = Backoff(1.0, 60.0, jitter=0.2, rand=lambda lo, hi: 1.0)
    assert [steady.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    low = Backoff(1.0, 60.0, jitter=0.2, rand=lambda lo, hi: lo)
    assert low.next_delay() == pytest.approx(0.8)
    high = Backoff(1.0, 60.0, jitter=0.2, rand=lambda lo, hi: hi)
    assert high.next_delay() == pytest.approx(1.2)


def test_a_success_starts_the_backoff_afresh() -> None:
    backoff = Backoff(0.2, 5.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.2


def test_a_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(0.005, 0.1)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 0.1


@pytest.mark.parametrize(("initial", "jitter"), [(0.0, 0.1), (-1.0, 0.0), (1.0, 1.0)])
def test_nonsense_is_refused(initial: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, 10.0, jitter=jitter)


def test_the_fake_clock_fires_timers_in_order_and_only_when_due() -> None:
    async def main() -> list[tuple[str, float]]:
        clock = FakeClock()
        fired: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            fired.append((name, clock.monotonic() - 1000.0))

        tasks = [asyncio.create_task(sleeper("late", 2.0)),
                 asyncio.create_task(sleeper("early", 1.0))]
        clock.call_later(1.5, lambda: fired.append(("timer", clock.monotonic() - 1000.0)))
        cancelled = clock.call_later(1.2, lambda: fired.append(("cancelled", 0.0)))
        cancelled.cancel()
        await clock.advance(0.999)
        assert fired == []
        await clock.advance(5.0)
        await asyncio.gather(*tasks)
        return fired

    assert asyncio.run(main()) == [("early", 1.0), ("timer", 1.5), ("late", 2.0)]


def test_the_fake_clocks_wait_any_returns_on_an_event_or_the_timeout() -> None:
    async def main() -> None:
        clock = FakeClock()
        event = asyncio.Event()
        waiting = asyncio.create_task(clock.wait_any([event], 10.0))
        await clock.advance(9.0)
        assert not waiting.done()
        event.set()
        await clock.run_loop()
        assert waiting.result() is True
        event.clear()
        waiting = asyncio.create_task(clock.wait_any([event], 10.0))
        await clock.advance(10.0)
        assert waiting.result() is False
        assert clock.pending() == []

    asyncio.run(main())
