"""The command line: one module per subcommand, imported only when that command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from swand.cli import COMMANDS, MODULES, build_parser, command_of, parse_args


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


#: every command and action, with the arguments it requires
INVOCATIONS: list[list[str]] = [
    ["run"], ["apply"], ["check"], ["status"], ["flush"], ["demo"],
    ["pki", "init", "--dn", "CN=x"], ["pki", "gateway", "--id", "vpn.example.org"],
    ["pki", "crl"],
    ["client", "add", "laptop"], ["client", "revoke", "laptop"], ["client", "list"],
    ["import", "--check"],
]
SHARED = ["-c", "/y/swand.toml", "--vici", "unix:///x", "--swanctl-dir", "/z"]


def test_every_command_and_action_is_covered() -> None:
    assert {i[0] for i in INVOCATIONS} == set(COMMANDS)


@pytest.mark.parametrize("where", ["before", "after", "split"])
@pytest.mark.parametrize("invocation", INVOCATIONS, ids=" ".join)
def test_shared_options_before_and_after_the_command(invocation: list[str], where: str) -> None:
    """`swand -c F pki init ...` and `swand pki init ... -c F` mean the same (the README
    says every command takes -c)."""
    argv = {
        "before": [*SHARED, *invocation],
        "after": [*invocation, *SHARED],
        "split": [*SHARED[:2], *invocation, *SHARED[2:]],
    }[where]
    args = parse_args(argv)
    assert (args.config, args.vici, args.swanctl_dir) == ("/y/swand.toml", "unix:///x", "/z")
    assert args._module.__name__ == \
        f"swand.commands.{MODULES.get(invocation[0], invocation[0])}"


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=" ".join)
def test_shared_options_default_to_none(invocation: list[str]) -> None:
    args = parse_args(invocation)
    assert (args.config, args.vici, args.swanctl_dir) == (None, None, None)


def test_the_command_is_found_behind_shared_options() -> None:
    assert command_of(["-c", "check", "status"]) == "status"  # a file named "check"
    assert command_of(["--config=/y", "--vici", "unix:///x", "pki", "init"]) == "pki"
    assert command_of(["--help"]) == ""


def test_the_overview_needs_no_command_module(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser("").parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("where", ["before", "after"])
def test_pki_init_uses_the_swanctl_dir_of_the_config_given_after_it(
        tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: `swand pki init -c swand.toml --dn ...` exited with
    "unrecognized arguments"."""
    from swand.cli import main

    toml = tmp_path / "swand.toml"
    toml.write_text(f'[swanctl]\ndir = "{tmp_path / "swanctl"}"\n')
    init = ["pki", "init", "--dn", "CN=test CA"]
    argv = [*init, "-c", str(toml)] if where == "after" else ["-c", str(toml), *init]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "swanctl/x509ca/ca.pem").is_file()
