"""/proc/sys, read-compare-write.

Writing ``net/ipv4/ip_forward`` resets every interface's IPv4 configuration (accept
redirects, rp_filter, ...) to the defaults in the kernel, and writing any key costs a
syscall and an audit line: a key is written only when its value differs. Keys are paths
below /proc/sys (``net/ipv4/ip_forward``) -- per network namespace for ``net/*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from swand.core.sysctl import sysctl_changes


class SysctlError(Exception):
    """A sysctl that cannot be read or written; the message names it."""


@dataclass(frozen=True)
class SysctlChange:
    key: str
    old: str | None
    new: str


class ProcSysctl:
    """Reads and writes sysctls below `root` (a temporary folder in unit tests)."""

    def __init__(self, root: str | Path = "/proc/sys") -> None:
        self.root = Path(root)

    def read(self, key: str) -> str | None:
        try:
            return (self.root / key).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SysctlError(f"cannot read {key.replace('/', '.')}: {exc.strerror}") from None

    def apply(self, want: Mapping[str, str]) -> list[SysctlChange]:
        """Make every key in `want` hold its value; return what was changed."""
        have = {key: self.read(key) for key in want}
        changes: list[SysctlChange] = []
        for key, value in sysctl_changes(want, have).items():
            path = self.root / key
            if have[key] is None:
                raise SysctlError(f"{key.replace('/', '.')}: no such sysctl in this kernel")
            try:
                path.write_text(value + "\n")
            except OSError as exc:
                raise SysctlError(
                    f"cannot set {key.replace('/', '.')} = {value}: {exc.strerror}"
                ) from None
            changes.append(SysctlChange(key, have[key], value))
        return changes
