"""`swand status [--json]`: who is connected, as charon reports it.

Reads charon over VICI directly (list-conns, list-sas), so it works whether or not the
daemon runs. Configured connections without an SA are listed as `down`. The reason of the
last down is only known to a running daemon: it is read from the daemon's state file
(`--state`, default /run/swand/last-downs.json, written by the metrics poller) when present.

The table fits 80 columns: one line per IKE_SA (connection, remote id, remote address,
virtual IP, state, established since) and indented lines with its virtual IPv6 addresses
(too wide for the column), its traffic (both families) or the last down reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from swand.adapters.vici import ViciError, ViciSession
from swand.config import ConfigError, load_config
from swand.core import metrics as core
from swand.core.untrusted import SkipFn, Unparsable, ignore_skip, shown, valid_text

DEFAULT_STATE = Path("/run/swand/last-downs.json")
WIDTHS = (10, 18, 15, 15, 6, 7)  # connection, remote id, address, vip, state, since
HEADER = ("CONNECTION", "REMOTE ID", "ADDRESS", "VIRTUAL IP", "STATE", "SINCE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--state", default=None, metavar="FILE",
                        help="the daemon's last-downs file (default [metrics] state_file, "
                        f"{DEFAULT_STATE})")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for charon (default 10)")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def human_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cell(text: str, width: int) -> str:
    text = shown(text)  # a client's identity: printable, valid text only
    return text if len(text) <= width else text[: width - 1] + "~"


def _row(cells: tuple[str, ...]) -> str:
    return " ".join(_cell(c, w).ljust(w) for c, w in zip(cells, WIDTHS, strict=True)).rstrip()


def status_model(view: core.CharonView, last_downs: dict[str, Any]) -> dict[str, Any]:
    """The --json document: every configured or active connection with its SAs."""
    names = [c.name for c in view.conns]
    names += sorted({sa.conn for sa in view.sas} - set(names))
    configured = {c.name: c for c in view.conns}
    out = []
    for name in names:
        sas = [sa for sa in view.sas if sa.conn == name]
        out.append({
            "name": valid_text(name),
            "configured": name in configured,
            "up": any(sa.state == "ESTABLISHED" for sa in sas),
            "children": [valid_text(c) for c in configured[name].children]
            if name in configured else [],
            "last_down": last_downs.get(name),
            "sas": [{
                "remote_id": valid_text(sa.identity),
                "remote_host": valid_text(sa.remote_host),
                "virtual_ips": [valid_text(v) for v in sa.remote_vips],
                "state": valid_text(sa.state),
                "established_at": core.established_at(sa, view.taken_at),
                "children": [{
                    "name": valid_text(ch.name), "state": valid_text(ch.state),
                    "bytes_in": ch.bytes_in, "bytes_out": ch.bytes_out,
                    "packets_in": ch.packets_in, "packets_out": ch.packets_out,
                } for ch in sa.children],
            } for sa in sas],
        })
    return {"charon": {"daemon": view.info.daemon, "version": view.info.version},
            "taken_at": view.taken_at, "connections": out}


def render_table(model: dict[str, Any], now: float, out: TextIO) -> None:
    print(_row(HEADER), file=out)
    for conn in model["connections"]:
        down = conn["last_down"]
        if not conn["sas"]:
            print(_row((conn["name"], "-", "-", "-", "down", "-")), file=out)
            if down:
                ago = human_age(now - _number(down.get("at"), now))
                who = f" {shown(down['peer'])}" if down.get("peer") else ""
                print(f"{'':11}last down: {shown(down.get('reason', '?'))}{who} ({ago} ago)",
                      file=out)
            continue
        for sa in conn["sas"]:
            state = "up" if sa["state"] == "ESTABLISHED" else sa["state"].lower()[:6]
            since = (human_age(now - sa["established_at"])
                     if sa["established_at"] is not None else "-")
            # an IPv6 address does not fit the column: it gets a line of its own
            v4 = [v for v in sa["virtual_ips"] if ":" not in v]
            v6 = [v for v in sa["virtual_ips"] if ":" in v]
            print(_row((conn["name"], sa["remote_id"] or "-", sa["remote_host"] or "-",
                        ",".join(v4) or ("v6 only" if v6 else "-"), state, since)),
                  file=out)
            if v6:
                print(f"{'':11}virtual IPv6: {', '.join(v6)}", file=out)
            for ch in sa["children"]:
                print(f"{'':11}{shown(ch['name'])} {shown(ch['state'].lower())}: in "
                      f"{human_bytes(ch['bytes_in'])}, out {human_bytes(ch['bytes_out'])}",
                      file=out)
        if down and not conn["up"]:
            print(f"{'':11}last down: {shown(down.get('reason', '?'))}", file=out)


def _number(value: object, default: float) -> float:
    """A number from the state file (any JSON may be there), else `default`."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


async def fetch_view(
    uri: str, timeout: float, on_skip: SkipFn = ignore_skip,
) -> core.CharonView:
    session = await ViciSession.connect(uri, timeout=timeout)
    try:
        version = core.parse_version(await session.request("version", timeout=timeout))
        conns, _ = await session.streamed("list-conns", "list-conn", timeout=timeout)
        sas, _ = await session.streamed("list-sas", "list-sa", {"noblock": "yes"},
                                        timeout=timeout)
        now = time.time()
        return core.CharonView(taken_at=now, info=version, conns=core.parse_conns(conns),
                               sas=core.parse_sas(sas, on_skip, component="status"))
    finally:
        await session.close()


def read_last_downs(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config).with_overrides(vici=args.vici)
    except ConfigError as exc:
        print(f"swand status: {exc}", file=sys.stderr)
        return 2
    skipped: list[Unparsable] = []
    try:
        view = asyncio.run(fetch_view(cfg.charon.vici, args.timeout, skipped.append))
    except ViciError as exc:
        print(f"swand status: charon is not reachable: {exc}", file=sys.stderr)
        return 1
    for item in skipped:
        print(f"swand status: not shown, charon's view of it cannot be read: {item.sa}: "
              f"{item.error}", file=sys.stderr)
    state = args.state if args.state is not None else cfg.metrics.state_file
    model = status_model(view, read_last_downs(state) if state else {})
    if args.json:
        json.dump(model, sys.stdout, indent=2)
        print()
    else:
        render_table(model, time.time(), sys.stdout)
    return 0
