"""One dedicated thread for a library that must not be used from two threads.

python-iptables (libiptc) and libnftables keep per-handle state and are not thread-safe;
the firewall backends hand every call to their own single worker thread, so the event
loop never blocks on a table commit and the library only ever sees one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from swand.core.firewall import DesiredFirewall


class ThreadedBackend:
    """Base of the firewall backends: `apply_sync` runs on the worker thread."""

    name = ""
    thread_name = "swand-fw"

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=self.thread_name)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def apply_sync(self, desired: DesiredFirewall) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    async def apply(self, desired: DesiredFirewall) -> Any:
        """Make the kernel match `desired`; writes nothing when it already does."""
        return await self._run(self.apply_sync, desired)

    async def flush(self) -> Any:
        """Remove everything this backend owns."""
        return await self._run(self.apply_sync, DesiredFirewall({}))

    async def close(self) -> None:
        """Wait for the call in progress (a commit runs to its end) without blocking the
        loop: it may wait on the xtables lock for seconds."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
