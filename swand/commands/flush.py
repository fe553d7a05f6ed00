"""`swand flush`: remove every firewall rule swand owns, in both backends.

Legacy iptables: everything in chains named ``SWAND-*`` and every jump tagged ``swand:``
in the built-in chains, both families, one commit per table. nftables: ``table inet
swand``. Rules of others stay; sysctls are left alone (ip_forward may be wanted by more
than swand). charon is not needed.
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


def run(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)  # a broken swand.toml is still reported
    except ConfigError as exc:
        print(f"swand flush: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(flush_firewall())
    except Exception as exc:
        print(f"swand flush: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
        return 0
    changed = {name: r for name, r in result.items() if r["changed_tables"]}
    for name, r in changed.items():
        print(f"{name}: removed {r['chains_deleted']} chains and {r['rules_deleted']} "
              f"jumps from {', '.join(r['changed_tables'])}")
    if not changed:
        print("nothing to remove")
    return 0
