"""Facts about the charon in front of us, derived from its replies.

charon's `stats` reports its start as `since`, computed as "now minus running time" at one
second resolution, so two replies from the same process can differ by a second. A restart
is therefore a start time that moved by more than `START_TIME_TOLERANCE`; a quicker
restart is still noticed because it breaks every VICI connection.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

START_TIME_TOLERANCE = 2.0


def parse_charon_time(text: str) -> float | None:
    """charon's `%T` time ("Nov 26 17:27:21 2026", local time) as a Unix timestamp."""
    text = " ".join(text.split())
    if not text:
        return None
    for fmt in ("%b %d %H:%M:%S %Y", "%b %d %H:%M:%S %Y %Z"):
        try:
            return float(time.mktime(time.strptime(text, fmt)))
        except ValueError:
            continue
    return None


def charon_start_time(stats: Mapping[str, Any]) -> float | None:
    """The Unix time charon started, from a `stats` reply (None when absent)."""
    uptime = stats.get("uptime")
    if not isinstance(uptime, Mapping):
        return None
    since = uptime.get("since")
    return parse_charon_time(since) if isinstance(since, str) else None


def is_restart(previous: float | None, current: float | None) -> bool:
    """True when two start times belong to different charon processes."""
    if previous is None or current is None:
        return False
    return abs(current - previous) > START_TIME_TOLERANCE
