"""Run `swand run` inside a lab host's namespace and read its JSON log.

Used by the integration tests and by `swand demo`: the daemon under test is the real
command line, started the way systemd starts it, not an object in the test's process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swand.lab.util import LabError, wait_for

if TYPE_CHECKING:
    from swand.lab.lab import Host


def swand_toml(host: Host, *, firewall: bool = False, metrics: str = "",
               interval: float = 2.0, extra: str = "", firewall_extra: str = "") -> str:
    """A swand.toml pointing at the host's charon and swanctl folder (`firewall_extra`:
    more key lines for [firewall], `extra`: more sections)."""
    return (
        f'[charon]\nvici = "{host.vici_uri}"\ninterval = {interval}\n'
        f'[swanctl]\ndir = "{host.swanctl_dir}"\n'
        f'[firewall]\nenabled = {"true" if firewall else "false"}\ninterval = {interval}\n'
        f"{firewall_extra}"
        f'[metrics]\nlisten = "{metrics}"\n'
        f'state_file = "{host.workdir}/last-downs.json"\n'
        f'[log]\nformat = "json"\nlevel = "debug"\n'
        f"{extra}"
    )


class SwandProcess:
    """One `swand run` in a host's namespace; its log goes to `<host>/swand.log`."""

    def __init__(self, host: Host, toml: str, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.host = host
        self.config_path = Path(host.workdir) / "swand.toml"
        self.config_path.write_text(toml)
        self.log_path = Path(host.workdir) / "swand.log"
        self._log = self.log_path.open("ab")
        self.proc: subprocess.Popen[Any] = host.popen(
            [sys.executable, "-m", "swand", "run", "-c", str(self.config_path), *args],
            stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
        )

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (other lines, e.g. tracebacks, as {"raw": ...})."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event
                and all(e.get(k) == v for k, v in match.items())]

    def wait_for_event(self, event: str, timeout: float = 10.0, after: int = 0,
                       predicate: Callable[[dict[str, Any]], bool] | None = None,
                       **match: Any) -> dict[str, Any]:
        """The first `event` logged after the first `after` matches."""
        def probe() -> dict[str, Any] | None:
            self.check_alive()
            found = [e for e in self.find(event, **match) if predicate is None or predicate(e)]
            return found[after] if len(found) > after else None
        return wait_for(probe, timeout, message=lambda: f"swand log event {event!r} "
                        f"{match or ''}; log tail:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise LabError(f"swand exited with {self.proc.returncode}:\n{self.tail()}")

    def sighup(self) -> None:
        self.check_alive()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time (and say so)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self._log.close()
                raise LabError(f"swand did not stop within {timeout}s:\n{self.tail()}") from None
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> SwandProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_swand(host: Host, *, wait_ready: bool = True, timeout: float = 15.0,
                args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                **toml: Any) -> SwandProcess:
    """Start `swand run` on `host`, by default waiting for its first config pass."""
    proc = SwandProcess(host, swand_toml(host, **toml), args, env)
    if wait_ready:
        started = time.monotonic()
        proc.wait_for_event("config_reconciled", timeout=timeout)
        proc.ready_after = time.monotonic() - started  # type: ignore[attr-defined]
    return proc
