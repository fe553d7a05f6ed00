"""swand.core.metrics: parsers over recorded payloads, the traffic accumulator's
monotonicity across rekeys/deletes/restarts, the exposition golden, promtool."""

from __future__ import annotations

import copy
import datetime
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from swand.adapters import http_metrics
from swand.core import metrics as m

GOLDEN = Path(__file__).parent / "golden" / "metrics_snapshot.prom"

# Recorded from charon 5.9.8 in the bench lab (bench/bench_metrics.py --record); SPIs are
# kept to show they never become labels.
LIST_SA = {"rw": {
    "uniqueid": "4", "version": "2", "state": "ESTABLISHED", "local-host": "192.0.2.1",
    "local-port": "4500", "local-id": "gw.bench.test", "remote-host": "192.0.2.11",
    "remote-port": "4500", "remote-id": "c1-1@bench.test", "initiator-spi": "ace20f2cb7f94bc5",
    "responder-spi": "704c18e6b3694155", "nat-remote": "yes", "nat-any": "yes",
    "encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128",
    "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "CURVE_25519", "established": "1",
    "rekey-time": "14348", "remote-vips": ["10.9.0.3", "2001:db8:9::3"],
    "child-sas": {"net-3": {
        "name": "net", "uniqueid": "3", "reqid": "3", "state": "INSTALLED", "mode": "TUNNEL",
        "protocol": "ESP", "encap": "yes", "spi-in": "58fd17f4", "spi-out": "06b654c5",
        "encr-alg": "AES_GCM_16", "encr-keysize": "128", "bytes-in": "0",
        "packets-in": "0", "bytes-out": "0", "packets-out": "0", "rekey-time": "3337",
        "life-time": "3959", "install-time": "1", "local-ts": ["10.10.0.0/16"],
        "remote-ts": ["10.9.0.3/32"],
    }},
}}
LIST_CONN = {"rw": {
    "local_addrs": ["%any"], "remote_addrs": ["%any"], "version": "IKEv2",
    "unique": "UNIQUE_NEVER", "reauth_time": "0", "rekey_time": "14400", "dpd_delay": "30",
    "local-1": {"class": "pre-shared key", "id": "gw.bench.test", "certs": [], "groups": []},
    "remote-1": {"class": "pre-shared key", "certs": [], "groups": []},
    "children": {"net": {"mode": "TUNNEL", "local-ts": ["10.10.0.0/16"],
                         "remote-ts": ["dynamic"]}},
}}
STATS = {
    "uptime": {"running": "1 second", "since": "Nov 26 18:00:26 2026"},
    "workers": {"total": "16", "idle": "6",
                "active": {"critical": "5", "high": "0", "medium": "5", "low": "0"}},
    "queues": {"critical": "0", "high": "0", "medium": "0", "low": "0"},
    "scheduled": "25", "ikesas": {"total": "4", "half-open": "0"},
    "plugins": ["charon-systemd", "vici", "counters"],
}
VERSION = {"daemon": "charon-systemd", "version": "5.9.8", "sysname": "Linux",
           "release": "6.1.0", "machine": "x86_64"}
POOLS = {"pool4": {"base": "10.9.0.0", "size": "65534", "online": "1", "offline": "1",
                   "leases": {"0": {"address": "10.9.0.1", "identity": "c0-0@bench.test",
                                    "status": "online"},
                              "1": {"address": "10.9.0.2", "identity": "c1-0@bench.test",
                                    "status": "offline"}}}}


def child(uid: str, bytes_in: int, bytes_out: int, state: str = "INSTALLED",
          name: str = "net") -> dict:
    return {"name": name, "uniqueid": uid, "reqid": "3", "state": state,
            "bytes-in": str(bytes_in), "bytes-out": str(bytes_out),
            "packets-in": str(bytes_in // 100), "packets-out": str(bytes_out // 100),
            "spi-in": "58fd17f4", "spi-out": "06b654c5", "install-time": "1"}


def ike(children: dict, uid: str = "4", state: str = "ESTABLISHED") -> dict:
    body = copy.deepcopy(LIST_SA["rw"])
    body.update(uniqueid=uid, state=state, **{"child-sas": children})
    return {"rw": body}


def rekey_event(old: dict, new: dict) -> dict:
    body = {k: v for k, v in ike({})["rw"].items() if k != "child-sas"}
    body["child-sas"] = {"net": {"old": old, "new": new}}
    return {"rw": body}


def down_event(c: dict) -> dict:
    return {"up": "no", **ike({f"net-{c['uniqueid']}": c})}


def up_event(c: dict) -> dict:
    return {"up": "yes", **ike({f"net-{c['uniqueid']}": c})}


def churn_one(acc: m.TrafficAccumulator, n: int) -> None:
    """CHILD_SA n comes up (10 bytes) and goes down (20 bytes), at n / 100 s."""
    acc.apply_event("child-updown", up_event(child(str(n), 10, 10)), n / 100)
    acc.apply_event("child-updown", down_event(child(str(n), 20, 20)), n / 100)


def total(acc: m.TrafficAccumulator) -> m.Traffic:
    return acc.totals().get(("rw", "net"), m.ZERO)


# --- parsers ---------------------------------------------------------------------------


def test_parse_recorded_payloads() -> None:
    sas = m.parse_sas([LIST_SA])
    (sa,) = sas
    assert (sa.conn, sa.state, sa.remote_id, sa.remote_vips) == (
        "rw", "ESTABLISHED", "c1-1@bench.test", ("10.9.0.3", "2001:db8:9::3"))
    assert m.established_at(sa, 1000.0) == 999.0
    assert sa.children[0].name == "net" and sa.children[0].uniqueid == "3"
    (conn,) = m.parse_conns([LIST_CONN])
    assert conn == m.ConfiguredConn("rw", ("net",), ("%any",), ())
    stats = m.parse_stats(STATS)
    assert stats.workers_total == 16 and stats.ike_sas_total == 4
    assert dict(stats.workers_active)["critical"] == 5
    assert stats.start_time is not None
    pools = m.parse_pools(POOLS)
    assert pools[0].size == 65534 and pools[0].online == 1 and len(pools[0].leases) == 2
    # recorded from charon 5.9.8: the global set is a section with an empty name
    assert m.parse_counters({"counters": {"": {"ike-rekey-init": b"2", "invalid": b"0"}},
                             "success": b"yes"}) == (("ike-rekey-init", 2), ("invalid", 0))
    assert m.parse_counters({"counters": {"ike-rekey-init": "2"}}) == (("ike-rekey-init", 2),)


def test_parse_bytes_values() -> None:
    """The session may hand out bytes (decode=False): same result."""
    enc = {"rw": {k: (v.encode() if isinstance(v, str) else v)
                  for k, v in LIST_SA["rw"].items() if k != "child-sas"}}
    assert m.parse_sas([enc])[0].remote_id == "c1-1@bench.test"


def _cert_der(cn: str, days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x1234)
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_parse_cert_from_der_blob() -> None:
    cert = m.parse_cert({"type": b"X509", "flag": b"CA", "data": _cert_der("lab CA", 10)})
    assert cert is not None
    assert cert.subject == "CN=lab CA" and cert.flag == "CA" and cert.serial == "1234"
    assert cert.not_after == datetime.datetime(2026, 1, 11, tzinfo=datetime.UTC).timestamp()
    assert m.parse_cert({"type": "X509_CRL", "data": b"x"}) is None
    assert m.parse_cert({"type": "X509", "data": b"garbage"}) is None


# --- accumulator -----------------------------------------------------------------------


def test_rekey_keeps_counters_monotonic() -> None:
    acc = m.TrafficAccumulator()
    acc.observe(m.parse_sas([ike({"net-3": child("3", 1000, 2000)})]), 1)
    assert total(acc).bytes_in == 1000
    # rekey: old SA's final values 1500/2500, new SA starts at 0
    acc.apply_event("child-rekey", rekey_event(child("3", 1500, 2500, "REKEYED"),
                                               child("5", 0, 0)), 2)
    assert total(acc) .bytes_in == 1500 and total(acc).bytes_out == 2500
    # next poll: old SA still listed (REKEYED, a few more bytes), new one counting
    acc.observe(m.parse_sas([ike({"net-3": child("3", 1510, 2500, "REKEYED"),
                                  "net-5": child("5", 100, 50)})]), 3)
    assert total(acc).bytes_in == 1610
    # old SA deleted by charon: gone from the list, nothing lost
    acc.observe(m.parse_sas([ike({"net-5": child("5", 200, 70)})]), 4)
    assert total(acc).bytes_in == 1710 and total(acc).bytes_out == 2570


def test_down_event_and_poll_do_not_double_count() -> None:
    acc = m.TrafficAccumulator()
    acc.observe(m.parse_sas([ike({"net-3": child("3", 1000, 2000)})]), 1)
    acc.apply_event("child-updown", down_event(child("3", 1200, 2100)), 2)
    assert total(acc).bytes_in == 1200
    # a poll answered before the down event still lists the SA (raced): no double count
    acc.observe(m.parse_sas([ike({"net-3": child("3", 1100, 2050)})]), 3)
    assert total(acc).bytes_in == 1200
    acc.observe([], 4)
    assert total(acc).bytes_in == 1200 and total(acc).bytes_out == 2100
    # the same down event again (resync after reconnect): still once
    acc.apply_event("child-updown", down_event(child("3", 1200, 2100)), 5)
    acc.observe([], 6)
    assert total(acc).bytes_in == 1200


def test_sa_vanishing_without_event_and_charon_restart() -> None:
    acc = m.TrafficAccumulator()
    acc.observe(m.parse_sas([ike({"net-3": child("3", 1000, 2000)})]), 1)
    acc.charon_restarted()  # charon crashed: last seen values kept
    assert total(acc).bytes_in == 1000
    # the new charon reuses unique id 3 for a different SA: counted from zero, added
    acc.observe(m.parse_sas([ike({"net-3": child("3", 10, 20)})]), 2)
    assert total(acc).bytes_in == 1010


def test_up_event_racing_a_poll_is_counted_once() -> None:
    acc = m.TrafficAccumulator()
    acc.apply_event("child-updown", {"up": "yes", **ike({"net-7": child("7", 50, 50)})}, 1)
    acc.observe([], 2)  # a poll sent before the SA came up: retired...
    acc.observe(m.parse_sas([ike({"net-7": child("7", 80, 90)})]), 3)  # ...revived
    assert total(acc).bytes_in == 80 and total(acc).bytes_out == 90


def test_without_polls_deleted_ids_are_bounded_by_count() -> None:
    """No poll is read (charon answers events but a poll hangs): the ids of deleted SAs
    are kept among the last `retired_memory`, and a poll sent before the last downs
    still counts each once. An id a poll merely missed is kept by count, not time."""
    acc = m.TrafficAccumulator(retired_memory=5000)
    mark = acc.poll_mark()
    for n in range(30_000):
        churn_one(acc, n)
    assert total(acc).bytes_in == 20 * 30_000
    assert len(acc._deleted) == 5000 and not acc._retired
    # the poll sent before them lists the last one: counted once
    acc.observe(m.parse_sas([ike({"net-29999": child("29999", 15, 15)})]), 300, mark)
    acc.observe([], 301, acc.poll_mark())
    assert total(acc).bytes_in == 20 * 30_000 and not acc._deleted
    # an SA a poll did not list (noblock skipped it) is remembered by count, not time
    acc.observe(m.parse_sas([ike({"net-x": child("x", 5, 5)})]), 302)
    acc.observe([], 303)
    acc.observe(m.parse_sas([ike({"net-x": child("x", 7, 7)})]), 303 + 3600)
    assert total(acc).bytes_in == 20 * 30_000 + 7


def test_a_deleted_sa_is_forgotten_once_a_poll_sent_after_its_delete_is_read() -> None:
    """Churn with polls every 10 s: a poll sent before a down (its mark) may still list
    that SA, so the id waits for the next poll; a poll sent after it cannot, so the id
    goes once that poll is read. Memory is the deletes of one poll interval (~1,000),
    full within one poll, not 12,000 filling for two minutes as a 120 s memory did."""
    acc = m.TrafficAccumulator()
    sizes = []
    mark = acc.poll_mark()
    for n in range(30_000):
        churn_one(acc, n)
        if n % 1000 == 999:  # a poll every 10 s, sent 10 s ago, lists nothing now
            acc.observe([], n / 100, mark)
            mark = acc.poll_mark()
            sizes.append(len(acc._deleted))
    assert total(acc).bytes_in == 20 * 30_000
    assert sizes[0] == 1000 and max(sizes) == 1000 and not acc._retired


def test_a_poll_that_raced_a_down_keeps_its_final_counters_and_the_id() -> None:
    """SA 5 is listed by a poll sent before its down arrived: the down's final counters
    stand, the SA stays gone (not alive again until the next poll), the id is kept
    until a poll sent later is read; a stale poll read after a newer one changes
    nothing."""
    acc = m.TrafficAccumulator()
    acc.observe(m.parse_sas([ike({"net-5": child("5", 100, 100)})]), 1, acc.poll_mark())
    sent = acc.poll_mark()  # a poll goes out; charon lists SA 5 at 150 bytes
    acc.apply_event("child-updown", down_event(child("5", 180, 180)), 2)
    acc.observe(m.parse_sas([ike({"net-5": child("5", 150, 150)})]), 2, sent)
    assert total(acc).bytes_in == 180 and acc.live_count == 0 and "5" in acc._deleted
    newer = acc.poll_mark()
    acc.observe([], 3, newer)
    assert not acc._deleted and not acc._retired and total(acc).bytes_in == 180
    acc.observe(m.parse_sas([ike({"net-5": child("5", 150, 150)})]), 3, sent)  # stale
    assert total(acc).bytes_in == 180 and acc.live_count == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["up", "grow", "down", "send", "list", "read"]),
                          st.integers(0, 5), st.integers(1, 300)), max_size=60))
def test_marked_polls_count_every_sa_once(ops: list[tuple[str, int, int]]) -> None:
    """A model of charon and one poll at a time: the poll is sent (its mark), charon
    lists its SAs some time later, swand reads the answer later still; ups, traffic and
    downs (with their final counters) interleave anywhere. Totals never decrease, and
    once every SA is down and a poll sent after that is read, the total is exactly the
    sum of every SA's final counters, and nothing is remembered any more."""
    acc = m.TrafficAccumulator()
    alive: dict[str, int] = {}
    final: dict[str, int] = {}
    born = 0
    sent: int | None = None
    listing: list[dict] | None = None
    last = m.ZERO

    def sas(counters: dict[str, int]) -> list:
        return m.parse_sas([ike({f"net-{u}": child(u, b, b)}, uid=f"i{u}")
                            for u, b in sorted(counters.items())])

    def step(op: str, pick: int, inc: int, at: float) -> None:
        nonlocal born, sent, listing
        uids = sorted(alive)
        if op == "up":
            born += 1
            uid = str(born)
            alive[uid] = inc
            acc.apply_event("child-updown", up_event(child(uid, inc, inc)), at)
        elif op == "grow" and uids:
            alive[uids[pick % len(uids)]] += inc
        elif op == "down" and uids:
            uid = uids[pick % len(uids)]
            final[uid] = alive.pop(uid)
            acc.apply_event("child-updown", down_event(child(uid, final[uid], final[uid])), at)
        elif op == "send" and sent is None:
            sent = acc.poll_mark()
        elif op == "list" and sent is not None and listing is None:
            listing = sas(alive)
        elif op == "read" and listing is not None:
            assert sent is not None
            acc.observe(listing, at, sent)
            sent, listing = None, None

    for n, (op, pick, inc) in enumerate(ops):
        step(op, pick, inc, float(n))
        now = total(acc)
        assert now.max(last) == now, (op, last, now)
        last = now
    while alive:
        step("down", 0, 0, 1000.0)
    for op in ("list", "read"):  # the poll in flight, if any
        step(op, 0, 0, 1001.0)
    for op in ("send", "list", "read"):
        step(op, 0, 0, 1002.0)
    assert total(acc).bytes_in == sum(final.values())
    assert acc.live_count == 0 and not acc._deleted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["poll", "down", "rekey", "restart", "gone"]),
                          st.integers(1, 4), st.integers(0, 500)), max_size=40))
def test_totals_never_decrease(ops: list[tuple[str, int, int]]) -> None:
    """Any interleaving of polls, events and restarts: no total ever goes down."""
    acc = m.TrafficAccumulator()
    counters: dict[str, int] = {}
    alive: set[str] = set()
    last = m.ZERO
    for step, (op, uid_n, inc) in enumerate(ops):
        uid = str(uid_n)
        counters[uid] = counters.get(uid, 0) + inc
        if op == "poll":
            alive.add(uid)
            acc.observe(m.parse_sas([ike({f"net-{u}": child(u, counters[u], counters[u])
                                          for u in sorted(alive)})]), step)
        elif op == "down":
            alive.discard(uid)
            acc.apply_event("child-updown", down_event(child(uid, counters[uid], 0)), step)
        elif op == "rekey":
            acc.apply_event("child-rekey", rekey_event(child(uid, counters[uid], 0),
                                                       child("9", 0, 0)), step)
        elif op == "gone":
            alive.discard(uid)
            acc.observe(m.parse_sas([ike({f"net-{u}": child(u, counters[u], counters[u])
                                          for u in sorted(alive)})]), step)
        else:
            acc.charon_restarted()
            alive.clear()
            counters.clear()
        now = total(acc)
        assert now.max(last) == now, (op, last, now)
        last = now


def test_peer_totals_pruned_after_ttl() -> None:
    acc = m.TrafficAccumulator(peer_ttl=60)
    acc.observe(m.parse_sas([ike({"net-3": child("3", 10, 20)})]), 0)
    acc.observe([], 10)
    (peer,) = acc.peer_totals()
    assert peer.peer == "c1-1@bench.test" and not peer.up and peer.traffic.bytes_in == 10
    acc.prune(30, keep=[("rw", "net")])
    assert acc.peer_totals()
    acc.prune(100, keep=[("rw", "net")])
    assert acc.peer_totals() == [] and total(acc).bytes_in == 10  # configured: kept


# --- exposition --------------------------------------------------------------------------


class _Source:
    def __init__(self, fams: list[m.Family]) -> None:
        self.fams = fams

    def families(self) -> list[m.Family]:
        return self.fams

    def scrape_took(self, seconds: float) -> None:
        pass


def golden_snapshot() -> tuple[m.MetricsSnapshot, m.SelfCounters]:
    now = 1_790_000_000.0
    acc = m.TrafficAccumulator()
    sas = m.parse_sas([ike({"net-3": child("3", 4200, 8400)})])
    acc.observe(sas, now)
    conns = (*m.parse_conns([LIST_CONN]), m.ConfiguredConn("site", ("lan",)))
    cert = m.Certificate("CN=vpn.lab.test", "CN=swand lab CA", "1234", "NONE",
                         1_780_000_000.0, 1_800_000_000.0)
    stats = m.CharonStats(start_time=now - 3600, workers_total=16, workers_idle=6,
                          workers_active=(("critical", 5), ("high", 0), ("medium", 5),
                                          ("low", 0)),
                          queues=(("critical", 0), ("high", 0), ("medium", 1), ("low", 0)),
                          scheduled=25, ike_sas_total=1, ike_sas_half_open=0)
    view = m.CharonView(taken_at=now, info=m.parse_version(VERSION), stats=stats,
                        counters=(("ike-rekey-init", 2),), conns=conns, sas=sas,
                        pools=m.parse_pools(POOLS), certs=(cert,))
    snap = m.MetricsSnapshot(charon_up=True, view=view,
                             traffic=tuple(sorted(acc.totals().items())),
                             peers=tuple(acc.peer_totals()), per_peer=True,
                             poll_duration=0.004, polled_at=now)
    selfc = m.SelfCounters(reloads=(("success", 3), ("failure", 1)),
                           last_reload_success=now - 60, loaded_items=(("conns", 2),),
                           sa_downs=(("deleted", 4), ("dpd", 2)),
                           firewall_reconciles=(("success", 7),), firewall_drift_repairs=1,
                           firewall_pass_seconds=0.875,
                           ndp_proxy_reconciles=(("success", 5),), ndp_proxy_entries=1,
                           vici_reconnects=1, charon_restarts=1,
                           events=(("child-updown", 9),), event_queue_depth=0,
                           last_scrape_duration=0.001,
                           routes=m.RouteCounters(passes=(("success", 5),), added=4, removed=2,
                                                  routes=2, drift_repairs=1),
                           gateway="gw-a")
    return snap, selfc


def render(snap: m.MetricsSnapshot, selfc: m.SelfCounters) -> str:
    fams = m.charon_families(snap) + m.self_families(selfc)
    return http_metrics.render(_Source(fams)).decode()


def test_exposition_golden() -> None:
    text = render(*golden_snapshot())
    if os.environ.get("SWAND_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    # never unique ids or SPIs as labels
    assert "58fd17f4" not in text and 'uniqueid' not in text
    assert 'swand_connection_up{connection="site"} 0.0' in text


def test_charon_down_exposes_up_zero_and_own_metrics() -> None:
    snap, selfc = golden_snapshot()
    down = m.MetricsSnapshot(charon_up=False, traffic=snap.traffic, polled_at=snap.polled_at,
                             poll_duration=snap.poll_duration)
    text = render(down, selfc)
    assert "swand_charon_up 0.0" in text
    assert "swand_sa_downs_total" in text and "swand_child_bytes_in_total" in text
    assert "swand_connection_up" not in text  # unknown while charon is down, never "0 SAs"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("up", [True, False])
def test_promtool_check_metrics_clean(up: bool) -> None:
    snap, selfc = golden_snapshot()
    if not up:
        snap = m.MetricsSnapshot(charon_up=False, traffic=snap.traffic)
    out = subprocess.run(["promtool", "check", "metrics"], input=render(snap, selfc),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr)


ETC = Path(__file__).resolve().parents[2] / "etc"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_alert_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(ETC / "prometheus" /
                                                              "swand-alerts.yml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_dashboard_uses_exported_metrics() -> None:
    import json
    import re

    dash = json.loads((ETC / "grafana" / "swand-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    text = render(*golden_snapshot())
    for name in {n for e in exprs for n in re.findall(r"swand_[a-z_]+", e)}:
        assert name in text, f"dashboard uses {name}, which swand does not export"


def test_parse_listen() -> None:
    assert http_metrics.parse_listen("127.0.0.1:9817") == ("127.0.0.1", 9817)
    assert http_metrics.parse_listen("[::1]:9817") == ("::1", 9817)
    assert http_metrics.parse_listen("") is None
    with pytest.raises(ValueError, match="listen"):
        http_metrics.parse_listen("localhost")
