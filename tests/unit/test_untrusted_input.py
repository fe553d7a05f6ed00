"""Everything charon reports about a client is the client's to choose (issue 12, items 4
and 7): one SA swand cannot read is skipped, logged once and counted; it never fails the
firewall pass, the metrics poll, the event handling or `swand status` for the others.

Property tests put arbitrary printable text and non-UTF-8 bytes (as the VICI decoder
keeps them: surrogate-escaped) into each field of one IKE_SA charon reports, next to a
well-behaved one, and check the well-behaved SA's rules, metrics and log lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from swand.adapters.http_metrics import render
from swand.adapters.iptables_legacy import ApplyReport
from swand.adapters.netlink import NetState
from swand.commands import status
from swand.config import FirewallSettings, SwandConfig
from swand.core import metrics as m
from swand.core.events import IkeUp, PeerTable, SaUp, parse_event
from swand.core.firewall import (
    DesiredFirewall,
    FirewallInputs,
    child_sas_from_vici,
    desired_firewall,
    render_save,
)
from swand.core.nftables import render_nft
from swand.core.untrusted import Unparsable, UnparsableLedger, valid_text
from swand.runtime import untrusted
from swand.runtime.firewall import FirewallReconciler, vici_snapshot
from swand.runtime.metrics import MetricsCollector, MetricsPoller, MetricsRegistry

#: text as the VICI decoder hands it out: printable text, or any bytes decoded with
#: surrogateescape (what charon sends that is not UTF-8)
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["", "-1", "99999999999999999999", "1e9", "0.0.0.0/0[253]",
                     "10.8.0.0/24[tcp/x11-1]", "dynamic", "\udcff", "a\x00b", "²"]),
)
HOSTILE_VALUE = st.one_of(HOSTILE, st.lists(HOSTILE, max_size=3))

IKE_FIELDS = ("uniqueid", "state", "local-host", "remote-host", "remote-port", "local-id",
              "remote-id", "remote-eap-id", "remote-xauth-id", "initiator", "established",
              "rekey-time", "local-vips", "remote-vips", "tasks-active", "tasks-passive",
              "encr-alg", "encr-keysize", "integ-alg", "prf-alg", "dh-group")
CHILD_FIELDS = ("name", "uniqueid", "reqid", "state", "protocol", "mode", "encap",
                "spi-in", "encr-alg", "integ-alg", "bytes-in", "bytes-out", "packets-in",
                "packets-out", "install-time", "life-time", "rekey-time", "local-ts",
                "remote-ts")


def good_ike(uid: str = "1", vip: str = "10.8.0.129") -> dict[str, Any]:
    return {
        "uniqueid": uid, "state": "ESTABLISHED", "remote-host": "198.51.100.10",
        "remote-id": f"c{uid}.lab", "remote-vips": [vip], "established": "30",
        "tasks-active": [], "child-sas": {f"net-{uid}": {
            "name": "net", "uniqueid": uid, "reqid": uid, "state": "INSTALLED",
            "protocol": "ESP", "bytes-in": "1000", "bytes-out": "2000",
            "packets-in": "10", "packets-out": "20", "install-time": "30",
            "local-ts": ["0.0.0.0/0"], "remote-ts": [f"{vip}/32"],
        }},
    }


@st.composite
def hostile_ike(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(connection name, list-sa section) with hostile values in some fields."""
    body = good_ike("2", "10.8.0.130")
    child = body["child-sas"]["net-2"]
    for key in draw(st.lists(st.sampled_from(IKE_FIELDS), max_size=4)):
        body[key] = draw(HOSTILE_VALUE)
    for key in draw(st.lists(st.sampled_from(CHILD_FIELDS), min_size=1, max_size=4)):
        child[key] = draw(HOSTILE_VALUE)
    if draw(st.booleans()):
        body["child-sas"] = {draw(HOSTILE): child}
    if body["uniqueid"] == "1" or child["uniqueid"] == "1":
        body["uniqueid"] = child["uniqueid"] = "2"  # charon's to choose, never the peer's
    conn = draw(st.one_of(st.just("rw"), HOSTILE.filter(bool)))
    return conn, body


def list_sas(conn: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """list-sas' events: the hostile SA first, then the well-behaved one."""
    return [{conn: body}, {"rw": good_ike()}]


def exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def source(fams: list[m.Family]) -> Any:
    """A FamilySource serving `fams` to the real prometheus-client registry."""
    return SimpleNamespace(families=lambda: fams, scrape_took=lambda seconds: None)


PROPERTY = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- firewall ---------------------------------------------------------------------------


@PROPERTY
@given(hostile_ike())
def test_firewall_keeps_the_other_sas_rules(sa: tuple[str, dict[str, Any]]) -> None:
    skipped: list[Unparsable] = []
    child_sas = child_sas_from_vici(list_sas(*sa), on_skip=skipped.append)
    inputs = FirewallInputs(FirewallSettings(), "policy", "eth0", (), child_sas)
    desired = desired_firewall(inputs)
    text = render_save(desired, "ipv4") + render_save(desired, "ipv6")
    text.encode("utf-8")
    assert "-s 10.8.0.129/32" in text and "-d 10.8.0.129/32" in text
    assert "10.8.0.129" in render_nft(desired)
    for item in skipped:
        assert item.component == "firewall"
        f"{item.sa} {item.field} {item.error}".encode()  # loggable as it is


class FakeSession:
    """What `vici_snapshot` asks charon, answered from data."""

    def __init__(self, sa_events: list[dict[str, Any]]) -> None:
        self.sa_events = sa_events

    async def request(self, command: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"get-pools": {}, "stats": {"plugins": ["kernel-netlink"]}}[command]

    async def streamed(self, *args: Any, parse: Any = None,
                       **kwargs: Any) -> tuple[list[Any], dict]:
        # as ViciSession.streamed: `parse` turns the events into what the caller keeps
        return (self.sa_events if parse is None else list(parse(self.sa_events))), {}


def recording_backend() -> Any:
    """A firewall backend that keeps every desired state it is asked to apply."""
    applied: list[DesiredFirewall] = []

    async def apply(desired: DesiredFirewall) -> ApplyReport:
        applied.append(desired)
        return ApplyReport("fake")

    async def close() -> None:
        pass

    return SimpleNamespace(name="fake", applied=applied, apply=apply, close=close)


def test_a_bad_selector_is_logged_once_and_counted_and_every_pass_succeeds() -> None:
    """Failed before: `[253]` made every pass raise AttributeError (no rules for anyone)."""
    untrusted.reset_unparsable()
    bad = good_ike("2", "10.8.0.130")
    bad["child-sas"]["net-2"]["remote-ts"] = ["10.8.0.130/32[tcp/alt]"]
    cfg = dataclasses.replace(SwandConfig(), firewall=FirewallSettings(), source="t.toml")
    backend = recording_backend()

    async def net() -> NetState:
        return NetState("eth0", {"eth0": ("192.0.2.1/24",)})

    fw = FirewallReconciler(cfg, vici_snapshot(FakeSession(list_sas("rw", bad))),
                            backend=backend, sysctl=SimpleNamespace(apply=lambda want: []),
                            net_state=net)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            report = asyncio.run(fw.run_once())
            assert report.ok
    text = render_save(backend.applied[-1], "ipv4")
    assert "-s 10.8.0.129/32" in text and "10.8.0.130" not in text
    warnings = [e for e in logs if e["event"] == "sa_unparsable"]
    assert len(warnings) == 1 and warnings[0]["sa"] == "rw #2"
    assert "alt" in warnings[0]["error"]
    fams = m.self_families(MetricsRegistry().self_counters())
    text = render(source(fams)).decode()
    assert 'swand_unparsable_sas_total{component="firewall"} 1.0' in text
    assert 'swand_unparsable_sas_total{component="metrics"} 0.0' in text


def test_the_ledger_reports_each_sa_once_with_bounded_memory() -> None:
    ledger = UnparsableLedger(remember=2)
    item = Unparsable("firewall", "rw #2", "local-ts", "bad")
    assert ledger.note(item) and not ledger.note(item)
    for uid in range(10):
        ledger.note(dataclasses.replace(item, sa=f"rw #{uid + 3}"))
    assert len(ledger._seen) == 2
    assert ledger.counts()["firewall"] == 11 and ledger.counts()["events"] == 0


# --- metrics ----------------------------------------------------------------------------


NEGATIVE_COUNTER_SA = ("rw", {
    "uniqueid": "2", "state": "ESTABLISHED", "remote-host": "198.51.100.10",
    "remote-id": "c2.lab", "remote-vips": ["10.8.0.130"], "established": "30",
    "child-sas": {"net-2": {
        "name": "net", "uniqueid": "2", "state": "INSTALLED", "protocol": "ESP",
        "bytes-in": "-1", "bytes-out": "2000", "packets-in": "10", "packets-out": "20",
        "install-time": "30", "local-ts": ["0.0.0.0/0"], "remote-ts": ["10.8.0.130/32"]}},
})


@PROPERTY
@given(hostile_ike(), st.booleans())
@example(NEGATIVE_COUNTER_SA, False)  # found by hypothesis: '-1' bytes subtracted from rw's
def test_metrics_keep_the_other_sas_series(sa: tuple[str, dict[str, Any]],
                                           per_peer: bool) -> None:
    """Through the real prometheus-client registry and generate_latest."""
    skipped: list[Unparsable] = []
    now = 1000.0
    sas = m.parse_sas(list_sas(*sa), on_skip=skipped.append)
    acc = m.TrafficAccumulator()
    acc.observe(sas, now)
    acc.apply_event("child-updown", {"up": "no", sa[0]: sa[1]}, now, skipped.append)
    view = m.CharonView(taken_at=now, sas=sas, conns=(m.ConfiguredConn("rw", ("net",)),))
    snap = m.MetricsSnapshot(charon_up=True, view=view, per_peer=per_peer,
                             traffic=tuple(sorted(acc.totals().items())),
                             peers=tuple(acc.peer_totals()))
    text = render(source(m.charon_families(snap))).decode("utf-8")
    samples = exposition(text)
    assert samples[("swand_connection_up", (("connection", "rw"),))] == 1.0
    assert samples[("swand_child_bytes_in_total",
                    (("child", "net"), ("connection", "rw")))] >= 1000
    if per_peer:
        assert samples[("swand_peer_bytes_in_total",
                        (("connection", "rw"), ("remote_id", "c1.lab")))] >= 1000


@PROPERTY
@given(st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
def test_any_bytes_in_any_label_still_scrape(raw: list[bytes]) -> None:
    """Failed before: one lone surrogate in a label made generate_latest raise and the
    scrape fail for everyone."""
    names = [b.decode("utf-8", "surrogateescape") for b in raw]
    sas = tuple(m.IkeSa(conn=n, uniqueid=str(i), state="ESTABLISHED", remote_id=n,
                        remote_host=n, remote_vips=(n,), established=5)
                for i, n in enumerate(names))
    sas += (m.IkeSa(conn="rw", uniqueid="99", state="ESTABLISHED",
                    remote_id="c1.lab"),)
    pools = tuple(m.PoolUsage(name=n, size=1) for n in set(names))
    view = m.CharonView(taken_at=1.0, sas=sas, pools=pools,
                        info=m.CharonInfo(daemon=names[0], version=names[-1]))
    snap = m.MetricsSnapshot(charon_up=True, view=view, per_peer=True,
                             traffic=tuple(((n, n), m.Traffic(1, 2, 3, 4)) for n in names))
    text = render(source(m.charon_families(snap))).decode("utf-8")
    samples = exposition(text)  # parses: no duplicate series either
    assert samples[("swand_connection_up", (("connection", "rw"),))] == 1.0
    series = [ln.rpartition(" ")[0] for ln in text.split("\n") if ln and ln[0] != "#"]
    assert len(series) == len(set(series))


def test_valid_text_replaces_only_what_is_not_text() -> None:
    assert valid_text("müller@lab") == "müller@lab"
    assert valid_text("a\udcffb\ud800") == "a\ufffdb\ufffd"


def test_the_registry_counts_unparsable_sas_by_component() -> None:
    untrusted.reset_unparsable()
    untrusted.report_unparsable(Unparsable("metrics", "rw #2", "list-sa", "x"))
    untrusted.report_unparsable(Unparsable("metrics", "rw #2", "list-sa", "x"))
    untrusted.report_unparsable(Unparsable("events", "rw #2", "ike-updown", "x"))
    registry = MetricsRegistry()
    poller = MetricsPoller("unix:///nowhere", registry)
    samples = exposition(render(MetricsCollector(poller, registry)).decode())
    assert samples[("swand_unparsable_sas_total", (("component", "metrics"),))] == 1.0
    assert samples[("swand_unparsable_sas_total", (("component", "events"),))] == 1.0
    assert samples[("swand_unparsable_sas_total", (("component", "firewall"),))] == 0.0


# --- events -----------------------------------------------------------------------------


@PROPERTY
@given(hostile_ike(), st.sampled_from(["ike-updown", "child-updown"]))
def test_events_keep_the_other_sas_ups_and_log_lines(
    sa: tuple[str, dict[str, Any]], name: str,
) -> None:
    conn, body = sa
    skipped: list[Unparsable] = []
    payload = {"up": "yes", conn: body, **({"rw": good_ike()} if conn != "rw" else {})}
    events = parse_event(name, payload, skipped.append)
    events += parse_event(name, {"up": "yes", "rw": good_ike()}, skipped.append)
    table = PeerTable()
    lines = io.StringIO()
    logger = structlog.PrintLogger(lines)
    ups = []
    for event in events:
        for action in table.apply(event):
            if isinstance(action, SaUp):
                ups.append(action.sa.uniqueid)
                fields = action.sa.log_fields()
                logger.msg(json.dumps({"event": "sa_up", **fields}, ensure_ascii=False))
    if name == "ike-updown":
        assert "1" in ups
    lines.getvalue().encode("utf-8")  # every line is valid text
    if name == "ike-updown":
        assert any(json.loads(ln)["remote_id"] == "c1.lab"
                   for ln in lines.getvalue().split("\n") if ln)
    assert all(isinstance(e, IkeUp) or e is not None for e in events)


# --- swand status -----------------------------------------------------------------------


@PROPERTY
@given(hostile_ike())
def test_status_shows_the_other_sas(sa: tuple[str, dict[str, Any]]) -> None:
    skipped: list[Unparsable] = []
    sas = m.parse_sas(list_sas(*sa), skipped.append, component="status")
    view = m.CharonView(taken_at=1000.0, sas=sas, conns=(m.ConfiguredConn("rw", ("net",)),))
    model = status.status_model(view, {})
    out = io.StringIO()
    status.render_table(model, 1000.0, out)
    out.getvalue().encode("utf-8")
    json.dumps(model, ensure_ascii=False).encode("utf-8")
    assert "c1.lab" in out.getvalue()
    assert all(item.component == "status" for item in skipped)


@pytest.fixture(autouse=True)
def _fresh_ledger() -> Any:
    untrusted.reset_unparsable()
    yield
    untrusted.reset_unparsable()
