"""The firewall backend interface: what the reconciler needs from legacy iptables and
nftables alike, the report of one pass, and the single worker thread both run on.

python-iptables (libiptc) and libnftables keep per-handle state and are not thread-safe;
a backend hands every call to its own single worker thread, so the event loop never
blocks on a table commit and the library only ever sees one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from swand.core.firewall import DesiredFirewall

T = TypeVar("T")


class FirewallBackendError(Exception):
    """The backend cannot (or must not) program the firewall; the message says why."""


@dataclass(frozen=True)
class ApplyReport:
    """What one pass did: tables committed, rules inserted/deleted, how long it took."""

    backend: str
    changed_tables: tuple[str, ...] = ()
    inserted: int = 0
    deleted: int = 0
    chains_created: int = 0
    chains_deleted: int = 0
    rules_desired: int = 0
    seconds: float = 0.0
    attempts: int = 1

    @property
    def changed(self) -> bool:
        return bool(self.changed_tables)


class FirewallBackend(Protocol):
    """What the reconciler needs from a firewall backend (legacy iptables, nftables)."""

    @property
    def name(self) -> str:
        """``legacy`` or ``nftables`` (logged, reported, compared at a switch)."""
        ...

    async def apply(self, desired: DesiredFirewall) -> ApplyReport:
        """Make the kernel hold exactly `desired` in swand's chains; write nothing when it
        already does."""
        ...

    async def flush(self) -> ApplyReport:
        """Remove everything swand owns."""
        ...

    async def close(self) -> None:
        """Release the backend; the rules stay."""
        ...


class ThreadedBackend:
    """Base of the firewall backends: `apply_sync` runs on the worker thread.

    `observe()` (each backend's own: the tags of every rule swand owns, shaped per
    backend) is for tests and status, hence not part of `FirewallBackend`."""

    name = ""
    thread_name = "swand-fw"

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=self.thread_name)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def apply_sync(self, desired: DesiredFirewall) -> ApplyReport:  # pragma: no cover
        raise NotImplementedError

    async def apply(self, desired: DesiredFirewall) -> ApplyReport:
        """Make the kernel match `desired`; writes nothing when it already does."""
        return await self._run(self.apply_sync, desired)

    async def flush(self) -> ApplyReport:
        """Remove everything this backend owns."""
        return await self._run(self.apply_sync, DesiredFirewall({}))

    async def close(self) -> None:
        """Wait for the call in progress (a commit runs to its end) without blocking the
        loop: it may wait on the xtables lock for seconds."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
