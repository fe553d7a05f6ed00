"""The running system when swand's firewall is off: forwarding, NAT, MSS
clamping, read from `iptables-save` / `nft list ruleset` text."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from swand.core.checks.base import (
    CheckInput,
    Finding,
    IPNetwork,
    SystemFacts,
    finding_at,
)
from swand.core.checks.pools import (
    ConfiguredPool,
    pools_of,
)

# --- the running system (when swand's firewall is off) ----------------------------------

_IPT_SOURCE = re.compile(r"(?:^|\s)-s\s+(\S+)")
_NFT_SADDR = re.compile(r"\bip6?\s+saddr\s+(\{[^}]*\}|\S+)")


def _rule_sources(line: str) -> list[IPNetwork] | None:
    """Source networks a NAT rule is limited to; None when it matches any source."""
    m = _IPT_SOURCE.search(line) or _NFT_SADDR.search(line)
    if not m:
        return None
    nets = []
    for part in re.split(r"[{},\s]+", m.group(1)):
        try:
            nets.append(ipaddress.ip_network(part.lstrip("!"), strict=False))
        except ValueError:
            continue
    return nets


def ruleset_nat_covers(rulesets: Iterable[str], pool: ConfiguredPool) -> bool:
    """Some SNAT/MASQUERADE rule (iptables-save or nft syntax) whose source covers the
    pool, or matches any source."""
    for text in rulesets:
        for line in text.splitlines():
            low = line.lower()
            if line.lstrip().startswith(("#", ":", "*")):
                continue  # comments, chain policies (":POSTROUTING ACCEPT"), table heads
            if not ("masquerade" in low or "snat" in low):
                continue
            sources = _rule_sources(line)
            if sources is None:
                return True
            for net in sources:
                if all(r[0].version == net.version and r[0] in net and r[1] in net
                       for r in pool.ranges):
                    return True
    return False


def ruleset_has_mss_clamp(rulesets: Iterable[str]) -> bool:
    for text in rulesets:
        low = text.lower()
        if "-j tcpmss" in low or re.search(r"maxseg\s+size\s+set", low):
            return True
    return False


def check_system(inp: CheckInput, facts: SystemFacts, firewall_enabled: bool) -> list[Finding]:
    """With swand's firewall off, forwarding, NAT for the pools and MSS clamping are the
    administrator's job: say what is missing (read-only facts, never changed here)."""
    if firewall_enabled:
        return []
    pools, _ = pools_of(inp.tree)
    if not pools:
        return []  # a client: nothing to forward
    out = []
    where = inp.conf_file
    if facts.ip_forward is False:
        out.append(Finding(where, 0, "warning", "system-ip-forward",
                           "net.ipv4.ip_forward is 0 and [firewall] enabled = false: road "
                           "warriors reach nothing beyond the gateway; you will have to do "
                           "this yourself", "sysctl -w net.ipv4.ip_forward=1 (and persist it "
                           "in /etc/sysctl.d/)"))
    if facts.rulesets is not None:
        for pool in pools:
            if pool.ranges and pool.ranges[0][0].version == 4 and not ruleset_nat_covers(
                    facts.rulesets, pool):
                out.append(finding_at(
                    pool.origin, "warning", "system-nat",
                    f"no SNAT/MASQUERADE rule covers pool '{pool.name}' and [firewall] "
                    "enabled = false: you will have to do this yourself",
                    f"iptables -t nat -A POSTROUTING -s {pool.addrs} -o <egress> -j MASQUERADE"))
        if not ruleset_has_mss_clamp(facts.rulesets):
            out.append(Finding(where, 0, "warning", "system-mss",
                               "no TCP MSS clamping rule and [firewall] enabled = false: "
                               "large TCP transfers through the tunnel may stall; you will "
                               "have to do this yourself",
                               f"iptables -t mangle -A FORWARD -s {pools[0].addrs} -p tcp "
                               "--tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1360 (and -d for "
                               "the way back)"))
    return out
