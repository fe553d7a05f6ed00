"""Reporting the SAs that parsers of charon's replies skipped (`swand.core.untrusted`).

One process-wide ledger, so an SA the firewall, the metrics poller and the event watcher
all meet is logged once per component, however often they meet it, and counted for
``swand_unparsable_sas_total{component}``. Parsers run on the loop and on worker threads
(the metrics poller parses off the loop), hence the lock.
"""

from __future__ import annotations

import threading

from swand.core.untrusted import Unparsable, UnparsableLedger
from swand.log import get_logger

log = get_logger("swand.untrusted")

_lock = threading.Lock()
_ledger = UnparsableLedger()


def report_unparsable(item: Unparsable) -> None:
    """An `on_skip` for the daemon: log the first sighting of each SA, count it."""
    with _lock:
        first = _ledger.note(item)
    if first:
        log.warning("sa_unparsable", component=item.component, sa=item.sa,
                    field=item.field, error=item.error,
                    effect="skipped: everything else is handled as usual")


def unparsable_counts() -> dict[str, int]:
    """SAs skipped so far, by component (every component present, 0 when none)."""
    with _lock:
        return _ledger.counts()


def reset_unparsable() -> None:
    """Forget everything (tests)."""
    global _ledger
    with _lock:
        _ledger = UnparsableLedger()
