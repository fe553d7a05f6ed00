"""The live SAs the per-SA reconcilers (firewall, NDP proxy, routes) act on: the event
watcher's `PeerTable`, read without asking charon.

Why: a pass used to re-read every SA with a blocking ``list-sas`` on the shared query
connection (where it also waited behind a metrics poll in flight), and every SA event
asks for a pass: in a 1,000-client storm passes took 0.3-2.6 s. The watcher's table
already holds every live IKE_SA, kept from the SA events and resynchronised from
``list-sas`` on each (re)connect and after a queue overflow, so a pass now reads it (no
I/O) and derives what it needs once per changed IKE_SA (`PerSa`): the table replaces an
`IkeSa` object whenever anything of it changes, so an object seen before has the same
derived inputs as before.

Until the watcher's first resync the table is empty, which does not mean "no SAs": a pass
acting on it would delete every adopted forward rule at swand's start. `live_sas` waits
for the first resync (the pass goes on the moment it is done: no retry delay, no error
line at every start) and, if charon does not answer within `READY_WAIT`, fails the pass
instead (fail static, the runner retries with backoff, and the failure is visible).

No settle hold is needed on this input (the snapshots say ``settling=False``): a
``list-sas`` could catch an IKE rekey half-way (the old SA listed without its children,
the new one not yet), but the table applies an ``ike-rekey`` as one move of the children,
and a make-before-break reauthentication's new SA is up before the old one goes down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from swand.clock import Clock
from swand.core.events import IkeSa, PeerTable
from swand.core.leases import Lease, sa_leases
from swand.core.untrusted import unparsable
from swand.runtime.untrusted import report_unparsable

#: how long a pass waits for the event watcher's first resync before it fails
READY_WAIT = 10.0
#: how often a waiting pass asks its `give_up` predicate
GIVE_UP_CHECK = 0.25

T = TypeVar("T")


class SaTableNotReady(Exception):
    """The event watcher has not read charon's SAs yet: a pass must change nothing."""


class SaSource(Protocol):
    """What the reconcilers read of `swand.runtime.events.EventWatcher`."""

    @property
    def ready(self) -> asyncio.Event: ...

    @property
    def table(self) -> PeerTable: ...

    @property
    def last_stats(self) -> dict[str, Any]: ...


async def live_sas(source: SaSource, clock: Clock,
                   give_up: Callable[[], bool] | None = None) -> Mapping[str, IkeSa]:
    """The live IKE_SAs by unique id, once the watcher has resynchronised at least once
    (SaTableNotReady after `READY_WAIT` without it, or as soon as `give_up()` says
    waiting is pointless: the routes' "charon is down")."""
    waited = 0.0
    while not source.ready.is_set():
        if waited >= READY_WAIT or (give_up is not None and give_up()):
            raise SaTableNotReady(
                "charon's SAs are not read yet (the event watcher has not reached "
                "charon): nothing changed, retrying")
        step = GIVE_UP_CHECK if give_up is not None else READY_WAIT
        await clock.wait_any([source.ready], step)
        waited += step
    return source.table.current()


def charon_plugins(source: SaSource) -> tuple[str, ...]:
    """charon's loaded plugins, from the `stats` of the watcher's last resync (they only
    change when charon restarts, which is followed by a resync)."""
    return tuple(str(p) for p in source.last_stats.get("plugins") or ())


class PerSa(Generic[T]):
    """A per-IKE_SA derivation (its forwarding CHILD_SAs, its leases) over the live table,
    computed only for the IKE_SAs that are new or changed since the last call.

    `derive` returns the SA's items, or None when the SA cannot be read (it reported
    that itself; the SA is counted in `skipped` and contributes nothing)."""

    def __init__(self, derive: Callable[[IkeSa], tuple[T, ...] | None]) -> None:
        self._derive = derive
        self._cache: dict[str, tuple[IkeSa, tuple[T, ...] | None]] = {}
        #: SAs of the last call that could not be read
        self.skipped = 0
        #: how many times `derive` ran (tests: the work follows the changes)
        self.derived = 0

    def __call__(self, live: Mapping[str, IkeSa]) -> tuple[T, ...]:
        cache = self._cache
        fresh: dict[str, tuple[IkeSa, tuple[T, ...] | None]] = {}
        out: list[T] = []
        skipped = 0
        for uid, sa in live.items():
            hit = cache.get(uid)
            if hit is None or hit[0] is not sa:
                hit = (sa, self._derive(sa))
                self.derived += 1
            fresh[uid] = hit
            if hit[1] is None:
                skipped += 1
            else:
                out += hit[1]
        self._cache = fresh  # SAs gone from the table are forgotten here
        self.skipped = skipped
        return tuple(out)


def readable_leases(need_child_sa: bool, component: str
                    ) -> Callable[[IkeSa], tuple[Lease, ...] | None]:
    """`sa_leases` for `PerSa`: None (reported once, by `report_unparsable`) for an SA
    whose virtual IPs cannot be read."""

    def leases(sa: IkeSa) -> tuple[Lease, ...] | None:
        try:
            return sa_leases(sa, need_child_sa=need_child_sa)
        except ValueError as exc:
            report_unparsable(unparsable(component, sa.conn, {"uniqueid": sa.uniqueid},
                                         "remote-vips", exc))
            return None

    return leases
