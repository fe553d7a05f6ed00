"""The metrics poll's list-sa fast path (`swand.core.list_sa`, composed with the general
path in `runtime.metrics.parse_list_sa_packets`) against the general path as the oracle:
`decode_body` + `parse_sas` must give the same SAs, the same skipped-and-counted SAs, or
the same protocol error, for recorded payloads and for generated messages with hostile
values and malformed framing (everything charon reports about a client is the client's
to choose).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from swand.adapters.vici import ViciConnectionError, decode_body
from swand.core import metrics as m
from swand.core.list_sa import sas_from_list_sa
from swand.core.untrusted import Unparsable
from swand.runtime.metrics import parse_list_sa_packets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from synthetic_vici import RECORDED_IKE_SA, sa_event

EVENTS = Path(__file__).parent / "data" / "events"

#: an element of a message: ("kv", key, value), ("list", key, items), ("sec", key, elems)
Element = tuple[str, bytes, Any]


def encode(elements: list[Element]) -> bytes:
    """A VICI message body; unlike the codec, duplicate keys and any bytes allowed."""
    out = bytearray()
    for kind, key, value in elements:
        if kind == "kv":
            out += bytes([3, len(key)]) + key + len(value).to_bytes(2, "big") + value
        elif kind == "list":
            out += bytes([4, len(key)]) + key
            for item in value:
                out += bytes([5]) + len(item).to_bytes(2, "big") + item
            out += bytes([6])
        else:
            out += bytes([1, len(key)]) + key + encode(value) + bytes([2])
    return bytes(out)


def elements(message: dict[str, Any]) -> list[Element]:
    """A decoded message (str values, lists, dicts) as elements."""
    def raw(text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")
    out: list[Element] = []
    for key, value in message.items():
        if isinstance(value, dict):
            out.append(("sec", raw(key), elements(value)))
        elif isinstance(value, list):
            out.append(("list", raw(key), [raw(v) for v in value]))
        else:
            out.append(("kv", raw(key), raw(value)))
    return out


def general(body: bytes) -> Any:
    """The oracle: what decode_body + parse_sas make of a list-sa message body."""
    skipped: list[Unparsable] = []
    try:
        events = [decode_body(b"\x07\x07list-sa" + body, 9, True, "u")]
    except ViciConnectionError as exc:
        return ("error", str(exc))
    return (m.parse_sas(events, skipped.append), skipped)


def fast(body: bytes) -> Any:
    """The poll's path: straight from the bytes, the general path when not plain."""
    skipped: list[Unparsable] = []
    try:
        sas = parse_list_sa_packets([(b"\x07\x07list-sa" + body, 9)], "u", skipped.append)
    except ViciConnectionError as exc:
        return ("error", str(exc))
    return (tuple(sas), skipped)


def plain(body: bytes) -> Any:
    return sas_from_list_sa(b"\x07\x07list-sa" + body, 9)


# --- recorded payloads ----------------------------------------------------------------


def recorded_messages() -> list[tuple[str, dict[str, Any]]]:
    out = [("synthetic_vici.RECORDED_IKE_SA", {"rw": RECORDED_IKE_SA})]
    for path in sorted(EVENTS.glob("*.json")):
        for i, (name, payload) in enumerate(json.loads(path.read_text())["events"]):
            if any(isinstance(v, dict) for v in payload.values()):  # not log lines
                out.append((f"{path.stem}[{i}] {name}", payload))
    return out


@pytest.mark.parametrize(("where", "message"), recorded_messages(),
                         ids=[w for w, _ in recorded_messages()])
def test_recorded_payloads_decode_as_the_general_path(where: str,
                                                      message: dict[str, Any]) -> None:
    """Every IKE_SA charon 5.9.8 sent in the recorded events, read as a list-sa: the
    same SAs; straight from the bytes unless a CHILD_SA holds sections (child-rekey's
    old/new, which list-sa never sends)."""
    body = encode(elements(message))
    expected = general(body)
    assert expected[0] and not expected[1]
    assert fast(body) == expected
    nested = any(isinstance(c, dict) and any(isinstance(v, dict) for v in c.values())
                 for sa in message.values() if isinstance(sa, dict)
                 for key in ("child-sas",) if isinstance(sa.get(key), dict)
                 for c in sa[key].values())
    nested |= any(isinstance(sa, dict) and isinstance(sa.get("old"), dict)
                  for sa in message.values())  # ike-rekey: old/new IKE_SAs
    assert (plain(body) is None) == nested
    if not nested:
        assert tuple(plain(body) or ()) == expected[0]


def test_a_synthetic_100k_poll_takes_the_fast_path() -> None:
    for i in (0, 1, 255, 65536, 99999):
        packet = sa_event(i)[4:]
        sas = sas_from_list_sa(packet, 2 + packet[1])
        assert sas is not None
        assert tuple(sas) == m.parse_sas([decode_body(packet, 2 + packet[1], True, "u")])


def test_a_counter_past_pythons_int_limit_is_skipped_and_counted_as_before() -> None:
    """Python refuses int() of more than 4300 digits: from_vici raises, the SA is
    skipped; the fast path leaves that message to the general path."""
    bad = json.loads(json.dumps(RECORDED_IKE_SA))
    bad["child-sas"]["net-3"]["bytes-in"] = "9" * 5000
    body = encode(elements({"rw": bad}))
    assert plain(body) is None
    expected = general(body)
    assert expected[0] == () and [s.component for s in expected[1]] == ["metrics"]
    assert fast(body) == expected


def test_surrogates_and_empty_values_are_kept_as_the_general_path_keeps_them() -> None:
    body = encode([("sec", b"rw", [
        ("kv", b"uniqueid", b"7"), ("kv", b"remote-id", b"\xff\xfe c\xc3\xa9"),
        ("kv", b"remote-host", b"\xed\xa0\x80"), ("kv", b"state", b""),
        ("kv", b"established", b"\xd9\xa3"),  # an Arabic-Indic digit: not a count
        ("list", b"remote-vips", [b"", b"\x80"]), ("list", b"tasks-active", []),
        ("sec", b"child-sas", [("sec", b"x-1", [("kv", b"name", b""),
                                                ("kv", b"bytes-in", b"0012")])]),
    ])])
    assert plain(body) is not None
    assert fast(body) == general(body)
    sa = plain(body)[0]  # type: ignore[index]
    assert sa.remote_id == "\udcff\udcfe c\u00e9" and sa.established is None
    assert sa.children[0].name == "x-1" and sa.children[0].bytes_in == 12


# --- generated messages ---------------------------------------------------------------

IKE_KEYS = [b"uniqueid", b"state", b"local-host", b"remote-host", b"local-id",
            b"remote-id", b"remote-eap-id", b"remote-xauth-id", b"established",
            b"local-vips", b"remote-vips", b"tasks-active", b"tasks-passive", b"version",
            b"encr-alg", b"rekey-time", b"x-unknown", b"child-sas"]
CHILD_KEYS = [b"name", b"uniqueid", b"state", b"reqid", b"bytes-in", b"bytes-out",
              b"packets-in", b"packets-out", b"local-ts", b"remote-ts", b"protocol",
              b"mode", b"spi-in", b"install-time", b"x-unknown"]
LIST_KEYS = {b"local-vips", b"remote-vips", b"tasks-active", b"tasks-passive",
             b"local-ts", b"remote-ts"}
#: a key no table names, and one that is not UTF-8
ODD_KEYS = [b"\xff\xfe", b"", b"caf\xc3\xa9", b"net-1"]
VALUES = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"0", b"-1", b"0012", b"1_000", b" 7", b"\xd9\xa3", b"9" * 5000,
                     b"INSTALLED", b"ESTABLISHED", b"\xed\xa0\x80", b"x" * 0xFFFF]),
)
ITEMS = st.lists(VALUES, max_size=3)


def field(keys: list[bytes]) -> st.SearchStrategy[Element]:
    """A key-value or list as charon sends it, or (sometimes) as the other kind."""
    def make(key: bytes, odd: bool, value: bytes, items: list[bytes]) -> Element:
        as_list = (key in LIST_KEYS) != odd
        return ("list", key, items) if as_list else ("kv", key, value)
    return st.builds(make, st.sampled_from(keys), st.sampled_from([False] * 30 + [True]),
                     VALUES, ITEMS)


@st.composite
def child_section(draw: st.DrawFn) -> Element:
    fields = draw(st.lists(field(CHILD_KEYS), max_size=8))
    if draw(st.integers(0, 19)) == 0:  # a section inside a CHILD_SA
        fields.insert(draw(st.integers(0, len(fields))), ("sec", b"old", fields[:2]))
    key = draw(st.sampled_from([b"net-1", b"net-2", b"net"] * 3 + ODD_KEYS))
    if draw(st.integers(0, 9)) == 0:  # a value among the CHILD_SA sections
        return ("kv", key, draw(VALUES))
    return ("sec", key, fields)


@st.composite
def ike_section(draw: st.DrawFn) -> Element:
    fields: list[Element] = draw(st.lists(field(IKE_KEYS), max_size=10))
    for _ in range(draw(st.integers(0, 2))):  # child-sas, once or twice (or not)
        fields.insert(draw(st.integers(0, len(fields))),
                      ("sec", b"child-sas", draw(st.lists(child_section(), max_size=3))))
    if draw(st.integers(0, 19)) == 0:  # another section in the IKE_SA
        fields.append(("sec", draw(st.sampled_from([b"uniqueid", b"x-unknown"])), []))
    conn = draw(st.sampled_from([b"rw"] * 8 + [b"(unnamed)"] + ODD_KEYS))
    if draw(st.integers(0, 9)) == 0:  # a value where the IKE_SA's section would be
        return ("kv", conn, draw(VALUES))
    return ("sec", conn, fields)


@st.composite
def list_sa_body(draw: st.DrawFn) -> bytes:
    """A list-sa message: mostly charon's shape with hostile values, sometimes with
    elements of the wrong kind, then maybe truncated, a byte changed or extra bytes."""
    body = encode(draw(st.lists(ike_section(), min_size=1, max_size=3)))
    mutation = draw(st.sampled_from(["none"] * 6 + ["shorten", "flip", "append"]))
    if mutation == "shorten" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif mutation == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:]
    elif mutation == "append":
        body += draw(st.binary(min_size=1, max_size=4))
    return body


PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(list_sa_body())
@example(encode([("sec", b"rw", [("sec", b"child-sas", []), ("kv", b"child-sas", b"x")])]))
@example(encode([("sec", b"rw", [("kv", b"child-sas", b"x"), ("sec", b"child-sas", [])])]))
@example(encode([("sec", b"rw", []), ("kv", b"rw", b"gone")]))
@example(encode([("sec", b"a", [("kv", b"uniqueid", b"1")]),
                 ("sec", b"b", []), ("sec", b"a", [("kv", b"uniqueid", b"2")])]))
@example(encode([("sec", b"rw", [("sec", b"child-sas", [
    ("sec", b"n", [("kv", b"uniqueid", b"1")]), ("list", b"n", []),
    ("sec", b"m", [("kv", b"name", b"")]), ("sec", b"m", [("kv", b"uniqueid", b"3")])])])]))
@example(encode([("sec", b"rw", [("sec", b"child-sas", [
    ("sec", b"n", [("kv", b"uniqueid", b"1")]), ("kv", b"n", b"")])])]))
@example(encode([("sec", b"rw", [("kv", b"uniqueid", b"1")]), ("kv", b"x", b"abc")])[:-1])
@example(b"\x01\x02rw\x04\x0bremote-vips\x05\x00\x01x\x02\x02")  # a list never ended
@example(bytes([2]))
@example(b"")
def test_the_fast_path_equals_the_general_path(body: bytes) -> None:
    assert fast(body) == general(body)


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(IKE_KEYS[:-1]), VALUES, ITEMS), max_size=12),
       st.lists(st.tuples(st.sampled_from(CHILD_KEYS), VALUES, ITEMS), max_size=12))
def test_charons_shape_with_hostile_values_takes_the_fast_path(
        ike: list[tuple[bytes, bytes, list[bytes]]],
        child: list[tuple[bytes, bytes, list[bytes]]]) -> None:
    def fields(spec: list[tuple[bytes, bytes, list[bytes]]]) -> list[Element]:
        return [("list", k, items) if k in LIST_KEYS else ("kv", k, v) for k, v, items in spec]
    body = encode([("sec", b"rw", [*fields(ike), ("sec", b"child-sas", [
        ("sec", b"net-1", fields(child))])])])
    expected = general(body)
    if any(v == b"9" * 5000 for _, v, _ in ike + child):
        assert fast(body) == expected  # int() refuses it: the general path decides
        return
    sas = plain(body)
    assert sas is not None
    assert (tuple(sas), []) == expected
