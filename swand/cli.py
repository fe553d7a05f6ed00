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
    "check": "validate swand.toml and swanctl.conf (and charon's plugins) without changes",
    "status": "show connections and SAs as charon reports them",
    "flush": "remove every firewall rule swand owns",
    "demo": "build a lab of namespaces and charons and run swand as its gateway",
    "pki": "create the CA and the gateway certificate",
    "client": "add, revoke and list road-warrior clients",
    "import": "turn an ipsec.conf gateway into a swanctl folder, reporting what needs a person",
}
#: commands whose module name differs (`import` is a Python keyword)
MODULES: dict[str, str] = {"import": "import_"}


#: the shared options that take a value (to find the command behind them)
COMMON_VALUE_OPTIONS = ("-c", "--config", "--swanctl-dir", "--vici")


def add_common_arguments(parser: argparse.ArgumentParser, default: object = None) -> None:
    """-c / --swanctl-dir / --vici: the options every subcommand shares.

    They are added to the top parser (default None) and again to every subcommand and
    action parser with `argparse.SUPPRESS` as default, so they are accepted before and
    after the subcommand (`swand -c F pki init` and `swand pki init -c F`) and a level
    where they are not given never resets what another level set.
    """
    parser.add_argument(
        "-c", "--config", default=default, metavar="FILE",
        help=f"swand.toml (default {DEFAULT_CONFIG_PATH}; a missing default file means "
        "all defaults)",
    )
    parser.add_argument(
        "--swanctl-dir", default=default, metavar="DIR",
        help="swanctl configuration folder (overrides [swanctl] dir)",
    )
    parser.add_argument(
        "--vici", default=default, metavar="URI",
        help="charon's VICI socket, e.g. unix:///var/run/charon.vici (overrides [charon] vici)",
    )


def _add_common_to_actions(parser: argparse.ArgumentParser) -> None:
    """The shared options on every nested action parser (`pki init`, `client add`...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_common_arguments(sub, default=argparse.SUPPRESS)
                _add_common_to_actions(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; only `command`'s module is imported (None: every one's).
    The overview needs none: COMMANDS holds each command's help."""
    parser = argparse.ArgumentParser(prog="swand", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common_arguments(p, default=argparse.SUPPRESS)
        if command is None or name == command:
            # lazily on purpose: a command module imports what its command needs at the
            # top (`run` the whole daemon, `check` the parsers), and `swand check` must
            # not pay for, or fail on, the daemon's bindings
            module = importlib.import_module(f"swand.commands.{MODULES.get(name, name)}")
            module.add_arguments(p)
            _add_common_to_actions(p)
            p.set_defaults(_module=module)
    return parser


def command_of(argv: list[str]) -> str:
    """The subcommand named in `argv`, past any shared options before it ("" if none)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in COMMON_VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else ""
    return ""


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser(command_of(argv)).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
