"""`swand check` across a fleet: pools that two gateways could lease twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swand.cli import main
from swand.core.fleet import check_fleet_pools, gateway_pools
from swand.core.settings import parse_text


def conf(pool: str, pinned: str = "10.8.0.1/32", pinned_id: str = "CN=t520") -> str:
    return f"""connections {{
    rw {{
        pools = dyn
        remote {{ auth = pubkey }}
    }}
    t520 {{
        pools = pin
        remote {{
            auth = pubkey
            id = "{pinned_id}"
        }}
    }}
}}
pools {{
    dyn {{ addrs = {pool} }}
    pin {{ addrs = {pinned} }}
}}
"""


def check(a: str, b: str) -> list[tuple[str, str]]:
    local = gateway_pools("a.conf", parse_text(a, "a.conf"))
    peer = gateway_pools("b.conf", parse_text(b, "b.conf"))
    return [(f.code, f.message) for f in check_fleet_pools(local, [peer])]


def test_slices_and_identical_pinned_pools_are_fine() -> None:
    assert check(conf("10.8.1.0/24"), conf("10.8.2.0/24")) == []


def test_overlapping_dynamic_pools_warn_naming_both() -> None:
    found = check(conf("10.8.1.0/24"), conf("10.8.1.128/25"))
    assert [code for code, _ in found] == ["fleet-pool-overlap"]
    assert "pool 'dyn' (10.8.1.0/24) overlaps pool 'dyn' (10.8.1.128/25) of b.conf" in \
        found[0][1]


def test_pinned_address_inside_a_peer_dynamic_pool_warns() -> None:
    found = check(conf("10.8.1.0/24"), conf("10.8.2.0/24", pinned="10.8.1.5/32"))
    assert ("fleet-pool-overlap" in {c for c, _ in found})
    assert any("pool 'dyn' (10.8.1.0/24) overlaps pool 'pin' (10.8.1.5/32)" in m
               for _, m in found)


def test_pinned_to_another_identity_on_the_peer_warns() -> None:
    found = check(conf("10.8.1.0/24"), conf("10.8.2.0/24", pinned_id="CN=other"))
    assert [code for code, _ in found] == ["fleet-pinned-differs"]
    assert "CN=t520 here but to CN=other in b.conf" in found[0][1]


def test_command_reads_fleet_peers_and_flag(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "swanctl"
    d.mkdir()
    (d / "swanctl.conf").write_text(conf("10.8.1.0/24"))
    peer = tmp_path / "b.conf"
    peer.write_text(conf("10.8.1.0/25"))
    toml = tmp_path / "swand.toml"
    toml.write_text(f'[fleet]\npeers = ["{peer}", "{tmp_path}/missing.conf"]\n')
    main(["check", "--no-system", "--json", "-c", str(toml), "--swanctl-dir", str(d)])
    doc = json.loads(capsys.readouterr().out)
    codes = {(f["code"], f["file"]) for f in doc["findings"] if f["code"].startswith("fleet")}
    assert codes == {("fleet-pool-overlap", str(d / "swanctl.conf")),
                     ("fleet-peer", f"{tmp_path}/missing.conf")}
    # --fleet replaces [fleet] peers
    other = tmp_path / "c.conf"
    other.write_text(conf("10.8.3.0/24"))
    main(["check", "--no-system", "--json", "-c", str(toml), "--swanctl-dir", str(d),
          "--fleet", str(other)])
    doc = json.loads(capsys.readouterr().out)
    assert not [f for f in doc["findings"] if f["code"].startswith("fleet")]
