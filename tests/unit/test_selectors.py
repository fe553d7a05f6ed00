"""Traffic selectors exactly as charon prints them (issue 12, items 4 and 5).

charon prints a protocol with getprotobynumber() (or its number) and one port with
getservbyport(port, protocol name) (or its number); these tests print selectors the same
way from this host's /etc/protocols and /etc/services and read them back.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from swand.config import FirewallSettings
from swand.core.firewall import (
    ChildSA,
    FirewallInputs,
    TrafficSelectorError,
    _parse_ts,
    child_sas_from_vici,
    desired_firewall,
    render_save,
)
from swand.core.nftables import nft_chains, render_nft, rule_json
from swand.core.services import SelectorNameError, parse_services, port_range, protocol_name
from swand.core.untrusted import Unparsable

PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite")


def _service_entries() -> list[tuple[int, str]]:
    """Every (port, protocol) /etc/services lists, first entry only (as getservbyport)."""
    seen: dict[tuple[int, str], None] = {}
    for line in Path("/etc/services").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and "/" in words[1]:
            port, proto = words[1].split("/")
            seen.setdefault((int(port), proto), None)
    return list(seen)


needs_services = pytest.mark.skipif(not Path("/etc/services").exists(),
                                    reason="no /etc/services on this host")


def test_protocol_printed_as_a_number() -> None:
    """Failed before: socket.getprotobynumber does not exist (AttributeError)."""
    (ts,) = _parse_ts("10.8.0.129/32[253]")
    assert (ts.network, ts.proto, ts.port) == ("10.8.0.129/32", "253", None)
    (ts,) = _parse_ts("10.8.0.0/24[6/80]")  # charon's host had no /etc/protocols
    assert (ts.proto, ts.port) == ("tcp", "80")
    assert protocol_name("17") == "udp" and protocol_name("TCP") == "tcp"
    assert protocol_name("ipv6-icmp") == "ipv6-icmp"


@pytest.mark.parametrize("bad", ["256", "no-such-proto", "tc\udcffp", "t\x00cp", "\u00b2"])
def test_unknown_protocols_are_refused(bad: str) -> None:
    with pytest.raises(SelectorNameError):
        protocol_name(bad)


@needs_services
def test_every_single_port_charon_prints_reads_back() -> None:
    """All of /etc/services: the name getservbyport gives a port (what charon prints)
    resolves to that port. Failed before: 88 of them raised, 8 came out wrong on
    Debian 12's file (`http-alt`, `x11-1`, `dicom` -> 104, ...)."""
    checked = wrong = 0
    failures = []
    for port, proto in _service_entries():
        if proto not in PORT_PROTOCOLS:
            continue
        printed = socket.getservbyport(port, proto)
        checked += 1
        try:
            (ts,) = _parse_ts(f"0.0.0.0/0[{proto}/{printed}]")
        except TrafficSelectorError as exc:
            failures.append(f"{proto}/{printed}: {exc}")
            continue
        if ts.port != str(port):
            wrong += 1
            failures.append(f"{proto}/{printed}: {ts.port} != {port}")
    assert checked > 300
    assert not failures, failures[:20]


@needs_services
def test_ports_printed_with_a_numeric_protocol() -> None:
    """No /etc/protocols on charon's host: `[6/name]`, name from getservbyport(port, NULL).
    A name printed for several ports (``echo``: 4/ddp and 7/tcp) is refused, never
    guessed; every other one reads back."""
    ports = sorted({p for p, _ in _service_entries()})
    refused = []
    for port in ports:
        printed = socket.getservbyport(port)
        try:
            (ts,) = _parse_ts(f"0.0.0.0/0[6/{printed}]")
        except TrafficSelectorError:
            refused.append(printed)
            continue
        assert ts.port == str(port), printed
    assert len(refused) < len(ports) // 20, refused


def test_names_with_dashes_and_aliases() -> None:
    services = parse_services(
        "acr-nema\t104/tcp\tdicom\n"
        "http-alt 8080/tcp webcache\n"
        "x11 6000/tcp x11-0\n"
        "x11-1 6001/tcp\n"
        "dicom 11112/tcp\n"
        "other 8080/tcp  # a second entry for 8080: getservbyport never returns it\n"
    )
    assert port_range("http-alt", "tcp", services) == "8080"
    assert port_range("x11-1", "tcp", services) == "6001"
    assert port_range("dicom", "tcp", services) == "11112"
    assert port_range("6000-6010", "tcp", services) == "6000:6010"
    assert port_range("443", "tcp", services) == "443"
    for bad in ("other", "alt", "6010-6000", "1-70000", "", "x11-1-2"):
        with pytest.raises(SelectorNameError):
            port_range(bad, "tcp", services)


def _inputs(*sas: ChildSA) -> FirewallInputs:
    return FirewallInputs(FirewallSettings(), "policy", "eth0", (), sas)


GOOD = ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",))


@pytest.mark.parametrize("ts", [
    "10.8.0.130/32[253]", "10.8.0.130/32[tcp/http-alt]", "10.8.0.130/32[tcp/x11-1]",
    "10.8.0.130/32[6/80]",
])
def test_a_selector_with_a_name_or_number_gets_its_rules(ts: str) -> None:
    sa = ChildSA("rw", "rw", 2, ("0.0.0.0/0",), (ts,))
    text = render_save(desired_firewall(_inputs(GOOD, sa)), "ipv4")
    assert "-s 10.8.0.129/32" in text and "-s 10.8.0.130/32" in text
    assert "10.8.0.130" in render_nft(desired_firewall(_inputs(GOOD, sa)))  # nft too


def test_nft_gets_a_protocol_number_as_a_number() -> None:
    sa = ChildSA("rw", "rw", 2, ("0.0.0.0/0",), ("10.8.0.130/32[253]",))
    chains = nft_chains(desired_firewall(_inputs(sa)))
    exprs = [e for rules in chains.values() for r in rules
             for e in rule_json(r, "forward")["expr"]]
    assert {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 253}} in exprs


@pytest.mark.parametrize("ts", [
    "10.8.0.130/32[tcp/alt]", "10.8.0.130/32[tcp/6000-1]", "10.8.0.130/33",
    "dynamic", "10.8.0.130/32[tcp/\udcff]", "10.8.0.130/32[nope/80]",
])
def test_an_unreadable_selector_skips_that_sa_only(ts: str) -> None:
    """Failed before: the pass raised (OSError, ValueError) and nobody got rules."""
    listed = [{"rw": {"uniqueid": "7", "child-sas": {
        "rw-1": {"name": "rw", "reqid": "1", "state": "INSTALLED", "protocol": "ESP",
                 "local-ts": ["0.0.0.0/0"], "remote-ts": ["10.8.0.129/32"]},
        "rw-2": {"name": "rw", "reqid": "2", "state": "INSTALLED", "protocol": "ESP",
                 "local-ts": ["0.0.0.0/0"], "remote-ts": [ts]},
    }}}]
    skipped: list[Unparsable] = []
    sas = child_sas_from_vici(listed, on_skip=skipped.append)
    assert [sa.reqid for sa in sas] == [1]
    assert [(s.component, s.sa, s.field) for s in skipped] == [
        ("firewall", "rw #7", "child-sas.rw reqid 2")]
    # and a ChildSA built elsewhere with such a selector is skipped by the pass itself
    bad = ChildSA("rw", "rw", 2, ("0.0.0.0/0",), (ts,))
    text = render_save(desired_firewall(_inputs(GOOD, bad)), "ipv4")
    assert "-s 10.8.0.129/32" in text
