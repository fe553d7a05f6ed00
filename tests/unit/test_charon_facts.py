"""Restart detection from `stats` must not fire on charon's one-second jitter."""

from swand.core.charon import charon_start_time, is_restart


def stats(since: str) -> dict:
    return {"uptime": {"running": "3 seconds", "since": since}}


def test_jitter_of_one_second_is_the_same_process():
    a = charon_start_time(stats("Nov 26 17:45:29 2026"))
    b = charon_start_time(stats("Nov 26 17:45:30 2026"))
    assert a is not None and b is not None
    assert not is_restart(a, b)


def test_a_later_start_is_a_restart():
    a = charon_start_time(stats("Nov 26 17:45:29 2026"))
    b = charon_start_time(stats("Nov 26 17:46:02 2026"))
    assert is_restart(a, b)


def test_missing_or_garbled_since_is_no_evidence():
    assert charon_start_time({}) is None
    assert charon_start_time(stats("yesterday")) is None
    assert not is_restart(None, 5.0) and not is_restart(5.0, None)
