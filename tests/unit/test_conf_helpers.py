"""The swanctl.conf helpers checks and profiles share: one meaning, swanctl's own."""

from __future__ import annotations

import pytest

from swand.core import profiles, swanctl
from swand.core.checks import base
from swand.core.settings import parse_text


@pytest.mark.parametrize(("value", "tokens"), [
    ("a, b", ["a", "b"]),
    # a space inside a token stays: swanctl sends one pool named "a b", not two
    # (checks split on spaces before: it judged pools charon never sees)
    ("a b, c", ["a b", "c"]),
    # a quoted token keeps its comma (profiles split inside the quotes before)
    ("'x,y', z", ["x,y", "z"]),
    (" , ,", []),
])
def test_list_splitters_agree_with_swanctl(value: str, tokens: list[str]) -> None:
    assert swanctl.split_list(value) == tokens
    assert base._list(value) == tokens
    assert list(profiles.split_list(value)) == tokens


_CONNS = """
connections {
    eap {
        pools = p
        remote {
            auth = eap-mschapv2
        }
    }
    pinned {
        pools = p
        remote {
            id = t520
        }
    }
    nopools {
        pools = ,
        remote {
            auth = pubkey
        }
    }
    fixed {
        remote_addrs = 10.0.0.0/8
        pools = p
        remote {
            auth = pubkey
        }
    }
    site {
        remote_addrs = 198.51.100.7
        remote {
            auth = pubkey
        }
    }
}
"""


def test_is_road_warrior_one_rule_for_checks_and_profiles() -> None:
    """checks said "pools set", profiles "pools set, pubkey, any id": an EAP or a pinned
    connection hands out pools to roaming clients, so both are road warriors for a user;
    `pools = ,` sends no pool, so it is none (profiles counted it before)."""
    conns = parse_text(_CONNS).sections["connections"].sections
    rw = {name for name, conn in conns.items() if swanctl.is_road_warrior(conn)}
    assert rw == {"eap", "pinned", "fixed"}
    assert {n for n, c in conns.items() if base._is_road_warrior(c)} == rw


def test_client_add_ignores_a_connection_without_pools() -> None:
    """`pools = ,` made a second candidate: `client add` could not tell which connection
    to join (fails before the shared rule)."""
    root = parse_text(_CONNS)
    assert profiles.find_road_warrior(root).name == "fixed"


def test_check_flags_proposals_separated_by_spaces() -> None:
    """`proposals = a b` is one proposal to swanctl, which charon rejects; checks split on
    spaces before and passed it (fails before the shared splitter)."""
    from swand.core import checks

    text = """
connections {
    rw {
        pools = p4
        proposals = aes256-sha256-modp2048 aes128-sha1-modp2048
        remote {
            auth = pubkey
        }
    }
}
pools {
    p4 {
        addrs = 10.9.0.0/24
    }
}
"""
    inp = checks.CheckInput(tree=parse_text(text, "swanctl.conf"), conf_file="swanctl.conf")
    errors = [f for f in checks.run_checks(inp) if f.severity == "error"]
    assert any("proposals" in str(f) and "modp2048 aes128" in str(f) for f in errors)
