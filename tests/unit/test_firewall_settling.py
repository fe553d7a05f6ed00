"""CHILD_SAs moving between IKE_SAs keep their forward rules (charon 5.9 and 6.0).

The payloads are what both versions' `list-sas` showed in the lab while an IKE rekey ran:
the old IKE_SA DELETING without children, the new one not yet listed."""

from __future__ import annotations

from swand.core.firewall import ChildSA, held_child_sas, ike_sas_settling

SA1 = ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",))
SA2 = ChildSA("rw", "rw", 2, ("0.0.0.0/0",), ("10.8.0.130/32",))


def test_an_ike_sa_mid_rekey_or_deleting_is_settling() -> None:
    assert ike_sas_settling([{"rw": {"state": "DELETING", "child-sas": {}}}])
    assert ike_sas_settling([{"rw": {"state": "ESTABLISHED"}}, {"rw": {"state": "REKEYED"}}])
    assert not ike_sas_settling([{"rw": {"state": "ESTABLISHED", "child-sas": {}}}])
    assert not ike_sas_settling([])


def test_a_missing_child_sa_is_held_only_while_settling_and_within_hold() -> None:
    seen = held_child_sas([SA1, SA2], {}, 10.0, settling=False, hold=0.5)
    assert seen == {SA1: 10.0, SA2: 10.0}
    # the rekey window: SA1's IKE_SA is being replaced, SA1 not listed
    seen = held_child_sas([SA2], seen, 10.1, settling=True, hold=0.5)
    assert seen == {SA1: 10.0, SA2: 10.1}
    # settled: listed again under the new IKE_SA, nothing held
    assert held_child_sas([SA1, SA2], seen, 10.3, settling=False, hold=0.5) == {
        SA1: 10.3, SA2: 10.3}
    # really gone: dropped as soon as nothing settles, or after `hold` even if something does
    assert held_child_sas([SA2], seen, 10.2, settling=False, hold=0.5) == {SA2: 10.2}
    assert held_child_sas([SA2], seen, 10.6, settling=True, hold=0.5) == {SA2: 10.6}
