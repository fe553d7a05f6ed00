"""`swand flush`: remove every firewall rule swand owns, in both backends, and its NDP
proxy entries.

Legacy iptables: everything in chains named ``SWAND-*`` and every jump tagged ``swand:``
in the built-in chains, both families, one commit per table. nftables: ``table inet
swand``. NDP proxy entries (routed IPv6): those carrying swand's protocol mark (250).
Rules and entries of others stay; sysctls are left alone (ip_forward may be wanted by
more than swand). charon is not needed.

With ``[routes] enabled``, also every route of ``[routes] table`` carrying swand's
protocol number (decommissioning a gateway of a fleet: its routing daemon withdraws
them). A running `swand run` would put back those its SAs still need.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from swand.adapters.iptables_legacy import LegacyIptablesBackend
from swand.adapters.ndp_proxy import NdpProxyTable
from swand.adapters.nftables import NftablesBackend, nftables_available
from swand.adapters.routes import NetlinkRoutes
from swand.config import ConfigError, load_config
from swand.core.leases import plan_objects


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def flush_firewall() -> dict[str, Any]:
    """Remove swand's chains, jumps and table; return what was done per backend."""
    backends: list[Any] = [LegacyIptablesBackend()]
    if nftables_available():
        backends.append(NftablesBackend())
    result: dict[str, Any] = {}
    try:
        for backend in backends:
            report = await backend.flush()
            result[backend.name] = {
                "changed_tables": list(report.changed_tables),
                "rules_deleted": report.deleted,
                "chains_deleted": report.chains_deleted,
            }
    finally:
        for backend in backends:
            await backend.close()
    return result


async def flush_ndp_proxies() -> int:
    """Remove swand's NDP proxy entries (protocol 250); return how many."""
    table = NdpProxyTable()
    try:
        applied = await table.apply(plan_objects(frozenset(), await table.read()))
    finally:
        await table.close()
    return applied.removed


async def flush_routes(table: int, protocol: int) -> dict[str, Any]:
    """Remove every route in `table` with `protocol` (swand's, see [routes])."""
    routes = NetlinkRoutes()
    try:
        owned = await routes.read_owned(table, protocol)
        changes = await routes.apply((), tuple(sorted(owned)))
    finally:
        await routes.close()
    return {"changed_tables": [str(table)] if changes.removed else [],
            "routes_deleted": changes.removed}


async def flush_all(cfg: Any) -> dict[str, Any]:
    result = await flush_firewall()
    if cfg.routes.enabled:
        result["routes"] = await flush_routes(cfg.routes.table, cfg.routes.protocol)
    return result


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)  # a broken swand.toml is still reported
    except ConfigError as exc:
        print(f"swand flush: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(flush_all(cfg))
        proxies = asyncio.run(flush_ndp_proxies())
    except Exception as exc:
        print(f"swand flush: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**result, "ndp_proxy": {"entries_deleted": proxies}}))
        return 0
    if proxies:
        print(f"ndp proxy: removed {proxies} entries")
    changed = {name: r for name, r in result.items() if r["changed_tables"]}
    for name, r in changed.items():
        if name == "routes":
            print(f"routes: removed {r['routes_deleted']} from table "
                  f"{r['changed_tables'][0]}")
            continue
        print(f"{name}: removed {r['chains_deleted']} chains and {r['rules_deleted']} "
              f"jumps from {', '.join(r['changed_tables'])}")
    if not changed and not proxies:
        print("nothing to remove")
    return 0
