"""The same desired state for nftables: one ``table inet swand``, rendered as libnftables
JSON (what the adapter sends) and as ``nft list table inet swand`` text (golden tests).

Base chains, all ``policy accept`` (swand only adds accepts, NAT and MSS clamping; it
never decides what else may pass):

============ ===== =========== ================================= =========================
chain        type  hook        priority                          holds (iptables twin)
============ ===== =========== ================================= =========================
``nat``      nat   postrouting ``srcnat - 10`` (90)              NAT exemption, masquerade
                                                                 (SWAND-NAT)
``mss``      filter forward    ``mangle`` (-150)                 MSS clamping (SWAND-MSS)
``forward``  filter forward    ``filter`` (0)                    per-SA accepts (SWAND-FWD)
============ ===== =========== ================================= =========================

One inet table carries IPv4 and IPv6: a chain holds the IPv4 rules, then the IPv6 ones.
Rules keep the tags of `swand.core.firewall` (``comment "swand:..."``), so both backends
name a rule the same way and the same diff drives both.

Translation of the iptables matches: ``-m policy --dir in --pol ipsec`` is
``meta ipsec exists`` (the packet was decrypted), ``--dir out`` is ``rt ipsec exists``
(its route carries an IPsec transform); with a reqid, ``ipsec in|out reqid N`` (nft has no
match for the SA's protocol, so ``--proto esp`` has no twin: reqids are per CHILD_SA
anyway). Interface mode uses ``iifname/oifname "ipsec0"`` as with iptables.

A packet must be accepted by *every* base chain on its hook: an ``accept`` here does not
override a ``drop`` in an administrator's own table (see README, "Firewall").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swand.core.firewall import (
    CHAIN_FWD,
    CHAIN_MSS,
    CHAIN_NAT,
    FAMILIES,
    DesiredFirewall,
    Match,
    Rule,
)

NFT_FAMILY = "inet"
NFT_TABLE = "swand"


@dataclass(frozen=True)
class NftChain:
    name: str
    type: str
    hook: str
    priority: int
    priority_text: str  # as `nft list` prints it

    def json(self) -> dict[str, Any]:
        return {"family": NFT_FAMILY, "table": NFT_TABLE, "name": self.name,
                "type": self.type, "hook": self.hook, "prio": self.priority,
                "policy": "accept"}


#: (iptables table, owned chain) -> nft base chain, in creation (and listing) order
NFT_CHAINS: dict[tuple[str, str], NftChain] = {
    ("nat", CHAIN_NAT): NftChain("nat", "nat", "postrouting", 90, "srcnat - 10"),
    ("mangle", CHAIN_MSS): NftChain("mss", "filter", "forward", -150, "mangle"),
    ("filter", CHAIN_FWD): NftChain("forward", "filter", "forward", 0, "filter"),
}
CHAINS_BY_NAME = {c.name: c for c in NFT_CHAINS.values()}


class NftTranslationError(ValueError):
    """A rule the nftables rendering does not know how to express."""


def nft_chains(desired: DesiredFirewall) -> dict[str, tuple[Rule, ...]]:
    """nft chain name -> its rules (IPv4 then IPv6), for every chain swand wants."""
    out: dict[str, tuple[Rule, ...]] = {}
    for (table, chain), nchain in NFT_CHAINS.items():
        rules: list[Rule] = []
        present = False
        for family in FAMILIES:
            t = desired.tables.get((family, table))
            if t is not None and chain in t.chains:
                present = True
                rules += t.chains[chain]
        if present:
            out[nchain.name] = tuple(rules)
    return out


# --- one rule -------------------------------------------------------------------------


def _addr(net: str) -> tuple[Any, str]:
    addr, _, plen = net.partition("/")
    full = 128 if ":" in addr else 32
    if plen and int(plen) != full:
        return {"prefix": {"addr": addr, "len": int(plen)}}, net
    return addr, addr


def _match(left: Any, right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": right}}


def _ports(value: str) -> tuple[Any, str]:
    if ":" in value:
        a, b = value.split(":")
        return {"range": [int(a), int(b)]}, f"{a}-{b}"
    return int(value), value


def _translate(rule: Rule) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON expressions, the same as nft text parts) for one rule, comment excluded."""
    ip = "ip" if rule.family == "ipv4" else "ip6"
    expr: list[dict[str, Any]] = []
    text: list[str] = []
    for field, net in (("saddr", rule.src), ("daddr", rule.dst)):
        if net:
            value, shown = _addr(net)
            expr.append(_match({"payload": {"protocol": ip, "field": field}}, value))
            text.append(f"{ip} {field} {shown}")
    if not (rule.src or rule.dst):
        # nothing family-specific in the rule: say which family, or the IPv4 and IPv6
        # twins would both match every packet of an inet chain
        expr.append(_match({"meta": {"key": "nfproto"}}, rule.family))
        text.append(f"meta nfproto {rule.family}")
    for key, iface in (("iifname", rule.in_iface), ("oifname", rule.out_iface)):
        if iface:
            expr.append(_match({"meta": {"key": key}}, iface))
            text.append(f'{key} "{iface}"')
    implied = any(m.name in ("tcp", "udp", "sctp", "tcpmss") for m in rule.matches)
    if rule.proto and not implied:
        # a protocol without a name (``253``) is a number to nft, not a symbol
        l4proto: str | int = int(rule.proto) if rule.proto.isdigit() else rule.proto
        expr.append(_match({"meta": {"key": "l4proto"}}, l4proto))
        text.append(f"meta l4proto {rule.proto}")
    for m in rule.matches:
        e, t = _translate_match(m)
        expr += e
        text += t
    e, t = _translate_target(rule)
    return expr + e, text + t


def _translate_match(m: Match) -> tuple[list[dict[str, Any]], list[str]]:
    opts = dict(m.options)
    if m.name == "policy":
        direction = opts["dir"]
        if opts.get("pol") != "ipsec":
            raise NftTranslationError(f"policy match {m.text()!r}")
        if "reqid" in opts:
            reqid = int(opts["reqid"])
            return ([_match({"ipsec": {"key": "reqid", "dir": direction, "spnum": 0}}, reqid)],
                    [f"ipsec {direction} reqid {reqid}"])
        if direction == "in":
            return [_match({"meta": {"key": "ipsec"}}, True)], ["meta ipsec exists"]
        return [_match({"rt": {"key": "ipsec"}}, True)], ["rt ipsec exists"]
    if m.name in ("tcp", "udp", "sctp", "udplite", "dccp"):
        expr: list[dict[str, Any]] = []
        text: list[str] = []
        for opt, value in m.options:
            if opt in ("sport", "dport"):
                v, shown = _ports(value)
                expr.append(_match({"payload": {"protocol": m.name, "field": opt}}, v))
                text.append(f"{m.name} {opt} {shown}")
            elif (m.name, opt, value) == ("tcp", "tcp-flags", "SYN,RST SYN"):
                expr.append(_match(
                    {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]},
                    "syn"))
                text.append("tcp flags syn / syn,rst")
            else:
                raise NftTranslationError(f"match {m.text()!r}")
        return expr, text
    if m.name == "tcpmss":
        v, shown = _ports(opts["mss"])
        return ([_match({"tcp option": {"name": "maxseg", "field": "size"}}, v)],
                [f"tcp option maxseg size {shown}"])
    raise NftTranslationError(f"match {m.text()!r}")


def _translate_target(rule: Rule) -> tuple[list[dict[str, Any]], list[str]]:
    if rule.target == "ACCEPT":
        return [{"accept": None}], ["accept"]
    if rule.target == "MASQUERADE":
        return [{"masquerade": None}], ["masquerade"]
    if rule.target == "TCPMSS":
        mss = int(dict(rule.target_options)["set-mss"])
        return ([{"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}},
                             "value": mss}}],
                [f"tcp option maxseg size set {mss}"])
    raise NftTranslationError(f"target {rule.target!r}")


def rule_json(rule: Rule, chain: str) -> dict[str, Any]:
    """The libnftables JSON object of `rule` in nft chain `chain` (for add/insert)."""
    expr, _ = _translate(rule)
    return {"family": NFT_FAMILY, "table": NFT_TABLE, "chain": chain, "expr": expr,
            "comment": rule.tag}


def rule_text(rule: Rule) -> str:
    """The rule as ``nft list`` prints it."""
    _, text = _translate(rule)
    return " ".join([*text, f'comment "{rule.tag}"'])


def render_nft(desired: DesiredFirewall) -> str:
    """``nft list table inet swand`` for a table built from scratch (empty string when
    swand wants no table)."""
    chains = nft_chains(desired)
    if not chains:
        return ""
    blocks: list[str] = []
    for nchain in NFT_CHAINS.values():
        if nchain.name not in chains:
            continue
        lines = [f"\tchain {nchain.name} {{",
                 f"\t\ttype {nchain.type} hook {nchain.hook} priority {nchain.priority_text};"
                 " policy accept;"]
        lines += [f"\t\t{rule_text(r)}" for r in chains[nchain.name]]
        lines.append("\t}")
        blocks.append("\n".join(lines))
    return f"table {NFT_FAMILY} {NFT_TABLE} {{\n" + "\n\n".join(blocks) + "\n}\n"


def chain_matches(observed: Mapping[str, Any], want: NftChain) -> bool:
    """Whether an observed chain (libnftables JSON) is the base chain swand wants."""
    return (observed.get("type"), observed.get("hook"), observed.get("prio"),
            observed.get("policy", "accept")) == (want.type, want.hook, want.priority, "accept")
