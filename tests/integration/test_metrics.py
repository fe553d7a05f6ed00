"""/metrics of the real `swand run` on the lab gateway: traffic counters grow by at least
what was sent, do not drop across a rekey or a DPD clear, the DPD is counted and the
connection shows configured-but-down, and a killed charon reads `up 0` at once."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from swand.lab import INTERNET_HOST, Lab, configs, wait_for
from swand.lab.daemon import SwandProcess, start_swand, swand_toml

pytestmark = pytest.mark.lab

LISTEN = "127.0.0.1:9817"
URL = f"http://{LISTEN}/metrics"
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(lab: Lab) -> dict[str, float]:
    """Samples by `name{labels}` (labels as prometheus-client orders them)."""
    out = {}
    for line in lab.gateway.http_get(URL).splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


RW = '{child="rw",connection="rw"}'


def traffic(lab: Lab) -> tuple[float, float, float, float]:
    s = scrape(lab)
    return tuple(s.get(f"swand_child_{k}_total{RW}", 0.0)  # type: ignore[return-value]
                 for k in ("bytes_in", "bytes_out", "packets_in", "packets_out"))


def child_ids(lab: Lab) -> set[str]:
    return {c["uniqueid"] for sa in lab.gateway.list_sas()
            for c in sa.get("child-sas", {}).values()}


def ping(lab: Lab, count: int, size: int) -> None:
    lab.client(1).run(["ping", "-n", "-q", "-c", str(count), "-s", str(size), "-i", "0.05",
                       "-W", "2", INTERNET_HOST], timeout=count + 10)


def test_counters_rekey_dpd_and_configured_but_down(lab: Lab):
    gw, client = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(configs.gateway_conf(dpd_delay="2s"))
    with start_swand(gw, metrics=LISTEN) as swand:
        lab.gateway_nat()
        lab.configure_clients([client])
        lab.connect(client)
        wait_for(lambda: scrape(lab).get('swand_connection_up{connection="rw"}') == 1.0, 15,
                 message="swand_connection_up{rw} 1")
        before = traffic(lab)

        count, size = 40, 1000
        ping(lab, count, size)
        sent = count * (size + 8 + 20)  # ICMP payload + header + IPv4 header, each way
        # the poller reads charon every [charon] interval (2 s in the lab's swand.toml)
        wait_for(lambda: traffic(lab)[0] - before[0] >= sent, 15, interval=0.5,
                 message=lambda: f"bytes in to grow by {sent}: {before} -> {traffic(lab)}")
        after_ping = traffic(lab)
        assert after_ping[1] - before[1] >= sent  # the replies went out
        assert after_ping[2] - before[2] >= count and after_ping[3] - before[3] >= count

        # rekey the CHILD_SA: charon restarts its counters; ours must not drop
        old_child = child_ids(lab)
        gw.swanctl("--rekey", "--child", "rw")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            now = traffic(lab)
            assert all(n >= a for n, a in zip(now, after_ping, strict=True)), (after_ping, now)
            time.sleep(0.3)
        wait_for(lambda: child_ids(lab) - old_child, 5, message="a new CHILD_SA after --rekey")
        ping(lab, 10, size)
        wait_for(lambda: traffic(lab)[0] - after_ping[0] >= 10 * (size + 28), 15, interval=0.5,
                 message="traffic after the rekey to add up")
        after_rekey = traffic(lab)

        # DPD clear: counted by reason, the connection reads configured but down
        client.kill9()
        swand.wait_for_event("sa_down", timeout=12, reason="dpd")
        wait_for(lambda: scrape(lab).get('swand_connection_up{connection="rw"}') == 0.0, 15,
                 message="swand_connection_up{rw} 0 after the DPD clear")
        s = scrape(lab)
        assert s['swand_sa_downs_total{reason="dpd"}'] == 1.0
        assert s['swand_connection_configured{connection="rw"}'] == 1.0
        final = traffic(lab)
        assert all(f >= a for f, a in zip(final, after_rekey, strict=True)), (after_rekey, final)


def test_charon_killed_reads_up_zero_at_once(lab: Lab):
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, metrics=LISTEN) as swand:
        wait_for(lambda: scrape(lab).get("swand_charon_up") == 1.0, 15,
                 message="swand_charon_up 1")
        gw.kill9()
        killed = time.monotonic()

        def up_zero() -> bool:
            started = time.monotonic()
            s = scrape(lab)  # raises on anything but 200
            assert time.monotonic() - started < 1.0, "a scrape took more than 1 s"
            return s.get("swand_charon_up") == 0.0

        wait_for(up_zero, 5, interval=0.05, message="swand_charon_up 0")
        assert time.monotonic() - killed <= 1.0 + 0.5  # + one http_get interpreter start
        s = scrape(lab)
        assert s['swand_reloads_total{result="success"}'] >= 1.0  # swand's own metrics
        assert not any(k.startswith("swand_connection_up") for k in s)

        gw.start_charon()
        wait_for(lambda: scrape(lab).get("swand_charon_up") == 1.0, 20,
                 message="swand_charon_up 1 after the restart")
        assert scrape(lab)["swand_charon_restarts_total"] == 1.0, swand.tail(30)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_live_exposition_is_promtool_clean(lab: Lab):
    gw = lab.gateway
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, metrics=LISTEN):
        lab.configure_clients([lab.client(1)])
        lab.connect(lab.client(1))
        wait_for(lambda: scrape(lab).get('swand_connection_up{connection="rw"}') == 1.0, 15,
                 message="swand_connection_up{rw} 1")
        # the SA's event shows it at once; pool leases come with the next periodic poll
        leased = 'swand_pool_leases{pool="pool4",state="online"} 1.0'
        wait_for(lambda: leased in gw.http_get(URL), 15, message="the lease, polled")
        text = gw.http_get(URL)
        out = subprocess.run(["promtool", "check", "metrics"], input=text,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout
        assert "swand_certificate_not_after_timestamp_seconds{" in text
        assert leased in text
        assert 'swand_charon_ike_events_total{counter="ike-auth-in-req"}' in text  # counters


def test_status_reads_charon_without_the_daemon(lab: Lab):
    """`swand status` against the gateway's charon with no swand running: the client's
    SA with its virtual IP, and a configured connection without SAs shown as down."""
    gw, client = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(configs.gateway_conf() + """
connections {
    site {
        remote_addrs = 198.51.100.99
        local {
            auth = psk
        }
        remote {
            auth = psk
        }
        children {
            lan {
                remote_ts = 10.99.0.0/24
            }
        }
    }
}
""")
    gw.swanctl("--load-all")
    lab.configure_clients([client])
    vip = lab.connect(client)
    argv = [sys.executable, "-m", "swand", "status", "--vici", gw.vici_uri,
            "--state", "/nonexistent/last-downs.json"]
    table = gw.run(argv).stdout
    assert all(len(line) <= 80 for line in table.splitlines()), table
    rw_line = next(line for line in table.splitlines() if line.startswith("rw "))
    assert vip in rw_line and client.address in rw_line and " up " in rw_line, table
    assert any(line.startswith("site ") and " down " in line for line in table.splitlines())
    doc = json.loads(gw.run([*argv, "--json"]).stdout)
    conns = {c["name"]: c for c in doc["connections"]}
    assert conns["rw"]["up"] and conns["rw"]["sas"][0]["virtual_ips"] == [vip]
    assert conns["site"]["configured"] and not conns["site"]["up"]


def test_per_peer_series_only_when_asked(lab: Lab):
    gw, client = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(configs.gateway_conf())
    toml = swand_toml(gw, metrics=LISTEN).replace(
        f'listen = "{LISTEN}"', f'listen = "{LISTEN}"\nper_peer = true')
    with SwandProcess(gw, toml) as swand:
        swand.wait_for_event("config_reconciled", timeout=15)
        lab.configure_clients([client])
        vip = lab.connect(client)
        peer = f'connection="rw",remote_id="{client.ike_id}"'
        wait_for(lambda: scrape(lab).get(f"swand_peer_up{{{peer}}}") == 1.0, 15,
                 message="swand_peer_up 1")
        text = gw.http_get(URL)
        info = next(line for line in text.splitlines() if line.startswith("swand_peer_info{"))
        assert f'virtual_ip="{vip}"' in info and f'remote_host="{client.address}"' in info
        client.swanctl("--terminate", "--ike", "rw")
        # gone, but kept (at 0) until pruned: a scrape in between still sees its last totals
        wait_for(lambda: scrape(lab).get(f"swand_peer_up{{{peer}}}") == 0.0, 15,
                 message="swand_peer_up 0 after the terminate")
        assert not any(line.startswith("swand_peer_info{") for line in
                       gw.http_get(URL).splitlines())


def test_no_per_peer_series_by_default(lab: Lab):
    gw, client = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(configs.gateway_conf())
    with start_swand(gw, metrics=LISTEN):
        lab.configure_clients([client])
        lab.connect(client)
        wait_for(lambda: scrape(lab).get('swand_connection_up{connection="rw"}') == 1.0, 15,
                 message="swand_connection_up{rw} 1")
        text = gw.http_get(URL)
        assert "swand_peer_" not in text and client.ike_id not in text
