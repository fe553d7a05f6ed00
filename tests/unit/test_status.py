"""`swand status`: table at 80 columns, configured-but-down shown, --json, no daemon."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from swand.commands import status
from swand.core import metrics as m
from swand.core.events import ChildSa, IkeSa

NOW = 1_790_000_000.0


def view() -> m.CharonView:
    sa = IkeSa(
        conn="roadwarriors", uniqueid="7", state="ESTABLISHED",
        remote_host="198.51.100.11", remote_id="CN=client1@lab.test",
        remote_eap_id="a-very-long-eap-identity@corp.example.org",
        remote_vips=("10.8.0.129",), established=7300,
        children=(ChildSa("rw", "9", "INSTALLED", "1", bytes_in=5 * 1024 * 1024,
                          bytes_out=1536, packets_in=4000, packets_out=12),),
    )
    return m.CharonView(
        taken_at=NOW, info=m.CharonInfo("charon-systemd", "5.9.8"),
        conns=(m.ConfiguredConn("roadwarriors", ("rw",)), m.ConfiguredConn("site", ("lan",))),
        sas=(sa,),
    )


def test_table_fits_80_columns_and_shows_down_connections() -> None:
    downs = {"site": {"reason": "dpd", "peer": "site.example", "at": NOW - 300}}
    out = io.StringIO()
    status.render_table(status.status_model(view(), downs), NOW, out)
    text = out.getvalue()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0].split()[:2] == ["CONNECTION", "REMOTE"]
    sa_line = next(line for line in lines if line.startswith("roadwarri"))
    assert "198.51.100.11" in sa_line and "10.8.0.129" in sa_line and " up " in sa_line
    assert "2h01m" in sa_line
    assert "in 5.0 MiB, out 1.5 KiB" in text
    site = next(line for line in lines if line.startswith("site"))
    assert "down" in site
    assert "last down: dpd site.example (5m00s ago)" in text


def test_json_model() -> None:
    model = status.status_model(view(), {})
    json.dumps(model)  # serialisable
    by_name = {c["name"]: c for c in model["connections"]}
    assert by_name["site"]["configured"] and not by_name["site"]["up"]
    rw = by_name["roadwarriors"]
    assert rw["up"] and rw["sas"][0]["virtual_ips"] == ["10.8.0.129"]
    assert rw["sas"][0]["children"][0]["bytes_in"] == 5 * 1024 * 1024
    assert rw["sas"][0]["remote_id"].startswith("a-very-long-eap")


def test_run_reads_charon_directly(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    async def fake_fetch(uri: str, timeout: float, *_: object) -> m.CharonView:
        assert uri == "unix:///nowhere/charon.vici"
        return view()

    monkeypatch.setattr(status, "fetch_view", fake_fetch)
    args = argparse.Namespace(config=str(tmp_path / "none.toml"), vici=None, json=True,
                              state=str(tmp_path / "absent.json"), timeout=1.0)
    (tmp_path / "none.toml").write_text('[charon]\nvici = "unix:///nowhere/charon.vici"\n')
    assert status.run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in doc["connections"]] == ["roadwarriors", "site"]


def test_run_without_charon_says_so(capsys, tmp_path) -> None:
    args = argparse.Namespace(config=None, vici=f"unix://{tmp_path}/missing.vici",
                              json=False, state=str(tmp_path / "x.json"), timeout=1.0)
    assert status.run(args) == 1
    assert "charon is not reachable" in capsys.readouterr().err


def test_dual_stack_and_v6_only_clients_show_their_ipv6_address() -> None:
    import dataclasses

    base = view()
    dual = dataclasses.replace(base.sas[0], remote_vips=("10.8.0.129", "2001:db8:2::1001"))
    v6only = dataclasses.replace(base.sas[0], uniqueid="8", remote_host="2001:db8:100::11",
                                 remote_vips=("2001:db8:2::1002",))
    out = io.StringIO()
    model = status.status_model(dataclasses.replace(base, sas=(dual, v6only)), {})
    status.render_table(model, NOW, out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "10.8.0.129" in lines[1] and lines[2].strip() == "virtual IPv6: 2001:db8:2::1001"
    assert "v6 only" in lines[4] and lines[5].strip() == "virtual IPv6: 2001:db8:2::1002"
