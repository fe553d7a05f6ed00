"""`swand apply`: load the swanctl folder into charon once, reconcile the firewall once,
exit.

A one-shot process has no record of what it loaded before, so every configured object is
sent (as `swanctl --load-all` does; charon replaces them without touching SAs); what left
the folder is unloaded and its SAs terminated. The daemon (`swand run`) keeps that record
and sends only what changed.

Exit status: 0 when everything loaded; 1 with one line per failure on stderr (each naming
file:line or the item; a swanctl.conf that does not parse changes nothing); 2 when
swand.toml is unusable or charon cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from swand.adapters.vici import ViciError, ViciSession
from swand.config import ConfigError, SwandConfig, load_config
from swand.runtime.loader import ConfigLoader, LoadReport

#: the firewall step of `swand apply`: (config, VICI session) -> failure lines. The
#: bindings (iptc, pyroute2, nftables) load only when a pass runs, so `swand apply
#: --no-firewall` never loads them.
FirewallHook = Callable[[SwandConfig, ViciSession], Awaitable[list[str]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-firewall", action="store_true",
                        help="load into charon only; leave sysctls and firewall alone")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up on a charon that does not answer (default 30)")


async def _firewall(cfg: SwandConfig, session: ViciSession) -> list[str]:
    """The firewall hook: one pass of swand.runtime.firewall."""
    # imported here: the firewall (backends, rule rendering) is 0.12 s of imports that
    # `swand apply --no-firewall` and a gateway without [firewall] never use (bench_load)
    from swand.runtime.firewall import apply_firewall_once

    try:
        report = await apply_firewall_once(cfg, session)
    except Exception as exc:  # every failure becomes one line, never a traceback
        return [f"firewall: {exc}"]
    if not report.ok:
        return [f"firewall: {report.error or '; '.join(report.problems)}"]
    return []


async def apply_once(cfg: SwandConfig, *, firewall: FirewallHook | None = _firewall,
                     timeout: float = 30.0) -> tuple[LoadReport | None, list[str]]:
    """Load once (and run the firewall hook unless None). Returns the load report (None
    when nothing was loaded) and the failure lines (empty: success).

    The folder is read before charon is contacted: a file that does not parse is
    reported (and nothing changed) even when charon is down."""
    loader = ConfigLoader(cfg.swanctl.dir, terminate_removed=cfg.swanctl.terminate_removed)
    parsed, config_errors = loader.reread()
    config_lines = [str(e) for e in config_errors]
    if not parsed:
        return None, config_lines
    try:
        session = await ViciSession.connect(cfg.charon.vici, timeout=min(timeout, 10.0))
    except ViciError as exc:
        return None, [*config_lines, f"charon: {exc}"]
    try:
        try:
            async with asyncio.timeout(timeout):
                report = await loader.reconcile(session)  # the folder was just read
        except (ViciError, TimeoutError) as exc:
            return None, [*config_lines, f"charon: {str(exc) or 'no answer within the timeout'}"]
        report.config_errors = list(config_errors)
        failures = report.failure_lines()
        if firewall is not None:
            failures += await firewall(cfg, session)
        return report, failures
    finally:
        await session.close()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config).with_overrides(
            vici=args.vici, swanctl_dir=args.swanctl_dir,
            firewall_enabled=False if args.no_firewall else None,
        )
    except ConfigError as exc:
        print(f"swand apply: {exc}", file=sys.stderr)
        return 2
    hook = None if (args.no_firewall or not cfg.firewall.enabled) else _firewall
    report, failures = asyncio.run(apply_once(cfg, firewall=hook, timeout=args.timeout))
    for line in failures:
        print(line, file=sys.stderr)
    if report is None:
        return 2 if failures and failures[-1].startswith("charon: ") else 1
    counts = report.counts()
    done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to change"
    print(f"swand apply: {done} ({report.duration * 1000:.0f} ms)")
    return 1 if failures else 0
