"""The `swand` command line: one entry point, one module per subcommand.

Each subcommand lives in `swand.commands.<name>` and exposes `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so `swand check`
never imports iptables or netlink bindings.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from swand.config import DEFAULT_CONFIG_PATH

#: command name -> one-line help; the module is swand.commands.<name>
COMMANDS: dict[str, str] = {
    "run": "run the daemon in the foreground (systemd starts this)",
    "apply": "load swanctl.conf into charon and reconcile the firewall once, then exit",
    "check": "validate swand.toml and swanctl.conf without touching charon",
    "status": "show connections and SAs as charon reports them",
    "flush": "remove every firewall rule swand owns",
    "demo": "build a lab of namespaces and charons and run swand as its gateway",
    "pki": "create the CA and the gateway certificate",
    "client": "add, revoke and list road-warrior clients",
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """-c / --swanctl-dir / --vici: the options every subcommand shares."""
    parser.add_argument(
        "-c", "--config", default=None, metavar="FILE",
        help=f"swand.toml (default {DEFAULT_CONFIG_PATH}; a missing default file means "
        "all defaults)",
    )
    parser.add_argument(
        "--swanctl-dir", default=None, metavar="DIR",
        help="swanctl configuration folder (overrides [swanctl] dir)",
    )
    parser.add_argument(
        "--vici", default=None, metavar="URI",
        help="charon's VICI socket, e.g. unix:///var/run/charon.vici (overrides [charon] vici)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; only `command`'s module is imported (None: every one's).
    The overview needs none: COMMANDS holds each command's help."""
    parser = argparse.ArgumentParser(prog="swand", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(p)
        if command is None or name == command:
            module = importlib.import_module(f"swand.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the command comes first (the common options belong to the subcommands)
    command = argv[0] if argv and argv[0] in COMMANDS else ""
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
