"""`swand flush`: remove every firewall rule swand owns.

Everything in chains named ``SWAND-*`` and every jump tagged ``swand:`` in the built-in
chains, in both families, in one commit per table; rules of others stay. Sysctls are left
alone (ip_forward may be wanted by more than swand). charon is not needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from swand.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def flush_firewall() -> dict[str, object]:
    """Remove swand's chains and jumps from the legacy tables; return what was done."""
    from swand.adapters.iptables_legacy import LegacyIptablesBackend

    backend = LegacyIptablesBackend()
    try:
        report = await backend.flush()
    finally:
        await backend.close()
    return {
        "backend": report.backend,
        "changed_tables": list(report.changed_tables),
        "rules_deleted": report.deleted,
        "chains_deleted": report.chains_deleted,
    }


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
    elif result["changed_tables"]:
        print(f"removed {result['chains_deleted']} chains and {result['rules_deleted']} "
              f"jumps from {', '.join(result['changed_tables'])}")  # type: ignore[arg-type]
    else:
        print("nothing to remove")
    return 0
