"""`swand import`: turn an ipsec.conf gateway into the swanctl folder swand runs.

    swand import [--ipsec-conf /etc/ipsec.conf] [--secrets /etc/ipsec.secrets]
                 [--ipsec-d /etc/ipsec.d] [--local-address ADDR ...] --out DIR [--check]

Writes DIR/swanctl.conf (each setting with a comment naming its source file:line), the
credentials (x509/, x509ca/, private/ ... keys 0600), DIR/swand.toml (the fragment for
what ipsec.conf did through _updown) and DIR/import-report.txt, and prints the report.
The folder is built next to DIR and renamed into place: written whole or not at all; an
error writes nothing. Exit 0 when everything carried over, 1 when something needs a
person (a `todo` or `error` line), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509

from swand.adapters.pki_files import dn_string
from swand.core.importer import (
    IPSEC_D_FOLDERS,
    ImportResult,
    ReportLine,
    is_address,
    render_swanctl,
    render_toml,
    translate,
)
from swand.core.ipsecconf import (
    ImportErrors,
    ImportSyntaxError,
    SecretEntry,
    parse_ipsec_conf,
    parse_ipsec_secrets,
)
from swand.core.settings import Origin

DEFAULT_CONF = "/etc/ipsec.conf"
DEFAULT_SECRETS = "/etc/ipsec.secrets"
DEFAULT_IPSEC_D = "/etc/ipsec.d"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ipsec-conf", default=DEFAULT_CONF, metavar="FILE",
                        help=f"ipsec.conf to import (default {DEFAULT_CONF})")
    parser.add_argument("--secrets", default=None, metavar="FILE",
                        help=f"ipsec.secrets (default {DEFAULT_SECRETS} if it exists)")
    parser.add_argument("--ipsec-d", default=None, metavar="DIR",
                        help=f"ipsec.d with certs/, cacerts/, private/ ... (default "
                        f"{DEFAULT_IPSEC_D})")
    parser.add_argument("--out", required=False, default=None, metavar="DIR",
                        help="the swanctl folder to write (must not exist or be empty)")
    parser.add_argument("--check", action="store_true",
                        help="only print the report, write nothing")
    parser.add_argument("--local-address", action="append", default=None, metavar="ADDR",
                        help="an address of the gateway the result is for (repeatable; "
                        "default: this host's addresses; 'none': unknown). A conn whose "
                        "right is one of them, and left not, gets left and right swapped, "
                        "as stroke does")


def _ipsec_d_files(ipsec_d: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for folder in IPSEC_D_FOLDERS:
        try:
            names = sorted(os.listdir(os.path.join(ipsec_d, folder)))
        except OSError:
            continue
        out[folder] = [n for n in names if os.path.isfile(os.path.join(ipsec_d, folder, n))]
    return out


def ca_subjects(ipsec_d: str) -> dict[str, str]:
    """Subject (as strongSwan prints it) -> path of each certificate in ipsec.d/cacerts
    that parses (PEM or DER); the others are still copied, just not found by subject."""

    out: dict[str, str] = {}
    folder = os.path.join(ipsec_d, "cacerts")
    for name in _ipsec_d_files(ipsec_d).get("cacerts", []):
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                data = f.read(1024 * 1024)
            cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                    else x509.load_der_x509_certificate(data))
        except (OSError, ValueError):
            continue
        out.setdefault(dn_string(cert.subject), path)
    return out


def host_addresses() -> list[str] | None:
    """This host's addresses (`ip -j addr`), None when they cannot be read."""
    try:
        proc = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                              timeout=10, check=True)
        return [a["local"] for link in json.loads(proc.stdout)
                for a in link.get("addr_info", []) if "local" in a]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None


def run_import(conf_path: str, secrets_path: str | None, ipsec_d: str | None,
               local_addresses: list[str] | None = None
               ) -> tuple[ImportResult | None, list[ReportLine]]:
    """Parse and translate; (result, report) or (None, error lines). Checks that every
    credential file to copy exists (a missing one is an error naming the line).
    `local_addresses`: the gateway's addresses for stroke's left/right swap (None:
    unknown, left is this host)."""
    ipsec_d = ipsec_d if ipsec_d is not None else (
        os.path.join(os.path.dirname(os.path.abspath(conf_path)), "ipsec.d")
        if conf_path != DEFAULT_CONF else DEFAULT_IPSEC_D)
    try:
        conf = parse_ipsec_conf(conf_path)
    except ImportErrors as e:
        return None, [ReportLine("error", p.origin, p.message) for p in e.problems]
    except ImportSyntaxError as e:
        return None, [ReportLine("error", e.origin, e.message)]
    entries: list[SecretEntry] = []
    if secrets_path is None:
        candidate = DEFAULT_SECRETS if conf_path == DEFAULT_CONF else os.path.join(
            os.path.dirname(os.path.abspath(conf_path)), "ipsec.secrets")
        secrets_path = candidate if os.path.exists(candidate) else None
    if secrets_path is not None:
        try:
            entries, _ = parse_ipsec_secrets(secrets_path)
        except ImportSyntaxError as e:
            return None, [ReportLine("error", e.origin, e.message)]
    result = translate(conf, entries, ipsec_d, _ipsec_d_files(ipsec_d), ca_subjects(ipsec_d),
                       local_addresses)
    for copy in result.copies:
        if not os.path.isfile(copy.source):
            result.report.append(ReportLine(
                "error", copy.origin or Origin(copy.source, 0),
                f"{copy.source}: no such file (needed for {copy.folder}/{copy.name})"))
    return result, result.report


def write_folder(result: ImportResult, out: Path, header: str) -> None:
    """Build the folder beside `out` and rename it into place (whole or not at all)."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        conf = tmp / "swanctl.conf"
        mode = 0o600 if result.has_secrets else 0o644
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(render_swanctl(result.tree, header))
        for folder in sorted({c.folder for c in result.copies}):
            (tmp / folder).mkdir(mode=0o700 if folder in ("private", "pkcs12") else 0o755)
        for copy in result.copies:
            target = tmp / copy.folder / copy.name
            with open(copy.source, "rb") as src:
                data = src.read()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600 if copy.key else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        if result.toml:
            (tmp / "swand.toml").write_text(render_toml(result.toml))
        (tmp / "import-report.txt").write_text(
            "\n".join(str(line) for line in result.report) + "\n")
        for path in [tmp, *tmp.rglob("*")]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def summary(report: list[ReportLine]) -> str:
    counts = {level: sum(1 for r in report if r.level == level)
              for level in ("mapped", "note", "todo", "error")}
    return ", ".join(f"{n} {level}" for level, n in counts.items())


def run(args: argparse.Namespace) -> int:
    if not args.check and not args.out:
        print("swand import: --out DIR is required (or --check)", file=sys.stderr)
        return 2
    local: list[str] | None
    if args.local_address is None:
        local = host_addresses()
    elif args.local_address == ["none"]:
        local = None
    else:
        local = [a.strip() for given in args.local_address for a in given.split(",")
                 if a.strip()]
        bad = [a for a in local if not is_address(a)]
        if bad:
            print(f"swand import: --local-address {bad[0]}: not an IP address",
                  file=sys.stderr)
            return 2
    result, report = run_import(args.ipsec_conf, args.secrets, args.ipsec_d, local)
    for line in report:
        print(line)
    failed = result is None or any(r.level == "error" for r in report)
    print(f"swand import: {summary(report)}", file=sys.stderr)
    if failed:
        print("swand import: not imported (errors above); nothing written", file=sys.stderr)
        return 1
    assert result is not None
    if not args.check:
        header = (f"swanctl.conf written by `swand import` from {args.ipsec_conf}.\n"
                  "Each setting names the ipsec.conf / ipsec.secrets line it came from;\n"
                  "import-report.txt says what was not carried over.")
        try:
            write_folder(result, Path(args.out), header)
        except OSError as e:
            print(f"swand import: {e}; nothing written", file=sys.stderr)
            return 1
        print(f"swand import: wrote {args.out}", file=sys.stderr)
    return 1 if result.needs_person else 0
