"""Turning the port and protocol names charon prints back into numbers, exactly.

charon prints a traffic selector's protocol with ``getprotobynumber()`` (its number when
the lookup fails) and a *single* port with ``getservbyport(port, protocol name)``: the
primary name of the first /etc/services entry for that port and protocol (any protocol
when the protocol was printed as a number), or the number. A range is always printed as
``from-to`` in decimal (strongSwan's traffic_selector.c).

So a printed port is a service name first -- names contain dashes (``x11-1``,
``http-alt``) and aliases point elsewhere (``dicom`` is 11112's primary name and 104's
alias) -- and only then a number or a range. ``getservbyname()`` answers the wrong
question (it also matches aliases, and the first entry *named* so rather than the entry
charon found by port), so the table here is built the way ``getservbyport`` searches.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SERVICES_FILE = Path("/etc/services")

#: the protocol names swand writes into rules, by number (iptables-save's spelling);
#: any other protocol is written as its number, which every backend takes
PROTOCOL_NAMES: dict[int, str] = {
    1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp", 51: "ah",
    58: "ipv6-icmp", 132: "sctp", 136: "udplite",
}
_PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOL_NAMES.items()}


#: `ServiceNames.any_proto`'s value for a name several ports are printed as
AMBIGUOUS = -1


class SelectorNameError(ValueError):
    """A protocol or port name that does not resolve to what charon meant."""


@dataclass(frozen=True)
class ServiceNames:
    """Port numbers by the name ``getservbyport`` gives them (see the module docstring).

    `by_proto[(name, proto)]` answers for a protocol charon printed by name,
    `any_proto[name]` for one it printed as a number (``getservbyport(port, NULL)``:
    the first entry of any protocol, so ``echo`` may be 4/ddp or 7/tcp; such a name is
    `AMBIGUOUS` and refused rather than guessed).
    """

    by_proto: dict[tuple[str, str], int] = field(default_factory=dict)
    any_proto: dict[str, int] = field(default_factory=dict)

    def port(self, name: str, proto: str | None) -> int | None:
        """The port charon printed as `name`; None when it is not a name (or is
        ambiguous; raises SelectorNameError then)."""
        port = self.any_proto.get(name) if proto is None else self.by_proto.get((name, proto))
        if port == AMBIGUOUS:
            raise SelectorNameError(f"port name {name!r} printed without a protocol name "
                                    "stands for several ports")
        return port


def parse_services(text: str) -> ServiceNames:
    """The `ServiceNames` of an /etc/services text (``name port/proto [aliases] [#...]``)."""
    by_proto: dict[tuple[str, str], int] = {}
    any_proto: dict[str, int] = {}
    first_by_proto: set[tuple[int, str]] = set()
    first_any: set[int] = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        number, _, proto = words[1].partition("/")
        if not _decimal(number) or not proto or not 0 <= int(number) <= 0xFFFF:
            continue
        name, port = words[0], int(number)
        if (port, proto) not in first_by_proto:
            first_by_proto.add((port, proto))
            by_proto.setdefault((name, proto), port)
        if port not in first_any:
            first_any.add(port)
            known = any_proto.setdefault(name, port)
            if known != port:
                any_proto[name] = AMBIGUOUS
    return ServiceNames(by_proto, any_proto)


@lru_cache(maxsize=1)
def system_services() -> ServiceNames:
    """This host's /etc/services (charon runs here and printed from the same file); an
    empty table when there is none (then charon printed numbers too)."""
    try:
        text = SERVICES_FILE.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ServiceNames()
    return parse_services(text)


def protocol_name(printed: str) -> str:
    """A protocol as charon printed it -> how rules name it: the name of `PROTOCOL_NAMES`
    when it has one, else the number (``253``). Raises SelectorNameError."""
    if _decimal(printed):
        number = int(printed)
    else:
        lower = printed.lower()
        if lower in _PROTOCOL_NUMBERS:
            return lower
        try:
            number = socket.getprotobyname(printed)
        except (OSError, ValueError):  # unknown; NUL or a lone surrogate in the name
            raise SelectorNameError(f"unknown protocol {printed!r}") from None
    if not 0 <= number <= 255:
        raise SelectorNameError(f"protocol {number} is not 0..255")
    return PROTOCOL_NAMES.get(number, str(number))


def port_range(printed: str, proto: str | None, services: ServiceNames) -> str:
    """A port selector as charon printed it -> ``80`` or ``6000:6010`` (iptables' range
    syntax). `proto` is the protocol as charon printed it (None: printed as a number, or
    absent). Raises SelectorNameError."""
    named = services.port(printed, proto)
    if named is not None:
        return str(named)
    first, dash, last = printed.partition("-")
    if _decimal(first) and (not dash or _decimal(last)):
        low, high = int(first), int(last) if dash else int(first)
        if low <= high <= 0xFFFF:
            return f"{low}:{high}" if dash else str(low)
    raise SelectorNameError(f"unknown port {printed!r}"
                            + (f" for protocol {proto}" if proto else ""))


def _decimal(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()
