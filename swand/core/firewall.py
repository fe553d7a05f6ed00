"""The gateway's firewall as a pure function: (settings, pools, CHILD_SAs, egress, mode) ->
the rules swand owns, their `iptables-save` rendering, and the minimal edit that turns
what the kernel holds into them.

Everything swand writes lives in its own chains (`SWAND-NAT` in nat POSTROUTING,
`SWAND-MSS` in mangle FORWARD, `SWAND-FWD` in filter FORWARD), reached by one tagged jump
inserted at the top of the built-in chain. Every rule carries the comment
`swand:<12 hex digits>`, a hash of (family, table, chain, rule text). Because the tag is a
function of the rule, "observed equals desired" is a comparison of tag lists and an
unchanged pass writes nothing (counters survive, no churn) -- the way Calico Felix does it.

Modes (how tunnel traffic is recognised):

- ``policy``: kernel ESP. Decrypted traffic carries an IPsec policy, matched with
  ``-m policy --dir in|out --pol ipsec`` (and, per SA, ``--reqid R --proto esp``), exactly
  as strongSwan's ``_updown iptables`` script does.
- ``interface``: kernel-libipsec. Packets are decrypted in user space and appear on the TUN
  device (``ipsec0``) without any policy, so ``-m policy`` never matches. The tunnel is
  recognised by ``-i/-o ipsec0`` instead. The NAT *exemption* becomes
  ``-s POOL -o ipsec0 -j ACCEPT``: traffic that re-enters the tunnel (client to client,
  or to subnets behind other tunnels) must keep its pool source address, which is what
  ``--pol ipsec --dir out`` exempts in policy mode. (It is listed first in our chain, and
  our chain is jumped to first, so an administrator's catch-all MASQUERADE cannot rewrite
  it.) Per-SA forward rules lose the reqid (libipsec's TUN has no per-SA identity), so
  two SAs with equal traffic selectors share one rule.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import itertools
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Literal, TypeVar

from swand.config import FirewallSettings
from swand.core.events import ChildSa, IkeSa, parse_list_sas
from swand.core.services import port_range, protocol_name, system_services
from swand.core.swanctl import DesiredState, split_list
from swand.core.untrusted import SkipFn, ignore_skip, shown, unparsable

Family = Literal["ipv4", "ipv6"]
Mode = Literal["policy", "interface"]

CHAIN_NAT = "SWAND-NAT"
CHAIN_MSS = "SWAND-MSS"
CHAIN_FWD = "SWAND-FWD"
#: every chain whose name starts with this belongs to swand (flush removes them all)
OWNED_PREFIX = "SWAND-"
TAG_PREFIX = "swand:"
TAG_LENGTH = len(TAG_PREFIX) + 12

#: (table, owned chain) -> the built-in chain that jumps to it
HOOKS: dict[tuple[str, str], str] = {
    ("filter", CHAIN_FWD): "FORWARD",
    ("mangle", CHAIN_MSS): "FORWARD",
    ("nat", CHAIN_NAT): "POSTROUTING",
}
#: the tables swand may touch, in iptables-save's order
TABLES = ("filter", "mangle", "nat")
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
DEFAULT_TUNNEL_INTERFACE = "ipsec0"
MSS_RANGE = (536, 1460)

#: CHILD_SA states whose policies are in the kernel (a rekeyed SA keeps its reqid and TS)
ACTIVE_CHILD_STATES = frozenset({"INSTALLED", "UPDATING", "REKEYING", "REKEYED"})
_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "udplite", "dccp"})


class FirewallInputError(ValueError):
    """Inputs from which no rule set can be derived (e.g. NAT wanted, no egress known)."""


# --- rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One ``-m NAME --opt value ...`` clause, options in iptables-save's order."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        parts = [f"-m {self.name}"]
        parts += [f"--{opt} {value}" if value else f"--{opt}" for opt, value in self.options]
        return " ".join(parts)


@dataclass(frozen=True)
class Rule:
    """A rule in one chain, in the shape iptables-save prints it (header, matches, target).

    Addresses are normalised CIDRs (``None`` = any); the comment match carrying the tag is
    not part of `matches`: it is added on rendering, always last before the target.
    """

    family: Family
    table: str
    chain: str
    target: str
    src: str | None = None
    dst: str | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    proto: str | None = None
    matches: tuple[Match, ...] = ()
    target_options: tuple[tuple[str, str], ...] = ()

    @cached_property
    def spec(self) -> str:
        """The rule without chain and tag, as iptables-save prints it."""
        parts: list[str] = []
        if self.src:
            parts.append(f"-s {self.src}")
        if self.dst:
            parts.append(f"-d {self.dst}")
        if self.in_iface:
            parts.append(f"-i {self.in_iface}")
        if self.out_iface:
            parts.append(f"-o {self.out_iface}")
        if self.proto:
            parts.append(f"-p {self.proto}")
        parts += [m.text() for m in self.matches]
        parts.append(f"-j {self.target}")
        parts += [f"--{opt} {value}" if value else f"--{opt}" for opt, value in
                  self.target_options]
        return " ".join(parts)

    @cached_property
    def tag(self) -> str:
        digest = hashlib.sha256(
            f"{self.family}\0{self.table}\0{self.chain}\0{self.spec}".encode()
        ).hexdigest()
        return TAG_PREFIX + digest[: TAG_LENGTH - len(TAG_PREFIX)]

    def save_line(self) -> str:
        """``-A CHAIN ...`` exactly as ``iptables-legacy-save`` / ``-S`` print it."""
        head, _, tail = self.spec.rpartition(f"-j {self.target}")
        return f'-A {self.chain} {head}-m comment --comment "{self.tag}" -j {self.target}{tail}'


@dataclass(frozen=True)
class DesiredTable:
    """What swand wants in one (family, table): owned chains with ordered rules, and the
    jump from each built-in chain."""

    family: Family
    table: str
    chains: Mapping[str, tuple[Rule, ...]]
    jumps: Mapping[str, Rule]  # built-in chain -> jump rule

    @property
    def rule_count(self) -> int:
        return sum(len(r) for r in self.chains.values()) + len(self.jumps)


@dataclass(frozen=True)
class DesiredFirewall:
    tables: Mapping[tuple[Family, str], DesiredTable]

    @property
    def rule_count(self) -> int:
        return sum(t.rule_count for t in self.tables.values())

    def tags(self) -> frozenset[str]:
        return frozenset(
            r.tag for t in self.tables.values()
            for r in [*t.jumps.values(), *(x for rs in t.chains.values() for x in rs)]
        )


# --- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """A virtual IP pool as CIDRs (normalised, as iptables prints them): what the rules
    NAT and forward (not checks.ConfiguredPool's ranges, nor metrics.PoolUsage)."""

    name: str
    networks: tuple[str, ...]

    @classmethod
    def from_addrs(cls, name: str, *addrs: str) -> Pool:
        """From swanctl's ``addrs`` forms: ``10.8.0.0/24``, ``10.8.0.1``, ``a-b``."""
        nets: list[str] = []
        for addr in addrs:
            nets += _networks_of(addr.strip())
        return cls(name, tuple(nets))

    @property
    def families(self) -> frozenset[Family]:
        return frozenset(_family(n) for n in self.networks)


@dataclass(frozen=True, slots=True)
class ChildSA:
    """What the forward rules need from one CHILD_SA (``list-sas``)."""

    ike: str
    child: str
    reqid: int
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    protocol: str = "esp"
    #: the hash, once computed: not a value of the SA (never compared, never shown)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        """Computed once: a pass over 10,000 SAs hashes each several times (the held
        set, the rule cache), ~20 ms per pass otherwise. (Not pickled anywhere: a str's
        hash differs between processes.)"""
        cached = self._hash
        if cached is None:
            cached = hash((self.ike, self.child, self.reqid, self.local_ts, self.remote_ts,
                           self.protocol))
            object.__setattr__(self, "_hash", cached)
        return cached


@dataclass(frozen=True)
class FirewallInputs:
    settings: FirewallSettings
    mode: Mode
    egress: str | None
    pools: tuple[Pool, ...] = ()
    child_sas: tuple[ChildSA, ...] = ()
    tunnel_iface: str = DEFAULT_TUNNEL_INTERFACE


def pools_from_vici(
    reply: Mapping[str, Mapping[str, object]], on_skip: SkipFn = ignore_skip,
) -> tuple[Pool, ...]:
    """Pools from a ``get-pools`` reply ({name: {base, size, ...}}).

    charon reports a CIDR pool ``a/p`` with size = 2^h - 2 (network and broadcast
    addresses are never leased) and base = the network id (5.9) or the first leasable
    address (6.0), a range pool as base = first, size = count; so a base aligned on 2^h
    (or one past it) with size 2^h - 2 is turned back into its CIDR, size 1 into a host
    route, anything else into the exact CIDRs covering [base, base + size).
    """
    pools: list[Pool] = []
    for name, info in sorted(reply.items()):
        if not isinstance(info, Mapping):
            continue
        try:
            pool = _pool(str(name), info)
        except ValueError as exc:
            on_skip(unparsable("firewall", f"pool {shown(name)}", {}, "base/size", exc))
            continue
        if pool is not None:
            pools.append(pool)
    return tuple(pools)


def _pool(name: str, info: Mapping[str, object]) -> Pool | None:
    base_text = _text(info.get("base"))
    size_text = _text(info.get("size"))
    if not base_text or not size_text:
        return None
    base = ipaddress.ip_address(base_text)
    size = int(size_text)
    bits = base.max_prefixlen
    nets: list[str] = []
    if size <= 1:
        nets = [f"{base}/{bits}"]
    else:
        host_bits = (size + 2).bit_length() - 1
        block = 1 << host_bits
        if (size + 2) == block and int(base) % block in (0, 1):
            network = base - int(base) % block
            nets = [f"{network}/{bits - host_bits}"]
        else:
            last = base + (size - 1)
            nets = [str(n) for n in ipaddress.summarize_address_range(base, last)]
    return Pool(name, tuple(nets))


def configured_pools(desired: DesiredState | None) -> tuple[Pool, ...]:
    """The pools a parsed swanctl folder defines (its `load-pool` messages), so NAT
    does not vanish in the moment between a charon restart and the loader loading the
    pools again. dhcp/radius pools have no addresses of their own: skipped."""
    pools: list[Pool] = []
    for item in desired.pools.values() if desired is not None else ():
        body = item.message.get(item.name, {})
        addrs = body.get("addrs", "") if isinstance(body, Mapping) else ""
        try:
            pools.append(Pool.from_addrs(item.name, *split_list(str(addrs))))
        except ValueError:
            continue
    return tuple(pools)


def child_sas_from_vici(
    ike_sas: Iterable[Mapping[str, object]], on_skip: SkipFn = ignore_skip,
) -> tuple[ChildSA, ...]:
    """CHILD_SAs from ``list-sas`` ``list-sa`` events (each {ike_name: {..., child-sas}})."""
    return forwarding_child_sas(parse_list_sas(ike_sas, on_skip=on_skip).sas, on_skip)


def forwarding_child_sas(
    sas: Iterable[IkeSa], on_skip: SkipFn = ignore_skip,
) -> tuple[ChildSA, ...]:
    """What the forward rules need from the SA model (`swand.core.events.IkeSa`, the
    one the event watcher and the metrics read too).

    Only SAs whose policies are installed count; DELETING/DESTROYING ones are gone already
    as far as forwarding is concerned, so their rules vanish on the next pass. A CHILD_SA
    that cannot be read (its traffic selectors are the client's choice) is left out and
    passed to `on_skip`: its rules are missing, every other SA's are there.
    """
    out: list[ChildSA] = []
    for ike in sas:
        for child in ike.children:
            try:
                sa = _child_sa(ike, child)
            except ValueError as exc:
                on_skip(unparsable(
                    "firewall", ike.conn, {"uniqueid": ike.uniqueid},
                    f"child-sas.{shown(child.name)} reqid {shown(child.reqid)}", exc))
                continue
            if sa is not None:
                out.append(sa)
    return tuple(out)


def _reqid(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 1 << 32:
        raise ValueError(f"reqid {shown(text)} is not 1..2^32-1")
    return int(text)


def _child_sa(ike: IkeSa, child: ChildSa) -> ChildSA | None:
    """One CHILD_SA with installed policies, its selectors checked (ValueError if not)."""
    if child.state not in ACTIVE_CHILD_STATES or not child.reqid:
        return None
    sa = ChildSA(
        ike=ike.conn,
        child=child.name,
        reqid=_reqid(child.reqid),
        local_ts=child.local_ts,
        remote_ts=child.remote_ts,
        protocol=(child.protocol or "esp").lower(),
    )
    if sa.protocol not in ("esp", "ah"):
        raise ValueError(f"protocol {shown(sa.protocol)} is neither esp nor ah")
    for raw in (*sa.local_ts, *sa.remote_ts):
        _parse_ts(raw)
    return sa


#: IKE_SA states in which ``list-sas`` may show the SA without the CHILD_SAs that still
#: forward traffic: during an IKE rekey the old SA is listed DELETING (or REKEYED) with no
#: children for a few ms, while the new one that adopted them is not yet listed (seen
#: on charon 5.9.8 and 6.0.1 alike)
SETTLING_IKE_STATES = frozenset({"REKEYING", "REKEYED", "DELETING"})


def ike_sas_settling(ike_sas: Iterable[Mapping[str, object]]) -> bool:
    """True when some IKE_SA of these ``list-sa`` events is in a `SETTLING_IKE_STATES`
    state: a CHILD_SA missing from this snapshot may only be moving to a new IKE_SA."""
    return sas_settling(parse_list_sas(ike_sas).sas)


def sas_settling(sas: Iterable[IkeSa]) -> bool:
    """`ike_sas_settling` over the SA model."""
    return any(ike.state in SETTLING_IKE_STATES for ike in sas)


_Held = TypeVar("_Held", bound=Hashable)


def held_child_sas(
    current: Iterable[_Held], last_seen: Mapping[_Held, float], now: float, *,
    settling: bool, hold: float,
) -> dict[_Held, float]:
    """The CHILD_SAs to keep forward rules for, each with when it was last listed.

    Those listed now are kept. One missing now is kept only while the snapshot is
    `settling` and for at most `hold` seconds since it was last listed: long enough to
    bridge an IKE rekey, short enough that a deleted SA's rules still go within 2 s.
    The caller re-reads after `hold` whenever it keeps one that is not listed. (Generic:
    the NDP proxies of leased addresses are held the same way.)"""
    seen = {sa: now for sa in current}
    if settling:
        for sa, when in last_seen.items():
            if sa not in seen and now - when < hold:
                seen[sa] = when
    return seen


def resolve_mode(setting: str, plugins: Iterable[str]) -> Mode:
    """``auto``: interface mode when charon runs kernel-libipsec (it owns the TUN device and
    no kernel policy marks the packets), policy mode otherwise."""
    if setting in ("policy", "interface"):
        return setting  # type: ignore[return-value]
    return "interface" if "kernel-libipsec" in set(plugins) else "policy"


# --- desired state --------------------------------------------------------------------


def desired_firewall(inputs: FirewallInputs, cache: SaRuleCache | None = None
                     ) -> DesiredFirewall:
    """The complete rule set swand owns for these inputs (deterministic; `cache`, the
    reconciler's, only saves recomputing the rules of CHILD_SAs seen in the last call).
    """
    s = inputs.settings
    tables: dict[tuple[Family, str], DesiredTable] = {}
    if not s.enabled:
        return DesiredFirewall(tables)

    def put(family: Family, table: str, chain: str, rules: Sequence[Rule]) -> None:
        builtin = HOOKS[(table, chain)]
        # one rule per tag: equal rules from two sources (e.g. two pools) collapse
        unique = tuple({r.tag: r for r in rules}.values())
        jump = Rule(family, table, builtin, target=chain)
        prev = tables.get((family, table))
        chains = dict(prev.chains) if prev else {}
        jumps = dict(prev.jumps) if prev else {}
        chains[chain] = unique
        jumps[builtin] = jump
        tables[(family, table)] = DesiredTable(family, table, chains, jumps)

    if s.forward_rules:
        fwd = (cache if cache is not None else SaRuleCache()).forward_rules(inputs)
        for family in FAMILIES:
            put(family, "filter", CHAIN_FWD, [r for r in fwd if r.family == family])
    if s.mss:
        for family in FAMILIES:
            put(family, "mangle", CHAIN_MSS, _mss_rules(inputs, family))
    nat_families: list[Family] = []
    if s.nat:
        nat_families.append("ipv4")
    if s.nat66:
        nat_families.append("ipv6")
    if nat_families:
        pools_present = any(
            _family(n) in nat_families for p in inputs.pools for n in p.networks
        )
        if pools_present and not inputs.egress:
            raise FirewallInputError(
                "[firewall] egress: no egress interface known (no default route?); "
                "NAT for the pools cannot be written"
            )
        for family in nat_families:
            put(family, "nat", CHAIN_NAT, _nat_rules(inputs, family))
    return DesiredFirewall(tables)


def _nat_rules(inputs: FirewallInputs, family: Family) -> list[Rule]:
    rules: list[Rule] = []
    for pool in inputs.pools:
        for net in pool.networks:
            if _family(net) != family:
                continue
            if inputs.mode == "policy":
                exempt = Rule(
                    family, "nat", CHAIN_NAT, "ACCEPT", src=net, out_iface=inputs.egress,
                    matches=(Match("policy", (("dir", "out"), ("pol", "ipsec"))),),
                )
            else:
                exempt = Rule(
                    family, "nat", CHAIN_NAT, "ACCEPT", src=net,
                    out_iface=inputs.tunnel_iface,
                )
            rules.append(exempt)
            rules.append(Rule(
                family, "nat", CHAIN_NAT, "MASQUERADE", src=net, out_iface=inputs.egress,
            ))
    return rules


#: an IPv6 header is 40 bytes, IPv4's 20: the same path MTU leaves 20 bytes less MSS
IPV6_MSS_DELTA = 20


def mss_for(setting: int, family: Family) -> int:
    """``[firewall] mss`` is the IPv4 value; IPv6 SYNs get 20 bytes less, so both families
    fit the same tunnel MTU."""
    return setting - IPV6_MSS_DELTA if family == "ipv6" else setting


def _mss_rules(inputs: FirewallInputs, family: Family) -> list[Rule]:
    mss = mss_for(inputs.settings.mss, family)
    clamp = (
        Match("tcp", (("tcp-flags", "SYN,RST SYN"),)),
        Match("tcpmss", (("mss", f"{mss + 1}:1536"),)),
    )
    rules: list[Rule] = []
    for direction in ("in", "out"):
        if inputs.mode == "policy":
            rule = Rule(
                family, "mangle", CHAIN_MSS, "TCPMSS", proto="tcp",
                matches=(Match("policy", (("dir", direction), ("pol", "ipsec"))), *clamp),
                target_options=(("set-mss", str(mss)),),
            )
        else:
            iface = inputs.tunnel_iface
            rule = Rule(
                family, "mangle", CHAIN_MSS, "TCPMSS", proto="tcp",
                in_iface=iface if direction == "in" else None,
                out_iface=iface if direction == "out" else None,
                matches=clamp, target_options=(("set-mss", str(mss)),),
            )
        rules.append(rule)
    return rules


@dataclass(frozen=True)
class _TS:
    network: str
    proto: str | None
    port: str | None  # "80" or "1024:65535"


class SaRuleCache:
    """Each CHILD_SA's forward rules as of the last call: a pass over 1,000 unchanged SAs
    is then a lookup per SA, not 2,000 address parses and hashes.

    Only the SAs of the last call are kept, so memory follows the live SAs and not a
    gateway's history: the LRU of 32,768 entries this replaces held three times the live
    set once 10,000 SAs had churned for five minutes (bench_churn.py: RSS still growing
    at minute 5). One cache per reconciler; a call at a time (passes run one by one)."""

    def __init__(self) -> None:
        self._rules: dict[tuple[ChildSA, Mode, str], tuple[Rule, ...] | None] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def unseen(self, inputs: FirewallInputs) -> int:
        """How many of `inputs`' SAs the next call must compute rules for (the rest are
        lookups): what decides whether a pass's rules are worth a thread."""
        known = self._rules
        return sum((sa, inputs.mode, inputs.tunnel_iface) not in known
                   for sa in inputs.child_sas)

    def forward_rules(self, inputs: FirewallInputs) -> list[Rule]:
        """What ``_updown iptables`` inserts per CHILD_SA: remote -> local in, local ->
        remote out, for every same-family pair of traffic selectors."""
        known = self._rules
        kept: dict[tuple[ChildSA, Mode, str], tuple[Rule, ...] | None] = {}
        rules: list[Rule] = []
        for sa in sorted(inputs.child_sas, key=lambda c: (c.reqid, c.ike, c.child)):
            key = (sa, inputs.mode, inputs.tunnel_iface)
            if key in known:
                sa_rules = known[key]
            else:
                try:
                    sa_rules = _sa_rules(sa, inputs.mode, inputs.tunnel_iface)
                except TrafficSelectorError:
                    # `read_child_sas` reported it; never fail the others' rules
                    sa_rules = None
            kept[key] = sa_rules
            if sa_rules is not None:
                rules += sa_rules
        self._rules = kept
        return rules


def _sa_rules(sa: ChildSA, mode: Mode, tunnel_iface: str) -> tuple[Rule, ...]:
    """One SA's forward rules (their tags computed once, here)."""
    rules: list[Rule] = []
    locals_ = [t for raw in sa.local_ts for t in _parse_ts(raw)]
    remotes = [t for raw in sa.remote_ts for t in _parse_ts(raw)]
    for remote in remotes:
        for local in locals_:
            family = _family(remote.network)
            if family != _family(local.network):
                continue
            if remote.proto and local.proto and remote.proto != local.proto:
                continue
            proto = remote.proto or local.proto
            for direction in ("in", "out"):
                src, dst = (remote, local) if direction == "in" else (local, remote)
                rule = _forward_rule(mode, tunnel_iface, sa, family, direction, src, dst, proto)
                _ = rule.tag  # computed once, while cached
                rules.append(rule)
    return tuple(rules)


def _forward_rule(
    mode: Mode, tunnel_iface: str, sa: ChildSA, family: Family, direction: str, src: _TS,
    dst: _TS, proto: str | None,
) -> Rule:
    matches: list[Match] = []
    if proto in _PORT_PROTOCOLS and (src.port or dst.port):
        opts: list[tuple[str, str]] = []
        if src.port:
            opts.append(("sport", src.port))
        if dst.port:
            opts.append(("dport", dst.port))
        matches.append(Match(proto, tuple(opts)))
    iface_in = iface_out = None
    if mode == "policy":
        matches.append(Match("policy", (
            ("dir", direction), ("pol", "ipsec"), ("reqid", str(sa.reqid)),
            ("proto", sa.protocol),
        )))
    elif direction == "in":
        iface_in = tunnel_iface
    else:
        iface_out = tunnel_iface
    return Rule(
        family, "filter", CHAIN_FWD, "ACCEPT",
        src=_none_if_any(src.network), dst=_none_if_any(dst.network),
        in_iface=iface_in, out_iface=iface_out, proto=proto, matches=tuple(matches),
    )


class TrafficSelectorError(ValueError):
    """A traffic selector as charon printed it that swand cannot turn into rules."""


@lru_cache(maxsize=65536)
def _parse_ts(raw: str) -> tuple[_TS, ...]:
    """``10.1.0.0/16``, ``10.0.0.1..10.0.0.9``, ``0.0.0.0/0[tcp/80]``, ``::/0[udp/1-9]``,
    ``10.0.0.0/8[tcp/http-alt]``, ``10.8.0.2/32[253]``: protocol and a single port are
    printed by name when charon's host knows one (`swand.core.services`).

    Raises TrafficSelectorError naming the selector."""
    try:
        return tuple(_parse_ts_text(raw))
    except ValueError as exc:  # ipaddress, services, int(): all ValueErrors
        raise TrafficSelectorError(f"traffic selector {shown(raw)}: {exc}") from None


def _parse_ts_text(raw: str) -> list[_TS]:
    raw = raw.strip()
    proto = port = None
    if raw.endswith("]") and "[" in raw:
        raw, _, sel = raw[:-1].partition("[")
        printed_proto, _, ports = sel.partition("/")
        proto = protocol_name(printed_proto) if printed_proto else None
        if ports and ports not in ("0-65535", "OPAQUE"):
            if proto not in _PORT_PROTOCOLS:
                return []  # ICMP type/code etc.: not expressible here; accept nothing
            # getservbyport(port, NULL) when charon printed the protocol as a number
            lookup = None if printed_proto.isdigit() else printed_proto
            port = port_range(ports, lookup, system_services())
    return [_TS(net, proto, port) for net in _networks_of(raw)]


def _networks_of(text: str) -> list[str]:
    if ".." in text or ("-" in text and "/" not in text):
        first, _, last = text.partition(".." if ".." in text else "-")
        a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
        return [str(n) for n in ipaddress.summarize_address_range(a, b)]
    return [str(ipaddress.ip_network(text, strict=False))]


def _none_if_any(net: str) -> str | None:
    return None if net.endswith("/0") else net


def _family(net: str) -> Family:
    return "ipv6" if ":" in net else "ipv4"


def _text(v: object) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="surrogateescape")
    return "" if v is None else str(v)


def _list(v: object) -> list[object]:
    """A VICI reply value as a list (VICI sends a list, a lone value or nothing): already
    split by charon, so not swanctl.conf's comma syntax (`swanctl.split_list`)."""
    if v is None:
        return []
    if isinstance(v, list | tuple):
        return list(v)
    return [v]


# --- rendering ------------------------------------------------------------------------


def render_save(desired: DesiredFirewall, family: Family) -> str:
    """The family's rules as ``iptables-save`` text (only swand's chains and jumps); also a
    valid input for ``iptables-legacy-restore --noflush``."""
    lines: list[str] = []
    for table in TABLES:
        t = desired.tables.get((family, table))
        if t is None:
            continue
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in t.chains]
        lines += [j.save_line() for j in t.jumps.values()]
        for rules in t.chains.values():
            lines += [r.save_line() for r in rules]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


# --- observed state and the diff ------------------------------------------------------


@dataclass(frozen=True)
class ObservedTable:
    """What one (family, table) holds, as far as swand cares: for every owned chain and for
    the built-in chains swand jumps from, the tag of each rule in order (None: untagged)."""

    family: Family
    table: str
    chains: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateChain:
    chain: str


@dataclass(frozen=True)
class DeleteChain:
    """Flush, then delete, an owned chain (nothing may reference it by then)."""

    chain: str


@dataclass(frozen=True)
class DeleteRule:
    chain: str
    index: int  # 0-based, in the chain as it is when this op runs


@dataclass(frozen=True)
class InsertRule:
    chain: str
    index: int  # 0-based; == current length means append
    rule: Rule


Op = CreateChain | DeleteChain | DeleteRule | InsertRule


@dataclass(frozen=True)
class TablePlan:
    family: Family
    table: str
    ops: tuple[Op, ...]


def diff_table(desired: DesiredTable | None, observed: ObservedTable) -> TablePlan:
    """The minimal ordered edit from `observed` to `desired` for one table.

    Owned chains end up holding exactly the desired rules in order (foreign and stale rules
    removed, the longest already-ordered run kept); built-in chains keep every foreign rule
    and get exactly one jump per owned chain (inserted at the top when missing).
    """
    ops: list[Op] = []
    want_chains = dict(desired.chains) if desired else {}
    want_jumps = dict(desired.jumps) if desired else {}
    observed_owned = {c for c in observed.chains if c.startswith(OWNED_PREFIX)}
    builtins = {c for c in observed.chains if not c.startswith(OWNED_PREFIX)} | set(want_jumps)

    # 1. built-in chains: drop stale and duplicate tagged jumps (foreign rules untouched)
    missing_jumps: list[Rule] = []
    for builtin in sorted(builtins):
        tags = observed.chains.get(builtin, ())
        jump = want_jumps.get(builtin)
        keep_seen = False
        doomed: list[int] = []
        for i, tag in enumerate(tags):
            if tag is None:
                continue
            if jump is not None and tag == jump.tag and not keep_seen:
                keep_seen = True
                continue
            doomed.append(i)
        ops += [DeleteRule(builtin, i) for i in reversed(doomed)]
        if jump is not None and not keep_seen:
            missing_jumps.append(jump)
    # 2. owned chains nobody wants any more
    ops += [DeleteChain(c) for c in sorted(observed_owned - set(want_chains))]
    # 3. owned chains to create, then fill every wanted chain
    for chain, rules in want_chains.items():
        if chain not in observed_owned:
            ops.append(CreateChain(chain))
        ops += diff_chain(chain, rules, observed.chains.get(chain, ()))
    # 4. jumps last, so they point at complete chains within the one commit
    ops += [InsertRule(j.chain, 0, j) for j in missing_jumps]
    return TablePlan(observed.family, observed.table, tuple(ops))


def diff_chain(
    chain: str, rules: Sequence[Rule], observed: Sequence[str | None]
) -> list[Op]:
    """Ops that turn a chain holding `observed` tags (None: untagged) into `rules`:
    deletes first (descending indexes of `observed`), then inserts (indexes of the final
    chain, ascending). Also used by the nftables backend, which maps them to handles."""
    tags = [r.tag for r in rules]
    n = len(observed)
    if n <= len(tags) and tags[:n] == list(observed):
        # unchanged, or new rules at the end only (a new SA's reqid is the highest)
        return [InsertRule(chain, i, rules[i]) for i in range(n, len(tags))]
    wanted = set(tags)
    present = set(observed)
    # churn: SAs gone here and there, new ones at the end, the rest in order: keep every
    # wanted rule, in one pass of set lookups (20,000 rules: ~3 ms; the general way
    # below takes ~20 ms)
    kept_in_order = [t for t in observed if t in wanted]
    if kept_in_order == [t for t in tags if t in present]:
        ops: list[Op] = [DeleteRule(chain, i) for i in reversed(range(n))
                         if observed[i] not in wanted]
        ops += [InsertRule(chain, i, r) for i, r in enumerate(rules) if r.tag not in present]
        return ops
    position = {r.tag: i for i, r in enumerate(rules)}
    # observed rules that are wanted, as (observed index, desired index); keep the longest
    # increasing run of desired indices (LIS), delete the rest
    candidates: list[tuple[int, int]] = []
    seen: set[str] = set()
    for i, tag in enumerate(observed):
        if tag is not None and tag in position and tag not in seen:
            seen.add(tag)
            candidates.append((i, position[tag]))
    order = [d for _, d in candidates]
    if all(a < b for a, b in itertools.pairwise(order)):
        kept = {i for i, _ in candidates}  # already in order (the usual case): keep all
    else:
        kept = {candidates[k][0] for k in _lis(order)}
    ops = [DeleteRule(chain, i) for i in reversed(range(len(observed))) if i not in kept]
    kept_tags = {observed[i] for i in kept}
    for index, rule in enumerate(rules):
        if rule.tag not in kept_tags:
            ops.append(InsertRule(chain, index, rule))
    return ops


def _lis(seq: Sequence[int]) -> list[int]:
    """Indices into `seq` of one longest strictly increasing subsequence (O(n log n))."""
    tails: list[int] = []  # seq values
    tails_idx: list[int] = []
    prev = [-1] * len(seq)
    for i, v in enumerate(seq):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tails_idx.append(i)
        else:
            tails[k] = v
            tails_idx[k] = i
        prev[i] = tails_idx[k - 1] if k else -1
    out: list[int] = []
    i = tails_idx[-1] if tails_idx else -1
    while i != -1:
        out.append(i)
        i = prev[i]
    return out[::-1]


def plan(
    desired: DesiredFirewall, observed: Iterable[ObservedTable]
) -> list[TablePlan]:
    """Plans for every table that needs a change (empty list: nothing to write)."""
    plans: list[TablePlan] = []
    seen: set[tuple[Family, str]] = set()
    for obs in observed:
        seen.add((obs.family, obs.table))
        p = diff_table(desired.tables.get((obs.family, obs.table)), obs)
        if p.ops:
            plans.append(p)
    for key, table in desired.tables.items():
        if key not in seen:
            p = diff_table(table, ObservedTable(key[0], key[1]))
            if p.ops:
                plans.append(p)
    return plans


# --- backend choice -------------------------------------------------------------------


class BackendChoiceError(ValueError):
    """No backend may be used here; the message names ``[firewall] backend``."""


def choose_backend(
    setting: str, *, iptables_variant: str | None, nft_has_rules: bool, nft_available: bool,
    source: str = "swand.toml",
) -> tuple[str, str]:
    """(``legacy`` | ``nftables``, why) for ``[firewall] backend``.

    ``auto`` picks nftables where the administrator's firewall lives there (the host's
    ``iptables`` is the nf_tables variant, or nftables holds tables other than swand's),
    legacy otherwise. Legacy rules on such a host would be invisible to the admin's tools
    and an nftables FORWARD drop would override their accepts, so when the nftables
    binding is missing ``auto`` refuses rather than silently falling back to legacy;
    ``backend = "legacy"`` is the explicit override.
    """
    if setting == "legacy":
        return "legacy", f"{source}: [firewall] backend = \"legacy\""
    if setting == "nftables":
        if not nft_available:
            raise BackendChoiceError(
                f"{source}: [firewall] backend = \"nftables\" needs libnftables' Python "
                "binding (apt install python3-nftables)"
            )
        return "nftables", f"{source}: [firewall] backend = \"nftables\""
    reasons = []
    if iptables_variant == "nf_tables":
        reasons.append("this host's iptables is the nf_tables variant")
    if nft_has_rules:
        reasons.append("nftables holds rules")
    if not reasons:
        return "legacy", "auto: iptables is the legacy variant and nftables holds no rules"
    if nft_available:
        return "nftables", "auto: " + " and ".join(reasons)
    raise BackendChoiceError(
        f"{source}: [firewall] backend = \"auto\": " + " and ".join(reasons) + ", so rules "
        "in the legacy tables would be invisible to `iptables`/`nft` and an nftables "
        "FORWARD drop would still drop the traffic, but libnftables' Python binding is "
        "missing (apt install python3-nftables). Set [firewall] backend = \"legacy\" to "
        "use the legacy tables anyway."
    )


# --- validation (for `swand check` and for each pass) ---------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason the firewall cannot be reconciled; `key` names the setting."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def validate(
    settings: FirewallSettings,
    *,
    pools: Sequence[Pool] = (),
    egress: str | None,
    interfaces: Mapping[str, Sequence[str]] | None = None,
    source: str = "swand.toml",
    routed6: bool = False,
) -> list[Problem]:
    """Everything wrong with these inputs, as data (empty list: fine).

    `egress` is the resolved egress interface (None: ``auto`` found no default route);
    `interfaces` maps each interface name to its addresses as CIDRs (``10.0.0.2/24``).
    `routed6` (``[ipv6] mode = "routed"``): an IPv6 pool inside the egress's on-link
    prefix is the point (swand answers NDP for its leases); only one holding an address
    of the egress itself is wrong.
    """
    problems: list[Problem] = []
    if not settings.enabled:
        return problems
    mss = settings.mss
    if mss != 0 and not MSS_RANGE[0] <= mss <= MSS_RANGE[1]:
        problems.append(Problem(
            f"{source}: [firewall] mss",
            f"must be 0 (off) or {MSS_RANGE[0]}..{MSS_RANGE[1]}, got {mss}",
        ))
    needs_egress = (settings.nat or settings.nat66) and bool(pools)
    if egress is None:
        if needs_egress:
            problems.append(Problem(
                f"{source}: [firewall] egress",
                "is 'auto' but there is no default route to take the interface from",
            ))
        return problems
    if interfaces is not None and egress not in interfaces:
        have = ", ".join(sorted(interfaces)) or "none"
        problems.append(Problem(
            f"{source}: [firewall] egress",
            f"interface {egress!r} does not exist (interfaces: {have})",
        ))
        return problems
    for addr in (interfaces or {}).get(egress, ()):
        subnet = ipaddress.ip_interface(addr).network
        for pool in pools:
            for net in pool.networks:
                pnet = ipaddress.ip_network(net)
                if routed6 and pnet.version == 6:
                    own = ipaddress.ip_interface(addr).ip
                    if own in pnet and pnet.num_addresses > 1 and own not in (
                            pnet.network_address, pnet.broadcast_address):
                        problems.append(Problem(
                            f"pool {pool.name!r}",
                            f"{net} contains {own}, an address of {egress}: a client "
                            "would be leased the gateway's own address",
                        ))
                    continue
                if pnet.version == subnet.version and pnet.overlaps(subnet):
                    problems.append(Problem(
                        f"pool {pool.name!r}",
                        f"{net} overlaps the egress subnet {subnet} of {egress}: clients "
                        "would shadow hosts on that link and NAT would be wrong",
                    ))
    return problems
