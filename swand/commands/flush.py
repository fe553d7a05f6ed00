"""`swand flush`: remove every firewall rule swand owns, in both backends, and its NDP
proxy entries.

Legacy iptables: everything in chains named ``SWAND-*`` and every jump tagged ``swand:``
in the built-in chains, both families, one commit per table. nftables: ``table inet
swand``. NDP proxy entries (routed IPv6): those carrying swand's protocol mark (250).
Rules and entries of others stay; sysctls are left alone (ip_forward may be wanted by
more than swand). charon is not needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from swand.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def flush_firewall() -> dict[str, Any]:
    """Remove swand's chains, jumps and table; return what was done per backend."""
    from swand.adapters.iptables_legacy import LegacyIptablesBackend
    from swand.adapters.nftables import NftablesBackend, nftables_available

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
    from swand.adapters.ndp_proxy import NdpProxyTable
    from swand.core.leases import plan_objects

    table = NdpProxyTable()
    try:
        applied = await table.apply(plan_objects(frozenset(), await table.read()))
    finally:
        await table.close()
    return applied.removed


def run(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)  # a broken swand.toml is still reported
    except ConfigError as exc:
        print(f"swand flush: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(flush_firewall())
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
        print(f"{name}: removed {r['chains_deleted']} chains and {r['rules_deleted']} "
              f"jumps from {', '.join(r['changed_tables'])}")
    if not changed and not proxies:
        print("nothing to remove")
    return 0
