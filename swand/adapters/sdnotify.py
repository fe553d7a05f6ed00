"""sd_notify without libsystemd: one datagram per state change to `$NOTIFY_SOCKET`.

The protocol is small and stable (sd_notify(3)): newline-separated `KEY=VALUE` lines in
one datagram sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`; a name starting with `@`
is in the abstract namespace. Writing it ourselves avoids a C dependency and a second
package in a security daemon's image.

Everything is a no-op when not started by systemd (no `$NOTIFY_SOCKET`), so the daemon
calls these unconditionally. Sending never blocks the event loop: the socket is
non-blocking and a datagram that cannot be queued is dropped and reported as `False`
(systemd reads promptly; the next watchdog ping follows soon).

Use from the daemon:
    notify = SdNotify.from_environment()
    ... first complete load and reconcile ...
    notify.ready("3 connections loaded")
    interval = notify.watchdog_interval()      # None: no watchdog
    # ping notify.watchdog() every `interval` seconds *from the event loop*
    notify.reloading(); ...reload...; notify.ready()
    notify.stopping()
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, as systemd compares it with its own clock for RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(name: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` as an address for sendto(); `@name` is abstract (leading NUL)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # vsock:... and other forms systemd may use for VMs: not supported here


class SdNotify:
    """A notifier bound to one `$NOTIFY_SOCKET` (or to nothing: every call a no-op)."""

    def __init__(self, notify_socket: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(notify_socket) if notify_socket else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SdNotify:
        """Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as sd_watchdog_enabled()
        does: a watchdog meant for another PID (a parent that forked us) is not ours."""
        env = os.environ if environ is None else environ
        watchdog_usec: int | None = None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            usec = 0
        if usec > 0:
            pid = env.get("WATCHDOG_PID", "")
            if not pid or pid == str(os.getpid()):
                watchdog_usec = usec
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of `WatchdogSec`, as sd_watchdog_enabled(3)
        recommends, or None when no watchdog is armed for this process."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram `KEY=VALUE\\n...`; True when it was queued (or when there is no
        socket to send to, so callers need not care)."""
        if self._address is None:
            return True
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")  # one line per field, always
            lines.append(f"{key}={text}")
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError:
            # systemd gone, socket full or not yet there: the next message will retry.
            self.close()
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: after the first complete load and reconcile, and after each reload."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=status)

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (needed by Type=notify-reload, harmless before);
        follow with ready() when the reload is done."""
        fields: dict[str, str | int] = {"RELOADING": 1, "MONOTONIC_USEC": _monotonic_usec()}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun; systemd stops expecting watchdog pings."""
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by `systemctl status swand`."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1: call from the event loop so a stuck loop stops the pings."""
        if self.watchdog_interval() is None:
            return True
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
