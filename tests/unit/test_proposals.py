"""core.proposals: one keyword table and parser for `swand check` and `swand client add`."""

from __future__ import annotations

import pytest

from swand.core import checks, profiles, proposals
from swand.core.proposals import ProposalError, parse_proposal, tokenize


def test_canonical_names_for_the_platform_tables() -> None:
    p = parse_proposal("AES-aes256-sha2_256-prfsha384-x25519", "ike")
    assert p.tokens == ("aes", "aes256", "sha2_256", "prfsha384", "x25519")
    assert p.encryption == ("aes128", "aes256")
    assert p.integrity == ("sha256",)
    assert p.prf == ("sha384",) and p.prfs == ("sha384",)
    assert p.dh == ("curve25519",)
    assert parse_proposal("aes256gcm-prfsha384-ecp384", "ike").encryption == ("aes256gcm16",)
    esp = parse_proposal("aes256-sha256-modpnone-esn", "esp")
    assert esp.dh == () and esp.esn == ("esn",)
    assert parse_proposal("aes256-sha256-ecp384", "ike").prfs == ("sha256",)


@pytest.mark.parametrize(("text", "kind", "why"), [
    ("aes257-sha256-ecp384", "ike", "unknown algorithm keyword 'aes257'"),
    ("aes256-sha256", "ike", "needs a key exchange"),
    ("aes256gcm16-aes256-ecp384", "esp", "mixes AEAD"),
    ("sha256-ecp384", "esp", "no encryption algorithm"),
    ("aes256gcm16-prfsha384-ecp384-ke1_mlkem768", "ike", "charon 6.0 only"),
    ("aes256-sha256-ecp384!", "ike", "unknown algorithm keyword 'ecp384!'"),
])
def test_invalid_proposals_name_the_reason(text: str, kind: str, why: str) -> None:
    with pytest.raises(ProposalError, match=why):
        parse_proposal(text, kind)
    assert tokenize(text).problem(kind) is None or why != "charon 6.0 only"


def test_default_expands_to_charons_lists() -> None:
    assert len(proposals.parse_proposals(["default"], "ike")) == len(proposals.DEFAULT_IKE)
    assert len(proposals.parse_proposals(["default"], "esp")) == len(proposals.DEFAULT_ESP)


def test_a_keyword_charon_knows_no_longer_splits_check_and_client_add() -> None:
    """Before one table, `blowfish128` was valid for `swand check` but unknown to the
    profile parser: check said no proposal suits Windows and `client add` refused the
    whole gateway. Now both read it alike."""
    ike = "aes256-blowfish128-sha384-prfsha384-ecp384"
    gw = profiles.GatewayInfo("gw", "gw", ike_proposals=(ike,))
    assert profiles.windows_params(gw).ike.keywords() == "aes256-sha384-prfsha384-ecp384"
    assert checks.windows_can_negotiate(tokenize(ike), "ike")
