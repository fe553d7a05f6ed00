"""The command line: one module per subcommand, imported only when that command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from swand.cli import COMMANDS, build_parser


def test_only_the_chosen_commands_module_is_imported() -> None:
    """`swand status` (and `swand run`'s start-up) must not pay for importing the
    loader, the checks or the PKI code of commands that do not run."""
    code = ("import sys\n"
            "from swand.cli import main\n"
            "try:\n"
            "    main(['status', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('swand.commands.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=30)
    assert proc.stdout.splitlines()[-1] == "['swand.commands.status']"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_parses_its_common_options(name: str) -> None:
    action = {"pki": ["crl"], "client": ["list"]}.get(name, [])  # a required ACTION
    args = build_parser(name).parse_args([name, "--vici", "unix:///x", "-c", "/y", *action])
    assert args.vici == "unix:///x" and args.config == "/y"
    assert args._module.__name__ == f"swand.commands.{name}"


def test_the_overview_needs_no_command_module(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser("").parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
