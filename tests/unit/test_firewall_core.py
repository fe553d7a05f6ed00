"""The pure firewall core: golden iptables-save text for the reference setup in both modes,
the diff (observed tags -> minimal ops), VICI input parsing, validation, sysctls.

Regenerate the golden files after an intended change with
``SWAND_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_firewall_core.py``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swand.config import FirewallSettings, SysctlSettings
from swand.core.firewall import (
    CHAIN_FWD,
    CHAIN_MSS,
    CHAIN_NAT,
    ChildSA,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DesiredFirewall,
    FirewallInputError,
    FirewallInputs,
    InsertRule,
    ObservedTable,
    Pool,
    Rule,
    SaRuleCache,
    child_sas_from_vici,
    desired_firewall,
    diff_chain,
    diff_table,
    plan,
    pools_from_vici,
    render_save,
    resolve_mode,
    validate,
)
from swand.core.sysctl import desired_sysctls, sysctl_changes

GOLDEN = Path(__file__).parent / "data" / "firewall"

REFERENCE_POOLS = (
    Pool.from_addrs("pool4", "10.8.0.128/25"),
    Pool.from_addrs("pinned-alice", "10.8.0.1/32"),
)
REFERENCE_SAS = (
    ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",)),
    ChildSA("alice", "rw", 2, ("0.0.0.0/0",), ("10.8.0.1/32",)),
)


def reference(mode: str = "policy", **settings: object) -> FirewallInputs:
    return FirewallInputs(
        FirewallSettings(**settings),  # type: ignore[arg-type]
        mode,  # type: ignore[arg-type]
        "eth0", REFERENCE_POOLS, REFERENCE_SAS,
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SWAND_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the golden file"


@pytest.mark.parametrize("mode", ["policy", "interface"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_reference_setup_golden(mode: str, family: str) -> None:
    desired = desired_firewall(reference(mode))
    check_golden(f"reference-{mode}-{family}.save", render_save(desired, family))  # type: ignore[arg-type]


def test_policy_mode_rules_read_like_updown_and_the_issue() -> None:
    text = render_save(desired_firewall(reference("policy")), "ipv4")
    assert ("-A SWAND-NAT -s 10.8.0.128/25 -o eth0 -m policy --dir out --pol ipsec "
            "-m comment --comment") in text
    assert "-A SWAND-NAT -s 10.8.0.128/25 -o eth0 -m comment --comment" in text
    assert ("-A SWAND-MSS -p tcp -m policy --dir in --pol ipsec -m tcp --tcp-flags SYN,RST "
            "SYN -m tcpmss --mss 1361:1536 -m comment") in text
    assert ("-A SWAND-FWD -s 10.8.0.129/32 -m policy --dir in --pol ipsec --reqid 1 "
            "--proto esp -m comment") in text
    assert ("-A SWAND-FWD -d 10.8.0.129/32 -m policy --dir out --pol ipsec --reqid 1 "
            "--proto esp -m comment") in text
    # the exemption precedes the masquerade of the same pool
    lines = text.splitlines()
    accept = next(i for i, ln in enumerate(lines) if "10.8.0.128/25" in ln and "ACCEPT" in ln)
    masq = next(i for i, ln in enumerate(lines) if "10.8.0.128/25" in ln and "MASQ" in ln)
    assert accept < masq


def test_interface_mode_uses_the_tun_device_instead_of_the_policy_match() -> None:
    text = render_save(desired_firewall(reference("interface")), "ipv4")
    assert "policy" not in text
    assert "-A SWAND-MSS -i ipsec0 -p tcp" in text and "-A SWAND-MSS -o ipsec0 -p tcp" in text
    assert "-A SWAND-NAT -s 10.8.0.128/25 -o ipsec0 -m comment" in text
    assert "-A SWAND-FWD -s 10.8.0.129/32 -i ipsec0 -m comment" in text


def test_tags_are_deterministic_unique_and_change_with_the_rule() -> None:
    a, b = desired_firewall(reference()), desired_firewall(reference())
    assert render_save(a, "ipv4") == render_save(b, "ipv4")
    tags = [r.tag for t in a.tables.values() for rs in t.chains.values() for r in rs]
    assert len(tags) == len(set(tags))
    other = desired_firewall(reference(mss=1300))
    assert a.tags() != other.tags()
    assert all(len(t) == 18 and t.startswith("swand:") for t in tags)


def test_switches_mss_off_nat_off_disabled() -> None:
    d = desired_firewall(reference(mss=0))
    assert not any(CHAIN_MSS in t.chains for t in d.tables.values())
    d = desired_firewall(reference(nat=False))
    assert ("ipv4", "nat") not in d.tables
    d = desired_firewall(reference(forward_rules=False))
    assert ("ipv4", "filter") not in d.tables
    assert desired_firewall(reference(enabled=False)).tables == {}


def test_nat66_and_ipv6_pools() -> None:
    pools = (*REFERENCE_POOLS, Pool.from_addrs("pool6", "fd00:8::/112"))
    sas = (ChildSA("rw6", "rw", 7, ("::/0",), ("fd00:8::2/128",)),)
    inputs = FirewallInputs(FirewallSettings(nat66=True), "policy", "eth0", pools, sas)
    text6 = render_save(desired_firewall(inputs), "ipv6")
    assert "-A SWAND-NAT -s fd00:8::/112 -o eth0 -m comment" in text6
    assert "-A SWAND-FWD -s fd00:8::2/128 -m policy --dir in" in text6
    assert "10.8.0" not in text6
    no66 = dataclasses.replace(inputs, settings=FirewallSettings())
    assert ("ipv6", "nat") not in desired_firewall(no66).tables


def test_traffic_selectors_with_protocol_ports_and_ranges() -> None:
    sa = ChildSA("s2s", "web", 9, ("10.1.0.0/16[tcp/80]",), ("10.8.0.1..10.8.0.2[tcp]",))
    inputs = FirewallInputs(FirewallSettings(), "policy", "eth0", (), (sa,))
    lines = [ln for ln in render_save(desired_firewall(inputs), "ipv4").splitlines()
             if ln.startswith("-A SWAND-FWD")]
    assert lines[0].startswith(
        "-A SWAND-FWD -s 10.8.0.1/32 -d 10.1.0.0/16 -p tcp -m tcp --dport 80 -m policy "
        "--dir in --pol ipsec --reqid 9 --proto esp")
    assert lines[1].startswith(
        "-A SWAND-FWD -s 10.1.0.0/16 -d 10.8.0.1/32 -p tcp -m tcp --sport 80 -m policy "
        "--dir out")
    assert len(lines) == 4  # 10.8.0.1 and 10.8.0.2 are separate /32s
    icmp = ChildSA("x", "y", 3, ("0.0.0.0/0[icmp/8]",), ("10.8.0.5/32",))
    inputs = FirewallInputs(FirewallSettings(), "policy", "eth0", (), (icmp,))
    assert "SWAND-FWD -s" not in render_save(desired_firewall(inputs), "ipv4")


def test_nat_without_egress_is_an_input_error() -> None:
    inputs = dataclasses.replace(reference(), egress=None)
    with pytest.raises(FirewallInputError, match="egress"):
        desired_firewall(inputs)
    # without pools nothing needs the egress
    desired_firewall(dataclasses.replace(inputs, pools=()))


# --- VICI inputs ------------------------------------------------------------------------


def test_pools_from_get_pools() -> None:
    reply = {
        "pool4": {"base": "10.8.0.128", "size": "126", "online": "1", "offline": "0"},
        "pinned-alice": {"base": "10.8.0.1", "size": "1"},
        "range": {"base": "10.9.0.5", "size": "4"},
        "offset": {"base": "10.7.0.130", "size": "125"},  # 10.7.0.130/25: .130 - .254
        "pool6": {"base": "fd00::", "size": "254"},
    }
    pools = {p.name: p.networks for p in pools_from_vici(reply)}
    assert pools["pool4"] == ("10.8.0.128/25",)
    assert pools["pinned-alice"] == ("10.8.0.1/32",)
    assert pools["range"] == ("10.9.0.5/32", "10.9.0.6/31", "10.9.0.8/32")
    assert pools["offset"][0] == "10.7.0.130/31" and pools["offset"][-1] == "10.7.0.254/32"
    assert pools["pool6"] == ("fd00::/120",)


def test_pools_from_get_pools_of_charon_6() -> None:
    """charon 6.0 reports a CIDR pool's base as its first leasable address."""
    reply = {
        "pool4": {"base": "10.8.0.129", "size": "126"},
        "p2": {"base": "10.9.0.1", "size": "254"},
        "pinned": {"base": "10.8.0.1", "size": "1"},
    }
    pools = {p.name: p.networks for p in pools_from_vici(reply)}
    assert pools == {"pool4": ("10.8.0.128/25",), "p2": ("10.9.0.0/24",),
                     "pinned": ("10.8.0.1/32",)}


def test_child_sas_from_list_sas_events() -> None:
    events = [{
        "rw": {
            "uniqueid": "3", "state": "ESTABLISHED",
            "child-sas": {
                "rw-4": {"name": "rw", "uniqueid": "4", "reqid": "1", "state": "INSTALLED",
                         "protocol": "ESP", "local-ts": ["0.0.0.0/0"],
                         "remote-ts": ["10.8.0.129/32"]},
                "rw-5": {"name": "rw", "uniqueid": "5", "reqid": "2", "state": "DELETING",
                         "protocol": "ESP", "local-ts": ["0.0.0.0/0"],
                         "remote-ts": ["10.8.0.130/32"]},
            },
        },
    }, {"other": {"state": "CONNECTING"}}]
    assert child_sas_from_vici(events) == (
        ChildSA("rw", "rw", 1, ("0.0.0.0/0",), ("10.8.0.129/32",), "esp"),
    )


def test_mode_auto_follows_the_loaded_plugins() -> None:
    assert resolve_mode("auto", ["kernel-netlink", "kernel-libipsec", "vici"]) == "interface"
    assert resolve_mode("auto", ["kernel-netlink", "vici"]) == "policy"
    assert resolve_mode("policy", ["kernel-libipsec"]) == "policy"


# --- the diff ---------------------------------------------------------------------------


def observed_from(desired: DesiredFirewall) -> list[ObservedTable]:
    """What a kernel holding exactly `desired` looks like, with foreign rules around."""
    out = []
    for (family, table), t in desired.tables.items():
        chains: dict[str, tuple[str | None, ...]] = {
            c: tuple(r.tag for r in rs) for c, rs in t.chains.items()
        }
        for builtin, jump in t.jumps.items():
            chains[builtin] = (None, jump.tag, None)  # admin rules before and after
        out.append(ObservedTable(family, table, chains))
    return out


def test_unchanged_state_plans_nothing() -> None:
    desired = desired_firewall(reference())
    assert plan(desired, observed_from(desired)) == []


def test_from_empty_creates_chains_rules_then_jumps() -> None:
    desired = desired_firewall(reference())
    t = desired.tables[("ipv4", "nat")]
    p = diff_table(t, ObservedTable("ipv4", "nat", {"POSTROUTING": (None,)}))
    assert p.ops[0] == CreateChain(CHAIN_NAT)
    inserts = [op for op in p.ops if isinstance(op, InsertRule)]
    assert [op.index for op in inserts] == [0, 1, 2, 3, 0]
    assert inserts[-1].chain == "POSTROUTING" and inserts[-1].rule.target == CHAIN_NAT


def test_one_sa_added_is_two_inserts() -> None:
    before = desired_firewall(reference())
    sas = (*REFERENCE_SAS, ChildSA("bob", "rw", 3, ("0.0.0.0/0",), ("10.8.0.130/32",)))
    after = desired_firewall(dataclasses.replace(reference(), child_sas=sas))
    plans = plan(after, observed_from(before))
    assert [(p.family, p.table) for p in plans] == [("ipv4", "filter")]
    assert [type(op) for op in plans[0].ops] == [InsertRule, InsertRule]
    assert [op.index for op in plans[0].ops] == [4, 5]  # type: ignore[union-attr]


def test_one_sa_removed_is_two_deletes_from_the_end() -> None:
    before = desired_firewall(reference())
    after = desired_firewall(dataclasses.replace(reference(), child_sas=REFERENCE_SAS[1:]))
    plans = plan(after, observed_from(before))
    assert plans[0].ops == (DeleteRule(CHAIN_FWD, 1), DeleteRule(CHAIN_FWD, 0))


def test_drift_is_repaired() -> None:
    desired = desired_firewall(reference())
    t = desired.tables[("ipv4", "nat")]
    rules = t.chains[CHAIN_NAT]
    jump = t.jumps["POSTROUTING"]
    # flushed chain
    p = diff_table(t, ObservedTable("ipv4", "nat", {"POSTROUTING": (jump.tag,),
                                                     CHAIN_NAT: ()}))
    assert [op.index for op in p.ops] == [0, 1, 2, 3]  # type: ignore[union-attr]
    # deleted jump, admin rules kept
    p = diff_table(t, ObservedTable("ipv4", "nat", {
        "POSTROUTING": (None, None), CHAIN_NAT: tuple(r.tag for r in rules)}))
    assert p.ops == (InsertRule("POSTROUTING", 0, jump),)
    # a foreign rule inside our chain, a stale rule, a duplicate jump
    p = diff_table(t, ObservedTable("ipv4", "nat", {
        "POSTROUTING": (jump.tag, None, jump.tag, "swand:000000000000"),
        CHAIN_NAT: (rules[0].tag, None, *(r.tag for r in rules[1:]), "swand:ffffffffffff"),
    }))
    assert p.ops == (
        DeleteRule("POSTROUTING", 3), DeleteRule("POSTROUTING", 2),
        DeleteRule(CHAIN_NAT, 5), DeleteRule(CHAIN_NAT, 1),
    )


def test_reordered_chain_keeps_the_longest_ordered_run() -> None:
    t = desired_firewall(reference()).tables[("ipv4", "nat")]
    rules = t.chains[CHAIN_NAT]
    observed = (rules[1].tag, rules[0].tag, rules[2].tag, rules[3].tag)
    p = diff_table(t, ObservedTable("ipv4", "nat", {
        "POSTROUTING": (t.jumps["POSTROUTING"].tag,), CHAIN_NAT: observed}))
    assert len(p.ops) == 2  # one rule moves: delete + insert
    assert isinstance(p.ops[0], DeleteRule) and isinstance(p.ops[1], InsertRule)


def test_flush_plan_removes_only_what_swand_owns() -> None:
    desired = desired_firewall(reference())
    plans = plan(DesiredFirewall({}), observed_from(desired))
    for p in plans:
        jumps = [op for op in p.ops if isinstance(op, DeleteRule)]
        assert all(op.index == 1 for op in jumps)  # the tagged jump between admin rules
        assert {type(op) for op in p.ops} <= {DeleteRule, DeleteChain}


def test_feature_switched_off_removes_its_chain() -> None:
    before = desired_firewall(reference())
    after = desired_firewall(reference(mss=0))
    plans = {(p.family, p.table): p for p in plan(after, observed_from(before))}
    assert set(plans) == {("ipv4", "mangle"), ("ipv6", "mangle")}
    assert DeleteChain(CHAIN_MSS) in plans[("ipv4", "mangle")].ops


# --- validation -------------------------------------------------------------------------


INTERFACES = {"lo": ("127.0.0.1/8",), "eth0": ("192.0.2.1/24", "fe80::1/64")}


def test_reference_setup_is_valid() -> None:
    assert validate(FirewallSettings(), pools=REFERENCE_POOLS, egress="eth0",
                    interfaces=INTERFACES) == []


def test_missing_egress_interface() -> None:
    problems = validate(FirewallSettings(egress="eth9"), pools=REFERENCE_POOLS,
                        egress="eth9", interfaces=INTERFACES, source="/etc/swand/swand.toml")
    assert len(problems) == 1
    assert str(problems[0]) == ("/etc/swand/swand.toml: [firewall] egress: interface 'eth9' "
                                "does not exist (interfaces: eth0, lo)")


def test_no_default_route_for_auto_egress() -> None:
    problems = validate(FirewallSettings(), pools=REFERENCE_POOLS, egress=None,
                        interfaces=INTERFACES)
    assert "no default route" in str(problems[0])
    assert validate(FirewallSettings(), pools=(), egress=None, interfaces=INTERFACES) == []


def test_pool_overlapping_the_egress_subnet() -> None:
    pools = (Pool.from_addrs("bad", "192.0.2.128/25"),)
    problems = validate(FirewallSettings(), pools=pools, egress="eth0", interfaces=INTERFACES)
    assert len(problems) == 1
    assert "overlaps the egress subnet 192.0.2.0/24 of eth0" in str(problems[0])
    assert "pool 'bad'" in str(problems[0])


@pytest.mark.parametrize("mss", [535, 1461, 9000])
def test_mss_out_of_range(mss: int) -> None:
    problems = validate(FirewallSettings(mss=mss), pools=(), egress="eth0",
                        interfaces=INTERFACES)
    assert "[firewall] mss" in str(problems[0]) and "536..1460" in str(problems[0])


@pytest.mark.parametrize("mss", [0, 536, 1360, 1460])
def test_mss_in_range(mss: int) -> None:
    assert validate(FirewallSettings(mss=mss), pools=(), egress="eth0",
                    interfaces=INTERFACES) == []


# --- sysctls ----------------------------------------------------------------------------


def test_desired_sysctls() -> None:
    assert desired_sysctls(SysctlSettings(), REFERENCE_POOLS) == {
        "net/ipv4/ip_forward": "1", "net/ipv4/ip_no_pmtu_disc": "1",
    }
    v6 = (*REFERENCE_POOLS, Pool.from_addrs("pool6", "fd00::/120"))
    assert desired_sysctls(SysctlSettings(ip_no_pmtu_disc=False), v6) == {
        "net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
    }
    assert desired_sysctls(SysctlSettings(ip_forward=False, ip_no_pmtu_disc=False)) == {}


def test_sysctl_changes_only_what_differs() -> None:
    want = {"net/ipv4/ip_forward": "1", "net/ipv4/ip_no_pmtu_disc": "1"}
    assert sysctl_changes(want, {"net/ipv4/ip_forward": "1\n",
                                 "net/ipv4/ip_no_pmtu_disc": "0"}) == {
        "net/ipv4/ip_no_pmtu_disc": "1"}


def test_proc_sysctl_adapter_writes_only_what_differs(tmp_path: Path) -> None:
    from swand.adapters.sysctl import ProcSysctl, SysctlError

    (tmp_path / "net/ipv4").mkdir(parents=True)
    fwd = tmp_path / "net/ipv4/ip_forward"
    fwd.write_text("1\n")
    pmtu = tmp_path / "net/ipv4/ip_no_pmtu_disc"
    pmtu.write_text("0\n")
    before = fwd.stat().st_mtime_ns
    changes = ProcSysctl(tmp_path).apply(desired_sysctls(SysctlSettings()))
    assert [(c.key, c.old, c.new) for c in changes] == [("net/ipv4/ip_no_pmtu_disc", "0", "1")]
    assert fwd.stat().st_mtime_ns == before  # ip_forward untouched
    assert pmtu.read_text() == "1\n"
    with pytest.raises(SysctlError, match=r"net\.ipv6\.conf\.all\.forwarding"):
        ProcSysctl(tmp_path).apply({"net/ipv6/conf/all/forwarding": "1"})


# --- nftables rendering and planning -------------------------------------------------


@pytest.mark.parametrize("mode", ["policy", "interface"])
def test_reference_setup_nft_golden(mode: str) -> None:
    from swand.core.nftables import render_nft

    check_golden(f"reference-{mode}.nft", render_nft(desired_firewall(reference(mode))))


def test_nft_rule_translation() -> None:
    from swand.core.nftables import nft_chains, rule_json, rule_text

    chains = nft_chains(desired_firewall(reference("policy")))
    assert list(chains) == ["nat", "mss", "forward"]
    fwd = chains["forward"][0]
    assert rule_text(fwd) == f'ip saddr 10.8.0.129 ipsec in reqid 1 accept comment "{fwd.tag}"'
    assert rule_json(fwd, "forward")["expr"][1] == {"match": {
        "op": "==", "left": {"ipsec": {"key": "reqid", "dir": "in", "spnum": 0}}, "right": 1}}
    exempt = chains["nat"][0]
    assert rule_text(exempt).startswith('ip saddr 10.8.0.128/25 oifname "eth0" rt ipsec exists')
    assert not any("ip6" in rule_text(r) for r in chains["nat"])  # nat66 off
    assert all(("nfproto ipv4" in rule_text(r)) != ("nfproto ipv6" in rule_text(r))
               for r in chains["mss"])


def _observed(rules: list[tuple[int, str | None]], chains: dict[str, dict] | None = None):
    from swand.adapters.nftables import _Observed
    from swand.core.nftables import NFT_CHAINS

    obs = _Observed()
    obs.exists = True
    for c in NFT_CHAINS.values():
        obs.chains[c.name] = {"name": c.name, "type": c.type, "hook": c.hook,
                              "prio": c.priority, "policy": "accept"}
        obs.rules[c.name] = []
    obs.chains.update(chains or {})
    obs.rules["forward"] = rules
    return obs


def test_nft_plan_unchanged_adds_one_and_places_by_handle() -> None:
    from swand.adapters.nftables import NftablesBackend
    from swand.core.nftables import nft_chains

    want = nft_chains(desired_firewall(reference()))
    backend = NftablesBackend()
    try:
        full = {name: [(100 * i + k, r.tag) for k, r in enumerate(rules)]
                for i, (name, rules) in enumerate(want.items())}
        obs = _observed(full["forward"])
        for name in ("nat", "mss"):
            obs.rules[name] = full[name]
        assert backend._plan(want, obs) == ([], {"ins": 0, "del": 0, "cc": 0, "dc": 0})
        # the second SA's rules missing: they go before nothing (append); the first
        # SA's missing: they go before the kept rule that follows them
        obs.rules["forward"] = full["forward"][:2]
        batch, counts = backend._plan(want, obs)
        assert counts["ins"] == 2 and [next(iter(c)) for c in batch] == ["add", "add"]
        obs.rules["forward"] = [*full["forward"][2:], (999, None)]  # and a foreign rule
        batch, counts = backend._plan(want, obs)
        assert batch[0] == {"delete": {"rule": {"family": "inet", "table": "swand",
                                                "chain": "forward", "handle": 999}}}
        assert [c["insert"]["rule"]["handle"] for c in batch[1:]] == [
            full["forward"][2][0], full["forward"][2][0]]
        assert [c["insert"]["rule"]["comment"] for c in batch[1:]] == [
            r.tag for r in want["forward"][:2]]
    finally:
        backend._executor.shutdown()


def test_nft_plan_recreates_a_changed_or_foreign_chain() -> None:
    from swand.adapters.nftables import NftablesBackend
    from swand.core.nftables import nft_chains

    want = nft_chains(desired_firewall(reference()))
    backend = NftablesBackend()
    try:
        obs = _observed([], {"junk": {"name": "junk"},
                             "nat": {"name": "nat", "type": "nat", "hook": "postrouting",
                                     "prio": 100, "policy": "accept"}})
        batch, counts = backend._plan(want, obs)
        kinds = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in batch]
        assert ("flush", "chain") in kinds and ("delete", "chain") in kinds
        assert counts["dc"] == 2 and counts["cc"] == 1
        assert backend._plan({}, obs)[0] == [{"delete": {"table": {"family": "inet",
                                                                   "name": "swand"}}}]
    finally:
        backend._executor.shutdown()


@pytest.mark.parametrize(("setting", "variant", "rules", "available", "expected"), [
    ("auto", "legacy", False, True, "legacy"),
    ("auto", "nf_tables", False, True, "nftables"),
    ("auto", "legacy", True, True, "nftables"),
    ("legacy", "nf_tables", True, False, "legacy"),
    ("nftables", "legacy", False, True, "nftables"),
    ("auto", None, False, False, "legacy"),
])
def test_choose_backend(setting: str, variant: str | None, rules: bool, available: bool,
                        expected: str) -> None:
    from swand.core.firewall import choose_backend

    name, why = choose_backend(setting, iptables_variant=variant, nft_has_rules=rules,
                               nft_available=available)
    assert name == expected and why


def test_choose_backend_refuses_legacy_on_an_nftables_host() -> None:
    from swand.core.firewall import BackendChoiceError, choose_backend

    with pytest.raises(BackendChoiceError, match=r"\[firewall\] backend = \"legacy\""):
        choose_backend("auto", iptables_variant="nf_tables", nft_has_rules=True,
                       nft_available=False, source="/etc/swand/swand.toml")
    with pytest.raises(BackendChoiceError, match="python3-nftables"):
        choose_backend("nftables", iptables_variant="nf_tables", nft_has_rules=True,
                       nft_available=False)


# --- properties of the diff ------------------------------------------------------------

_RULES = [Rule("ipv4", "filter", CHAIN_FWD, "ACCEPT", src=f"10.0.0.{i}/32") for i in range(8)]


@settings(max_examples=300, deadline=None)
@given(
    desired=st.lists(st.integers(0, 7), unique=True, max_size=8),
    observed=st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=12),
)
def test_diff_chain_reaches_the_desired_chain(desired: list[int], observed: list[int | None]
                                              ) -> None:
    """Applying the ops in order to the observed chain yields exactly the desired one, and
    rules already in the right relative order are never touched."""
    rules = [_RULES[i] for i in desired]
    tags: list[str | None] = [
        None if o is None else (_RULES[o].tag if o < 8 else f"swand:{o:012x}") for o in observed
    ]
    chain = list(tags)
    ops = diff_chain(CHAIN_FWD, rules, tags)
    for op in ops:
        if isinstance(op, DeleteRule):
            chain.pop(op.index)
        else:
            assert isinstance(op, InsertRule)
            chain.insert(op.index, op.rule.tag)
    assert chain == [r.tag for r in rules]
    if tags == [r.tag for r in rules]:
        assert ops == []
    inserts = sum(isinstance(op, InsertRule) for op in ops)
    present = len(set(tags) & {r.tag for r in rules})
    assert inserts >= len(rules) - present


@settings(max_examples=200, deadline=None)
@given(
    live=st.lists(st.integers(0, 63), unique=True, max_size=40).map(sorted),
    gone=st.sets(st.integers(0, 63)),
    new=st.lists(st.integers(64, 95), unique=True, max_size=8).map(sorted),
)
def test_churn_touches_only_the_sas_that_came_and_went(live: list[int], gone: set[int],
                                                         new: list[int]) -> None:
    """Churn's shape (SAs gone here and there, new reqids at the end): one delete per
    SA gone, one insert per SA new, every other rule kept where it is."""
    def rule(i: int) -> Rule:
        return Rule("ipv4", "filter", CHAIN_FWD, "ACCEPT", src=f"10.0.{i}.1/32")

    observed = [rule(i).tag for i in live]
    desired = [rule(i) for i in live if i not in gone] + [rule(i) for i in new]
    ops = diff_chain(CHAIN_FWD, desired, observed)
    assert sum(isinstance(op, DeleteRule) for op in ops) == len(set(live) & gone)
    assert sum(isinstance(op, InsertRule) for op in ops) == len(new)


@settings(max_examples=200, deadline=None)
@given(
    desired=st.lists(st.integers(0, 7), unique=True, max_size=8),
    observed=st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=12),
)
def test_nft_batches_reach_the_desired_chain(desired: list[int], observed: list[int | None]
                                             ) -> None:
    """The nftables plan, simulated with nft's semantics (delete by handle, `insert` before
    a handle keeping batch order, `add` appends), yields exactly the desired chain."""
    from swand.adapters.nftables import NftablesBackend

    rules = tuple(_RULES[i] for i in desired)
    chain = [(100 + k, None if o is None else (_RULES[o].tag if o < 8 else f"swand:{o:012x}"))
             for k, o in enumerate(observed)]
    obs = _observed(list(chain))
    for name in ("nat", "mss"):
        del obs.chains[name], obs.rules[name]
    backend = NftablesBackend()
    try:
        batch, _ = backend._plan({"forward": rules}, obs)
    finally:
        backend._executor.shutdown()
    current = list(chain)
    fresh = 10_000
    for cmd in batch:
        (verb, body), = cmd.items()
        rule = body["rule"]
        if verb == "delete":
            current = [c for c in current if c[0] != rule["handle"]]
        elif verb == "insert":
            at = next(i for i, c in enumerate(current) if c[0] == rule["handle"])
            fresh += 1
            current.insert(at, (fresh, rule["comment"]))
        else:
            fresh += 1
            current.append((fresh, rule["comment"]))
    assert [t for _, t in current] == [r.tag for r in rules]


def test_configured_pools_come_from_the_parsed_swanctl_folder() -> None:
    """The pools NAT keeps across a charon restart: from the loader's parsed state (this
    lived in app.py, the composition root; now core)."""
    from swand.core.firewall import configured_pools
    from swand.core.settings import parse_text
    from swand.core.swanctl import CredentialSource, translate

    tree = parse_text(
        "pools {\n"
        "  v4 { addrs = 10.8.0.0/24 }\n"
        "  range { addrs = 10.9.0.10-10.9.0.11 }\n"
        "  v6 { addrs = 2001:db8:8::/112 }\n"
        "  leased { addrs = dhcp }\n"
        "}\n", "swanctl.conf")
    state, errors = translate(tree, CredentialSource("/etc/swanctl"))
    assert not errors
    pools = {p.name: p.networks for p in configured_pools(state)}
    assert pools == {"v4": ("10.8.0.0/24",), "range": ("10.9.0.10/31",),
                     "v6": ("2001:db8:8::/112",)}
    assert configured_pools(None) == ()


def test_the_rule_cache_holds_the_live_sas_only_and_changes_no_rule() -> None:
    """A churning gateway: each pass sees 100 SAs, 10 of them new. The cache's rules
    equal an uncached computation's, and it holds the last pass's SAs only (memory
    follows the live set; an LRU kept every SA seen until it was full)."""
    cache = SaRuleCache()

    def sa(n: int) -> ChildSA:
        return ChildSA(f"c{n}", "rw", n, ("0.0.0.0/0",), (f"10.9.{n // 256}.{n % 256}/32",))

    for step in range(30):
        live = tuple(sa(n) for n in range(step * 10, step * 10 + 100))
        inputs = dataclasses.replace(reference(), child_sas=live)
        assert cache.unseen(inputs) == (100 if step == 0 else 10)  # what a pass must compute
        assert desired_firewall(inputs, cache) == desired_firewall(inputs)
        assert len(cache) == 100 and cache.unseen(inputs) == 0
    bad = ChildSA("bad", "rw", 999, ("0.0.0.0/0",), ("not-a-selector",))
    inputs = dataclasses.replace(reference(), child_sas=(sa(1), bad))
    assert desired_firewall(inputs, cache) == desired_firewall(inputs)
    assert len(cache) == 2  # the unreadable one is remembered as such, not retried
