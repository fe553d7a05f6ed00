"""`swand run`: the daemon, in the foreground (systemd's Type=notify starts this)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from swand.adapters.firewall_backend import FirewallBackendError
from swand.app import Daemon
from swand.config import ConfigError, load_config
from swand.core.firewall import BackendChoiceError
from swand.log import configure_logging, get_logger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-firewall", action="store_true",
                        help="do not touch sysctls or firewall rules ([firewall] enabled)")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config).with_overrides(
            vici=args.vici, swanctl_dir=args.swanctl_dir,
            firewall_enabled=False if args.no_firewall else None)
    except ConfigError as exc:
        print(f"swand: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.log.format, cfg.log.level)

    try:
        return asyncio.run(Daemon(cfg).run())
    except (OSError, BackendChoiceError, FirewallBackendError) as exc:
        # the metrics port is taken, the firewall backend must be refused, ...: say so
        get_logger("swand").error("fatal", error=str(exc))
        return 1
