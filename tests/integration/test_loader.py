"""The loader against real charons in the lab: a gateway configured only by swand."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from swand.adapters.vici import ViciSession
from swand.lab import configs, wait_for
from swand.runtime.loader import PIPELINE_MIN, ConfigLoader, config_fingerprint

in_lab = pytest.mark.lab

IKE, ESP = configs.IKE_PROPOSAL, configs.ESP_PROPOSAL


def conn(name: str, *, remote_id: str = "%any", pool: str = "pool4", extra: str = "",
         child: str = "rw") -> str:
    """A road-warrior connection of the lab gateway (encap: the lab kernel has no ESP)."""
    return f"""
    {name} {{
        version = 2
        proposals = {IKE}
        encap = yes
        dpd_delay = 2s
        pools = {pool}
        {extra}
        local {{
            auth = pubkey
            certs = gateway.pem
            id = vpn.lab.test
        }}
        remote {{
            auth = pubkey
            id = {remote_id}
        }}
        children {{
            {child} {{
                local_ts = 0.0.0.0/0
                esp_proposals = {ESP}
                dpd_action = clear
            }}
        }}
    }}"""


def gateway(*conns: str) -> str:
    return ("connections {" + "".join(conns) + "\n}\n"
            "pools {\n    pool4 { addrs = 10.8.0.128/25 }\n"
            "    pinned { addrs = 10.8.0.1/32 }\n}\n")


def sas(host: Any) -> dict[str, str]:
    """connection name -> IKE SA unique id, of the established SAs."""
    return {sa["name"]: sa["uniqueid"] for sa in host.list_sas()
            if sa.get("state") == "ESTABLISHED"}


@contextlib.asynccontextmanager
async def loaded(gw: Any) -> AsyncIterator[tuple[ConfigLoader, ViciSession]]:
    """A loader and a session on the gateway, its swanctl.conf loaded once (asserted ok):
    the start of every scenario that then changes something."""
    loader = ConfigLoader(str(gw.swanctl_dir))
    async with await ViciSession.connect(gw.vici_uri) as session:
        assert (await loader.reconcile(session, reread=True)).ok
        yield loader, session


@in_lab
def test_road_warrior_connects_to_a_gateway_configured_only_by_swand(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    gw.write_swanctl_conf(gateway(conn("rw")))
    lab.configure_clients()
    cmd = [sys.executable, "-m", "swand", "apply", "--no-firewall",
           "--swanctl-dir", str(gw.swanctl_dir), "--vici", gw.vici_uri]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("swand apply: ")
    vip = lab.connect(c1)
    assert ipaddress.ip_address(vip) in ipaddress.ip_network("10.8.0.128/25")
    # a second apply changes nothing that is up
    before = sas(gw)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sas(gw) == before


@in_lab
def test_pinned_client_gets_its_static_virtual_ip(make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=2, charon=charon_version)
    gw, c1, c2 = lab.gateway, lab.client(1), lab.client(2)
    gw.write_swanctl_conf(gateway(conn("rw"), conn("c2", remote_id=c2.ike_id,
                                                   pool="pinned")))
    lab.configure_clients()

    async def load() -> None:
        async with await ViciSession.connect(gw.vici_uri) as session:
            report = await ConfigLoader(str(gw.swanctl_dir)).reconcile(session, reread=True)
            assert report.ok, report.failure_lines()

    asyncio.run(load())
    assert lab.connect(c2) == "10.8.0.1"
    assert ipaddress.ip_address(lab.connect(c1)) in ipaddress.ip_network("10.8.0.128/25")


@in_lab
def test_edit_and_reapply_adds_changes_removes_while_an_unrelated_sa_stays(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=2, charon=charon_version)
    gw, c1, c2 = lab.gateway, lab.client(1), lab.client(2)
    lab.configure_clients()
    pinned = conn("c2", remote_id=c2.ike_id, pool="pinned")
    other = conn("other", remote_id="nobody@lab.test")
    gw.write_swanctl_conf(gateway(conn("rw"), pinned, other))

    async def scenario() -> None:
        loader = ConfigLoader(str(gw.swanctl_dir))
        async with await ViciSession.connect(gw.vici_uri) as session:
            report = await loader.reconcile(session, reread=True)
            assert report.ok, report.failure_lines()
            lab.connect(c1)
            assert lab.connect(c2) == "10.8.0.1"
            up = sas(gw)
            assert set(up) == {"rw", "c2"}

            # unchanged: not a single command
            report = await loader.reconcile(session, reread=True)
            assert report.ok and report.results == [], report.results

            # change `other`, add `added`, remove `c2` (its SA must go) and its pool,
            # keep `rw`
            gw.write_swanctl_conf(gateway(
                conn("rw"), conn("other", remote_id="nobody@lab.test", extra="mobike = no"),
                conn("added", remote_id="new@lab.test")).replace(
                    "    pinned { addrs = 10.8.0.1/32 }\n", ""))
            report = await loader.reconcile(session, reread=True)
            assert report.ok, report.failure_lines()
            done = [(r.action, r.label, r.ok) for r in report.results]
            assert done == [("load", "connection 'other'", True),
                            ("load", "connection 'added'", True),
                            ("unload", "conn 'c2'", True),
                            ("terminate", "conn 'c2'", True),
                            ("unload", "pool 'pinned'", True)], done
            conns = (await session.request("get-conns"))["conns"]
            assert sorted(conns) == ["added", "other", "rw"]
            after = sas(gw)
            assert after == {"rw": up["rw"]}  # same IKE SA, untouched; c2's SA terminated

    asyncio.run(scenario())


@in_lab
def test_broken_file_keeps_everything_and_drift_is_repaired(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    good = gateway(conn("rw"))
    gw.write_swanctl_conf(good)

    async def scenario() -> None:
        async with loaded(gw) as (loader, session):
            lab.connect(c1)
            up = sas(gw)
            gw.write_swanctl_conf(good + "connections {\n  broken {\n")
            report = await loader.reconcile(session, reread=True)
            assert not report.ok and not report.parsed
            lines = report.failure_lines()
            assert len(lines) == 1 and "swanctl.conf:" in lines[0], lines
            assert report.results == []
            assert (await session.request("get-conns"))["conns"] == ["rw"]
            assert sas(gw) == up

            # someone else (e.g. `swanctl --load-all` with other files) unloads ours and
            # clears the credentials: the periodic check repairs with the last good state
            await session.request("unload-conn", {"name": "rw"})
            await session.request("clear-creds")
            report = await loader.reconcile(session)
            assert report.results and all(r.ok for r in report.results), report.results
            # the file is still broken: not ok, but said once (at the reread), not per pass
            assert not report.ok and report.failure_lines() == []
            assert "swanctl.conf:" in str(report.standing_errors[0])
            assert (await session.request("get-conns"))["conns"] == ["rw"]
            assert (await session.request("get-keys"))["keys"]
        # a new client can authenticate against the repaired state
        c1.swanctl("--terminate", "--ike", "rw", check=False)
        lab.connect(c1)

    asyncio.run(scenario())


@in_lab
def test_a_credential_that_fails_keeps_the_last_good_state(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    gw.write_swanctl_conf(gateway(conn("rw")))
    cert = gw.swanctl_dir / "x509" / "gateway.pem"

    async def scenario() -> None:
        async with loaded(gw) as (loader, session):
            keys = (await session.request("get-keys"))["keys"]
            cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
            report = await loader.reconcile(session, reread=True)
            assert not report.ok
            text = "\n".join(report.failure_lines())
            assert "x509/gateway.pem" in text and "connection 'rw'" in text, text
            assert "clear-creds" in text  # skipped: the old certificate stays
            assert (await session.request("get-keys"))["keys"] == keys
            assert (await session.request("get-conns"))["conns"] == ["rw"]
            # the periodic check neither retries nor clears: the old certificate stays
            again = await loader.reconcile(session)
            assert again.results == [] and again.failure_lines() == [], again
            assert not again.ok and "load x509/gateway.pem" in again.refused, again.refused
            certs, _ = await session.streamed("list-certs", "list-cert", {"type": "X509"})
            assert len(certs) == 2  # gateway + CA, as loaded the first time

    asyncio.run(scenario())
    assert lab.connect(c1)


@in_lab
def test_charon_restart_gets_everything_back(make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    gw.write_swanctl_conf(gateway(conn("rw")))

    async def scenario() -> None:
        loader = ConfigLoader(str(gw.swanctl_dir))
        session = ViciSession(gw.vici_uri)
        try:
            assert (await loader.reconcile(session, reread=True)).ok
            gw.kill9()
            gw.start_charon()
            # the session reconnects lazily (the loop, blocked meanwhile, has not seen
            # charon's EOF: the first send fails and is repeated on a new connection);
            # the daemon asks for a full pass when its Charon reports charon up again
            # (the loader does not watch charon itself)
            report = await loader.reconcile(session, full=True)
            assert report.ok and report.full, report.failure_lines()
            assert (await session.request("get-conns"))["conns"] == ["rw"]
        finally:
            await session.close()

    asyncio.run(scenario())
    assert lab.connect(c1)


@in_lab
def test_many_connections_are_pipelined_and_failures_still_named(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    many = [conn(f"pin{i}", remote_id=f"pin{i}@lab.test") for i in range(PIPELINE_MIN + 4)]
    bad = conn("bad", remote_id="bad@lab.test", extra="proposals = nonsense-alg")
    children = "".join(f"c{i} {{ updown = /bin/{'x' * 30000} }}\n" for i in range(20))
    huge = conn("huge", remote_id="huge@lab.test", extra=f"children {{ {children} }}")
    text = gateway(*many[:10], bad, *many[10:15], huge, *many[15:], conn("rw"))
    gw.write_swanctl_conf(text)
    bad_line = next(i for i, line in enumerate(text.splitlines(), 1) if line.strip() == "bad {")
    huge_line = next(i for i, line in enumerate(text.splitlines(), 1)
                     if line.strip() == "huge {")

    async def scenario() -> None:
        async with await ViciSession.connect(gw.vici_uri) as session:
            report = await ConfigLoader(str(gw.swanctl_dir)).reconcile(session, reread=True)
            failed = [r for r in report.results if not r.ok]
            assert [(r.label, r.where.rsplit(":", 1)[-1]) for r in failed] == [
                ("connection 'bad'", str(bad_line)), ("connection 'huge'", str(huge_line))
            ], report.failure_lines()
            assert "524288" in failed[1].error
            conns = (await session.request("get-conns"))["conns"]
            # charon keeps the file's order (it matters among equally good matches)
            assert conns == [f"pin{i}" for i in range(10)] + [
                f"pin{i}" for i in range(10, PIPELINE_MIN + 4)] + ["rw"]

    asyncio.run(scenario())
    assert lab.connect(c1)


def test_fingerprint_follows_every_input_byte(tmp_path: Any) -> None:
    d = tmp_path / "swanctl"
    (d / "conf.d").mkdir(parents=True)
    (d / "swanctl.conf").write_text("connections { a { } }\ninclude conf.d/*.conf\n")
    first = config_fingerprint(str(d))
    assert config_fingerprint(str(d)) == first
    (d / "conf.d" / "x.conf").write_text("pools { p { addrs = 10.0.0.0/24 } }\n")
    second = config_fingerprint(str(d))
    assert second != first
    (d / "conf.d" / "x.conf").write_text("pools { p { addrs = 10.0.1.0/24 } }\n")
    third = config_fingerprint(str(d))
    assert third != second
    (d / "x509ca").mkdir()
    (d / "x509ca" / "ca.pem").write_bytes(b"CA")
    assert config_fingerprint(str(d)) != third


def test_an_edit_to_a_large_swanctl_conf_is_not_missed(tmp_path: Any) -> None:
    """The parser takes files up to 8 MiB; the fingerprint must see every byte of such a
    file too, or a SIGHUP after an edit would keep the old state."""
    from swand.core.settings import MAX_FILE_BYTES
    from swand.runtime.loader import MAX_CREDENTIAL_FILE

    d = tmp_path / "swanctl"
    d.mkdir()
    padding = "# padding\n" * ((MAX_CREDENTIAL_FILE + 1024) // 10)
    assert MAX_CREDENTIAL_FILE < len(padding) < MAX_FILE_BYTES - 1024
    (d / "swanctl.conf").write_text(padding + "connections { first { } }\n")
    loader = ConfigLoader(str(d))
    assert loader.reread()[0]
    assert loader.desired is not None and list(loader.desired.conns) == ["first"]
    (d / "swanctl.conf").write_text(padding + "connections { other { } }\n")
    assert loader.reread()[0]
    assert list(loader.desired.conns) == ["other"]


@pytest.mark.parametrize("text", [
    "connections { include conns.conf }\n",
    "connections {\n  include conns.conf # comment\n}\n",
    'connections {include "conns.conf"}\n',
])
def test_an_edit_to_an_included_file_is_noticed_wherever_the_include_stands(
        tmp_path: Any, text: str) -> None:
    d = tmp_path / "swanctl"
    d.mkdir()
    (d / "swanctl.conf").write_text(text)
    (d / "conns.conf").write_text("first { }\n")
    loader = ConfigLoader(str(d))
    assert loader.reread()[0]
    assert loader.desired is not None and list(loader.desired.conns) == ["first"]
    (d / "conns.conf").write_text("other { }\n")
    assert loader.reread()[0]
    assert list(loader.desired.conns) == ["other"]


def test_a_fifo_among_the_inputs_is_refused_not_waited_on(tmp_path: Any) -> None:
    """open() of a FIFO waits for a writer: a FIFO in a credential folder, named by a
    connection or matched by an include must be an unreadable file, not a hung reread."""
    import os
    import signal

    d = tmp_path / "swanctl"
    (d / "x509").mkdir(parents=True)
    (d / "conf.d").mkdir()
    (d / "swanctl.conf").write_text(
        "connections { a { local { certs = named.pem } } }\ninclude conf.d/*.conf\n")
    (d / "x509" / "real.pem").write_bytes(b"CERT")
    os.mkfifo(d / "x509" / "fifo.pem")
    os.mkfifo(d / "x509" / "named.pem")
    os.mkfifo(d / "conf.d" / "fifo.conf")

    class Hung(Exception):  # not an OSError: the code under test must not swallow it
        pass

    def hung(*_: Any) -> None:
        raise Hung("blocked opening a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    pytest_timeout = signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        config_fingerprint(str(d))
        loader = ConfigLoader(str(d))
        ok, errors = loader.reread()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pytest_timeout[0]:
            signal.setitimer(signal.ITIMER_REAL, *pytest_timeout)
    # the include is the parser's business (its own error); the files are reported
    assert not ok, errors
    assert "fifo.conf" in str(errors[0]) and "not a regular file" in str(errors[0])
    (d / "conf.d" / "fifo.conf").unlink()
    ok, errors = loader.reread()
    assert ok
    assert loader.desired is not None
    assert list(loader.desired.certs) == ["x509/real.pem"]
    assert [str(e) for e in errors] == [
        f"{d}/swanctl.conf:1: connection 'a': loading certs certificate "
        f"'{d}/x509/named.pem' failed: not a regular file"], errors


@in_lab
def test_an_item_over_vici_limits_fails_alone_with_a_clear_error(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    # values are limited by the parser (64 KiB); a message by VICI (512 KiB)
    children = "".join(f"c{i} {{ updown = /bin/{'x' * 30000} }}\n" for i in range(20))
    huge = conn("huge", remote_id="huge@lab.test", extra=f"children {{ {children} }}")
    gw.write_swanctl_conf(gateway(conn("rw"), huge))

    async def scenario() -> None:
        async with await ViciSession.connect(gw.vici_uri) as session:
            report = await ConfigLoader(str(gw.swanctl_dir)).reconcile(session, reread=True)
            lines = report.failure_lines()
            assert len(lines) == 1 and "connection 'huge'" in lines[0], lines
            assert "524288" in lines[0] and "swanctl.conf:" in lines[0], lines
            assert (await session.request("get-conns"))["conns"] == ["rw"]

    asyncio.run(scenario())
    assert lab.connect(c1)


@in_lab
def test_rotated_gateway_certificate_and_key_replace_the_old_ones(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=2, charon=charon_version)
    gw, c1, c2 = lab.gateway, lab.client(1), lab.client(2)
    lab.configure_clients()
    gw.write_swanctl_conf(gateway(conn("rw")))

    async def scenario() -> None:
        async with loaded(gw) as (loader, session):
            old_keys = (await session.request("get-keys"))["keys"]
            old_serial = gw.cert.cert.serial_number
            lab.connect(c1)
            up = sas(gw)
            fresh = lab.ca.issue("gateway", dns=("vpn.lab.test",), ips=("192.0.2.1",),
                                 server=True)
            fresh.install(gw.swanctl_dir, lab.ca)
            report = await loader.reconcile(session, reread=True)
            assert report.ok, report.failure_lines()
            actions = [r.action for r in report.results]
            # new credentials first, then the connection, then the old ones go
            assert actions[:2] == ["load", "load"] and "clear-creds" in actions, actions
            keys = (await session.request("get-keys"))["keys"]
            assert len(keys) == 1 and keys != old_keys
            certs, _ = await session.streamed("list-certs", "list-cert", {"type": "X509"},
                                               decode=False)
            serials = {x509_serial(c["data"]) for c in certs}
            assert fresh.cert.serial_number in serials and old_serial not in serials
            assert sas(gw) == up  # the established SA is not disturbed

    asyncio.run(scenario())
    assert lab.connect(c2)  # a new client authenticates the new certificate


def x509_serial(data: bytes) -> int:
    from cryptography import x509

    return x509.load_der_x509_certificate(data).serial_number


@in_lab
def test_pool_with_online_leases_is_reported_and_the_rest_still_loads(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    text = gateway(conn("rw"))
    gw.write_swanctl_conf(text)

    async def scenario() -> None:
        async with loaded(gw) as (loader, session):
            lab.connect(c1)
            gw.write_swanctl_conf(text.replace("10.8.0.128/25", "10.9.0.0/24").replace(
                "connections {", "connections {" + conn("added", remote_id="x@lab.test")))
            report = await loader.reconcile(session, reread=True)
            lines = report.failure_lines()
            assert len(lines) == 1 and "pool 'pool4'" in lines[0], lines
            assert "online leases" in lines[0] and "swanctl.conf:" in lines[0], lines
            conns = (await session.request("get-conns"))["conns"]
            assert sorted(conns) == ["added", "rw"]
            pools = await session.request("get-pools")
            # the old pool stays (5.9 reports the network as base, 6.0 its first address)
            assert ipaddress.ip_address(pools["pool4"]["base"]) in ipaddress.ip_network(
                "10.8.0.128/25")
            # the periodic check does not retry (and log) it every interval
            again = await loader.reconcile(session)
            assert again.results == [] and again.failure_lines() == []
            assert not again.ok and again.refused == ["load pool 'pool4'"]
            # removing the pool while the lease is online: refused once, not every pass
            gw.write_swanctl_conf(text.replace("    pool4 { addrs = 10.8.0.128/25 }\n", "")
                                  .replace("pools = pool4", "pools = pinned"))
            report = await loader.reconcile(session, reread=True)
            lines = report.failure_lines()
            assert len(lines) == 1 and "unload pool 'pool4'" in lines[0], lines
            assert "online leases" in lines[0], lines
            again = await loader.reconcile(session)
            assert again.failure_lines() == [] and again.refused == ["unload pool 'pool4'"]
            # once the client is gone, the periodic check converges
            c1.swanctl("--terminate", "--ike", "rw")
            wait_for(lambda: not gw.list_sas(), 10, message="the SA to go")
            done = await loader.reconcile(session)
            assert done.ok and [(r.action, r.label) for r in done.results] == [
                ("unload", "pool 'pool4'")], done
            assert "pool4" not in await session.request("get-pools")

    asyncio.run(scenario())


@in_lab
def test_a_failing_pool_in_a_pipelined_run_stops_connections_like_swanctl(
        make_lab: Any, charon_version: str) -> None:
    lab = make_lab(clients=0, charon=charon_version)
    gw = lab.gateway
    pools = "".join(f"    p{i} {{ addrs = 10.20.{i}.0/24 }}\n" for i in range(PIPELINE_MIN))
    gw.write_swanctl_conf(gateway(conn("rw")).replace(
        "pools {\n", "pools {\n" + pools + "    broken { addrs = not-an-address }\n"))

    async def scenario() -> None:
        async with await ViciSession.connect(gw.vici_uri) as session:
            report = await ConfigLoader(str(gw.swanctl_dir)).reconcile(session, reread=True)
            lines = report.failure_lines()
            assert "pool 'broken'" in lines[0], lines
            assert lines[1:] == ["skipped: load connection 'rw' (a pool failed to load)"], lines
            assert (await session.request("get-conns"))["conns"] == []
            assert len(await session.request("get-pools")) == PIPELINE_MIN + 2

    asyncio.run(scenario())


@in_lab
def test_swanctl_load_all_beside_swand_leaves_nothing_to_repair(
        make_lab: Any, charon_version: str) -> None:
    """Debian's strongswan.service runs `swanctl --load-all` on start and reload, reading
    the same folder: swand's next check finds nothing to do, and what a different file
    unloaded is back after one check."""
    lab = make_lab(clients=1, charon=charon_version)
    gw, c1 = lab.gateway, lab.client(1)
    lab.configure_clients()
    gw.write_swanctl_conf(gateway(conn("rw"), conn("other", remote_id="x@lab.test")))

    async def scenario() -> None:
        async with loaded(gw) as (loader, session):
            lab.connect(c1)
            up = sas(gw)
            gw.swanctl("--load-all", "--noprompt")
            report = await loader.reconcile(session)
            assert report.ok and report.results == [], report.results
            # an older copy of the file, loaded by swanctl, unloads `other`
            old = gw.write_swanctl_conf(gateway(conn("rw")), name="old.conf")
            gw.swanctl("--load-conns", "--file", str(old))
            assert (await session.request("get-conns"))["conns"] == ["rw"]
            report = await loader.reconcile(session)
            assert [(r.action, r.label) for r in report.results] == [
                ("load", "connection 'other'")], report.results
            assert sas(gw) == up

    asyncio.run(scenario())
