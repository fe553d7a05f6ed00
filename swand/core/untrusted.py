"""Client-controlled input in charon's replies and events: skip what cannot be read.

Everything charon reports about a client is chosen by that client: its traffic selectors,
identities, EAP names, addresses seen behind a NAT, the proposals it offered. An
authenticated client can therefore hand swand any text charon is willing to print. The
rule every parser of charon's replies and events follows:

    one SA swand cannot understand is skipped, logged once and counted
    (``swand_unparsable_sas_total{component}``); it never fails the firewall pass, the
    metrics poll or the event handling for the other SAs.

Parsers take an optional ``on_skip`` callback and call it with an `Unparsable` for each
SA they leave out; the runtime passes one that logs the first sighting of each SA and
counts it (`UnparsableLedger` decides what is a first sighting, with bounded memory).

`valid_text()` is the other half: text kept from charon (surrogate-escaped bytes that are
not UTF-8) is made valid Unicode before it reaches a metric label or a terminal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: the parts of swand that read charon's replies, as the metric's `component` label
COMPONENTS = ("events", "firewall", "metrics", "status", "ndp", "routes")
#: how much of an offending value a log line shows (a 64 KiB value would flood the log)
SHOWN_CHARS = 120


@dataclass(frozen=True, slots=True)
class Unparsable:
    """One SA a parser left out, and why (every field is safe to log)."""

    component: str
    #: which SA: its connection name and unique id as charon reported them
    sa: str
    #: what could not be read (``local-ts``, ``reqid``, ``child-sas.net``...)
    field: str
    error: str


SkipFn = Callable[[Unparsable], None]


def ignore_skip(_item: Unparsable) -> None:
    """The default `on_skip`: a caller that does not report (tests, one-shot tools)."""


def shown(value: object) -> str:
    """`value` as a short, printable, valid text for a log line or an error."""
    text = valid_text(value if isinstance(value, str) else repr(value))
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def sa_name(conn: object, body: object) -> str:
    """How a log line names an IKE_SA: ``conn #uniqueid`` (either part may be hostile;
    a pool or certificate has no unique id and is named alone)."""
    uid = body.get("uniqueid") if isinstance(body, Mapping) else None
    return shown(conn) if uid is None else f"{shown(conn)} #{shown(uid)}"


def unparsable(component: str, conn: object, body: object, field: str,
               exc: BaseException) -> Unparsable:
    """An `Unparsable` for the SA `conn` whose VICI section is `body`."""
    return Unparsable(component, sa_name(conn, body), field,
                      shown(f"{type(exc).__name__}: {exc}"))


def valid_text(value: str) -> str:
    """`value` as valid Unicode: lone surrogates (bytes charon sent that are not UTF-8,
    kept by the VICI decoder's ``surrogateescape``) become U+FFFD, everything else is
    kept. Encoding such a string as UTF-8 raises, so one of them in a metric label would
    fail every scrape and in ``swand status`` the whole table."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


class UnparsableLedger:
    """Which unparsable SAs were reported already, and how many per component.

    An SA stays unparsable for its whole life and every firewall pass and metrics poll
    meets it again: it is logged and counted the first time only. The memory of what was
    reported is bounded (`remember` SAs, oldest forgotten first), so a client that
    reconnects with fresh unique ids cannot grow it; a forgotten SA seen again is simply
    reported again.
    """

    def __init__(self, remember: int = 4096) -> None:
        self.remember = remember
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._counts: dict[str, int] = dict.fromkeys(COMPONENTS, 0)

    def note(self, item: Unparsable) -> bool:
        """Record `item`; True the first time its (component, SA) is seen."""
        key = (item.component, item.sa)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        self._counts[item.component] = self._counts.get(item.component, 0) + 1
        return True

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

