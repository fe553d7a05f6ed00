"""strongSwan's settings syntax (swanctl.conf, strongswan.conf) parsed into a tree that
remembers where every value came from, so errors can name the file and line.

Semantics follow libstrongswan's settings parser: nested `name { ... }` sections,
`key = value`, quoting and escapes, `#` comments, `include` with globs relative to the
including file, section references (`name : ref1, ref2 { ... }`), duplicate sections merge
and a later key replaces an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Origin:
    """Where a section or value was written."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class SettingsError(Exception):
    """A file that cannot be parsed. `str()` is `FILE:LINE: message`."""

    def __init__(self, origin: Origin, message: str) -> None:
        super().__init__(f"{origin}: {message}")
        self.origin = origin
        self.message = message


@dataclass(frozen=True)
class Setting:
    key: str
    value: str
    origin: Origin


@dataclass
class Section:
    """A section of the tree. `settings` and `sections` keep the order of first
    appearance, as libstrongswan's enumerators do."""

    name: str
    origin: Origin
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
