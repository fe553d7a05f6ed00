"""A `list-sa` message straight from its bytes to the SA model (`IkeSa`, `ChildSa`).

Why: a 100,000-SA gateway's metrics poll is 100,000 of these messages, and the general
path (`swand.adapters.vici.decode_body` into dicts of str, then `IkeSa.from_vici`) spends
~40 us per SA in Python, more than `swanctl --list-sas --raw` needs for everything. This
walk reads the same bytes once, keeps only the values the model reads (a list-sa message
has ~45 elements, the model reads ~20: the others are stepped over, never decoded) and
builds the model without the intermediate dicts.

The contract, checked by tests/unit/test_list_sa.py against that general path as the
oracle: `sas_from_list_sa` returns exactly the SAs `decode_body` + `parse_sas` would
return, or None when the message is not in the plain shape charon sends (a section where
a value is expected, a value where ``child-sas`` is expected, a key that is not UTF-8,
malformed or truncated framing...). On None the caller takes the general path, which
gives the same answer, the same skip-and-count of an SA it cannot read, or the same
protocol error: everything charon reports about a client is the client's to choose, so
nothing here guesses.

Pure: bytes in, SAs out.
"""

from __future__ import annotations

import sys
from typing import Any

from swand.core.events import ChildSa, IkeSa, _names

#: message element types (as in swand.adapters.vici; the walk below spells them as
#: literals: 1 section start, 2 section end, 3 key-value, 4 list start, 5 item, 6 end)
_SECTION_START, _SECTION_END, _KEY_VALUE, _LIST_START, _LIST_ITEM, _LIST_END = range(1, 7)

#: IkeSa / ChildSa fields by the list-sa key they come from: text values, then lists
_IKE_VALUES = ("uniqueid", "state", "local-host", "remote-host", "local-id", "remote-id",
               "remote-eap-id", "remote-xauth-id", "established")
_IKE_LISTS = ("local-vips", "remote-vips", "tasks-active", "tasks-passive")
_CHILD_VALUES = ("name", "uniqueid", "state", "reqid", "bytes-in", "bytes-out",
                 "packets-in", "packets-out", "protocol")
_CHILD_LISTS = ("local-ts", "remote-ts")
#: a key the model does not read (its value is stepped over)
_SKIP = -1
#: a key met as the other kind of element than charon sends it (a list where a value is
#: read, a value where a section is): not plain, the general path decides
_ODD = -2
#: a key no table names yet
_UNKNOWN = -3
#: what charon 5.9.8 / 6.0 put in a list-sa that the model does not read: known valid
#: names, so they need no check; any other name is checked once and remembered
_IKE_OTHERS = ("version", "local-port", "remote-port", "initiator", "initiator-spi",
               "responder-spi", "nat-local", "nat-remote", "nat-fake", "nat-any",
               "if-id-in", "if-id-out", "encr-alg", "encr-keysize", "integ-alg",
               "integ-keysize", "prf-alg", "dh-group", "ppk", "rekey-time", "reauth-time",
               "remote-class", "remote-eap-class", "tasks-queued", "local-class")
_CHILD_OTHERS = ("mode", "encap", "spi-in", "spi-out", "cpi-in", "cpi-out", "mark-in",
                 "mark-mask-in", "mark-out", "mark-mask-out", "if-id-in", "if-id-out",
                 "label", "encr-alg", "encr-keysize", "integ-alg", "integ-keysize",
                 "prf-alg", "dh-group", "esn", "use-in", "use-out", "rekey-time",
                 "life-time", "install-time")
_CHILD_SAS = b"child-sas"
#: the caches below hold names charon (or a client) chose: bounded, like decode_body's
_CACHE_MAX = 4096


def _slots(values: tuple[str, ...], lists: tuple[str, ...], others: tuple[str, ...]
           ) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """(slot of a key met as a key-value, slot of a key met as a list); the list slots
    follow the value slots."""
    as_value = {name.encode(): _SKIP for name in others}
    as_list = dict(as_value)
    for i, name in enumerate(values):
        as_value[name.encode()], as_list[name.encode()] = i, _ODD
    for i, name in enumerate(lists, len(values)):
        as_value[name.encode()], as_list[name.encode()] = _ODD, i
    as_value[_CHILD_SAS] = as_list[_CHILD_SAS] = _ODD
    return as_value, as_list


_IKE_AS_VALUE, _IKE_AS_LIST = _slots(_IKE_VALUES, _IKE_LISTS, _IKE_OTHERS)
_CHILD_AS_VALUE, _CHILD_AS_LIST = _slots(_CHILD_VALUES, _CHILD_LISTS, _CHILD_OTHERS)
#: what a field absent from the message reads as: b"" and [] give what from_vici gives
#: for an absent key ("" / None / 0 / () ), so the builders below need no None case
_NO_LIST: list[bytes] = []
_IKE_EMPTY: list[Any] = [b""] * len(_IKE_VALUES) + [_NO_LIST] * len(_IKE_LISTS)
_CHILD_EMPTY: list[Any] = [b""] * len(_CHILD_VALUES) + [_NO_LIST] * len(_CHILD_LISTS)
#: raw value -> its interned text, for the fields many SAs share (state, local-host...)
_SHARED: dict[bytes, str] = {}
#: raw list items -> one shared tuple of interned text (tasks, local selectors)
_SHARED_LISTS: dict[tuple[bytes, ...], tuple[str, ...]] = {}
#: raw key (connection, child) -> its text
_KEYS: dict[bytes, str] = {}


class _NotPlain(Exception):
    """The message is not in the shape this walk reads: the general path decides."""


def _key(raw: bytes) -> str:
    """A section's name as decode_body reads it (strict UTF-8: a name that is not
    raises, and so makes the general path raise its protocol error)."""
    name = _KEYS.get(raw)
    if name is None:
        name = raw.decode("utf-8")
        if len(_KEYS) < _CACHE_MAX:
            _KEYS[raw] = name
    return name


def _other(raw: bytes, slot: int, *tables: dict[bytes, int]) -> None:
    """A key met as the other kind (`_ODD`: not plain), or one no table names: checked
    as decode_body checks every key, then stepped over like the known ones."""
    if slot == _ODD:
        raise _NotPlain
    raw.decode("utf-8")  # UnicodeDecodeError (a ValueError): not plain
    for table in tables:
        if len(table) < _CACHE_MAX:
            table[raw] = _SKIP


def _shared(value: bytes, default: str = "") -> str:
    """As events._name (an absent value is b""): one interned copy of a name many SAs
    share; empty, `default`."""
    name = _SHARED.get(value)
    if name is None:
        name = sys.intern(value.decode("utf-8", "surrogateescape"))
        if len(_SHARED) < _CACHE_MAX:
            _SHARED[value] = name
    return name or sys.intern(default)


def _shared_list(items: list[bytes]) -> tuple[str, ...]:
    """As events._names: one tuple of interned text for all SAs that share it."""
    if not items:
        return ()
    key = tuple(items)
    names = _SHARED_LISTS.get(key)
    if names is None:
        names = _names([v.decode("utf-8", "surrogateescape") for v in items])
        if len(_SHARED_LISTS) < _CACHE_MAX:
            _SHARED_LISTS[key] = names
    return names


def _texts(items: list[bytes]) -> tuple[str, ...]:
    """As events._strs: each decoded item is a fresh object of its own already (what
    events.owned_text copies for)."""
    return tuple([v.decode("utf-8", "surrogateescape") for v in items])


def _fields(data: bytes, pos: int, as_value: dict[bytes, int], as_list: dict[bytes, int],
            values: list[Any]) -> tuple[int, int, bytes]:
    """Read key-values and lists into `values` by slot, up to the next section start or
    end: (that element's type, the position after it or its name, the name). A key
    met twice keeps its last value, as the decoded dict does."""
    get_value = as_value.get
    while True:
        kind = data[pos]
        if kind == 3:  # key-value
            end = pos + 2 + data[pos + 1]
            key = data[pos + 2:end]
            pos = end + 2 + ((data[end] << 8) | data[end + 1])
            slot = get_value(key, _UNKNOWN)
            if slot >= 0:
                values[slot] = data[end + 2:pos]
            elif slot != -1:  # not _SKIP: _ODD or _UNKNOWN
                _other(key, slot, as_value, as_list)
        elif kind == 4:  # list
            end = pos + 2 + data[pos + 1]
            key = data[pos + 2:end]
            pos = end
            items: list[bytes] = []
            while data[pos] == 5:
                end = pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])
                items.append(data[pos + 3:end])
                pos = end
            if data[pos] != 6:
                raise _NotPlain
            pos += 1
            slot = as_list.get(key, _UNKNOWN)
            if slot >= 0:
                values[slot] = items
            elif slot != -1:
                _other(key, slot, as_value, as_list)
        elif kind == 2:  # section end
            return kind, pos + 1, b""
        elif kind == 1:  # section start
            end = pos + 2 + data[pos + 1]
            return kind, end, data[pos + 2:end]
        else:
            raise _NotPlain


def _skip_list(data: bytes, pos: int) -> int:
    """The position after a list whose name ends at `pos`."""
    while data[pos] == 5:
        pos += 3 + ((data[pos + 1] << 8) | data[pos + 2])
    if data[pos] != 6:
        raise _NotPlain
    return pos + 1


def _child(data: bytes, pos: int, key: str) -> tuple[ChildSa, int]:
    """One CHILD_SA section (its name read): as ChildSa.from_vici(key, section)."""
    v: list[Any] = _CHILD_EMPTY.copy()
    kind, pos, _ = _fields(data, pos, _CHILD_AS_VALUE, _CHILD_AS_LIST, v)
    if kind != 2:
        raise _NotPlain  # a section inside a CHILD_SA: not what charon sends
    name, uniqueid, state, reqid, b_in, b_out, p_in, p_out, proto, l_ts, r_ts = v
    return ChildSa(
        _SHARED.get(name) or _shared(name, key),
        uniqueid.decode("utf-8", "surrogateescape"),
        _SHARED.get(state) or _shared(state),
        reqid.decode("utf-8", "surrogateescape"),
        # bytes.isdigit is ASCII digits only: events._count's `isascii and isdigit`
        int(b_in) if b_in.isdigit() else 0,
        int(b_out) if b_out.isdigit() else 0,
        int(p_in) if p_in.isdigit() else 0,
        int(p_out) if p_out.isdigit() else 0,
        _shared_list(l_ts),
        _texts(r_ts),
        _SHARED.get(proto) or _shared(proto),
    ), pos


def _children(data: bytes, pos: int) -> tuple[tuple[ChildSa, ...], int]:
    """The ``child-sas`` section (its name read), up to and past its end. A duplicate
    child name keeps its first place and its last value, as a dict does; a value or
    list among the sections is left out, as from_vici leaves it."""
    if data[pos] == 1:  # what charon sends: one CHILD_SA after another
        end = pos + 2 + data[pos + 1]
        key = _key(data[pos + 2:end])
        child, after = _child(data, end, key)
        if data[after] == 2:  # ...and here only one
            return (child,), after + 1
    children: dict[str, ChildSa | None] = {}
    while True:
        kind = data[pos]
        if kind == 2:
            return tuple([c for c in children.values() if c is not None]), pos + 1
        end = pos + 2 + data[pos + 1]
        key = _key(data[pos + 2:end])
        pos = end
        if kind == 1:
            children[key], pos = _child(data, pos, key)
        elif kind == 3:
            pos += 2 + ((data[pos] << 8) | data[pos + 1])
            children[key] = None
        elif kind == 4:
            pos = _skip_list(data, pos)
            children[key] = None
        else:
            raise _NotPlain


def _ike(data: bytes, pos: int, conn: str) -> tuple[IkeSa, int]:
    """One IKE_SA section (its name read): as IkeSa.from_vici(conn, section)."""
    v: list[Any] = _IKE_EMPTY.copy()
    children: tuple[ChildSa, ...] | None = None
    while True:
        kind, pos, key = _fields(data, pos, _IKE_AS_VALUE, _IKE_AS_LIST, v)
        if kind == 2:
            break
        if key != _CHILD_SAS or children is not None:
            raise _NotPlain  # another section, or child-sas twice: the general path
        children, pos = _children(data, pos)
    (uniqueid, state, l_host, r_host, l_id, r_id, r_eap, r_xauth, established,
     l_vips, r_vips, active, passive) = v
    return IkeSa(
        conn,
        uniqueid.decode("utf-8", "surrogateescape"),
        _SHARED.get(state) or _shared(state),
        _SHARED.get(l_host) or _shared(l_host),
        r_host.decode("utf-8", "surrogateescape"),
        _SHARED.get(l_id) or _shared(l_id),
        r_id.decode("utf-8", "surrogateescape"),
        r_eap.decode("utf-8", "surrogateescape"),
        r_xauth.decode("utf-8", "surrogateescape"),
        int(established) if established.isdigit() else None,
        _texts(l_vips) if l_vips else (),
        _texts(r_vips) if r_vips else (),
        _shared_list(active),
        _shared_list(passive),
        children or (),
    ), pos


def sas_from_list_sa(data: bytes, pos: int) -> list[IkeSa] | None:
    """The IKE_SAs of one list-sa message (its body at `data[pos:]`), exactly as
    `decode_body` + `parse_sas` give them; None when the message is not in the plain
    shape (then the caller takes that general path). A duplicate connection name keeps
    its first place and its last value, as the decoded dict does."""
    sas: dict[str, IkeSa | None] = {}
    end = len(data)
    try:
        if data[pos] == 1:  # what charon sends: the message is one IKE_SA
            stop = pos + 2 + data[pos + 1]
            sa, after = _ike(data, stop, sys.intern(_key(data[pos + 2:stop])))
            if after == end:
                return [sa]
        while pos < end:
            kind = data[pos]
            stop = pos + 2 + data[pos + 1]
            conn = _key(data[pos + 2:stop])
            pos = stop
            if kind == 1:
                sas[conn], pos = _ike(data, pos, sys.intern(conn))
            elif kind == 3:
                pos += 2 + ((data[pos] << 8) | data[pos + 1])
                sas[conn] = None
            elif kind == 4:
                pos = _skip_list(data, pos)
                sas[conn] = None
            else:
                return None
    except (_NotPlain, IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if pos != end:
        return None
    return [sa for sa in sas.values() if sa is not None]
