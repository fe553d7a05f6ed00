"""Fleet checks (pure): pools of several gateways that would lease one address twice.

A fleet partitions its addresses one of two ways (docs/fleet.md):

- each gateway its own slice: no pool of one gateway may overlap a pool of another,
  or two clients on two gateways get the same address and one route hides the other;
- pinned clients (a one-address pool used by a connection with one remote identity) may
  be identical on every gateway: the same address for the same identity, wherever the
  client connects. Such a pool may repeat across gateways, but only with the same
  identity, and never inside another gateway's dynamic pool.

`check_fleet_pools` compares this gateway's swanctl.conf with each peer's (the files
``[fleet] peers`` or ``swand check --fleet FILE`` names) and returns warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

from swand.core.checks import ConfiguredPool, Finding, finding_at, pools_of
from swand.core.checks.pools import _overlap as pools_overlap
from swand.core.settings import Section


@dataclass(frozen=True)
class GatewayPools:
    """One gateway's pools and which remote identities use each one."""

    name: str  # the file it came from
    pools: tuple[ConfiguredPool, ...]
    users: dict[str, frozenset[str]]

    def pinned_to(self, pool: ConfiguredPool) -> frozenset[str] | None:
        """The identities a one-address pool is pinned to (None: not a pinned pool)."""
        if pool.size != 1:
            return None
        return self.users.get(pool.name, frozenset())


def gateway_pools(name: str, tree: Section) -> GatewayPools:
    pools, _ = pools_of(tree)  # malformed addrs are the local checks' business
    users: dict[str, set[str]] = {}
    conns = tree.sections.get("connections")
    for conn in conns.sections.values() if conns else ():
        remote_ids = {
            (sec.get("id") or "%any").strip() for key, sec in conn.sections.items()
            if key == "remote" or key.startswith("remote-")
        } or {"%any"}
        for pool in (p.strip() for p in (conn.get("pools") or "").split(",")):
            if pool:
                users.setdefault(pool, set()).update(remote_ids)
    return GatewayPools(name, tuple(pools),
                        {k: frozenset(v) for k, v in users.items()})


def check_fleet_pools(local: GatewayPools, peers: list[GatewayPools]) -> list[Finding]:
    """Warnings for every local pool that can double-lease with a peer gateway's pool."""
    out: list[Finding] = []
    for peer in peers:
        for mine in local.pools:
            for theirs in peer.pools:
                if not pools_overlap(mine, theirs):
                    continue
                mine_pin, their_pin = local.pinned_to(mine), peer.pinned_to(theirs)
                if mine_pin is not None and their_pin is not None:
                    if mine_pin == their_pin and "%any" not in mine_pin:
                        continue  # the same pinned client on every gateway: fine
                    out.append(finding_at(
                        mine.origin, "warning", "fleet-pinned-differs",
                        f"pool '{mine.name}' ({mine.addrs}) is pinned to "
                        f"{_ids(mine_pin)} here but to {_ids(their_pin)} in {peer.name} "
                        f"(pool '{theirs.name}'): two clients can hold the address on two "
                        "gateways", "pin the address to the same client identity on every "
                        "gateway"))
                    continue
                out.append(finding_at(
                    mine.origin, "warning", "fleet-pool-overlap",
                    f"pool '{mine.name}' ({mine.addrs}) overlaps pool '{theirs.name}' "
                    f"({theirs.addrs}) of {peer.name}: two gateways can lease the same "
                    "address to two clients", "give each gateway its own slice (see "
                    "docs/fleet.md); only pinned one-address pools may repeat"))
    return out


def _ids(ids: frozenset[str]) -> str:
    return ", ".join(sorted(ids)) or "no connection"
