"""`swand check`: validate swand.toml and swanctl.conf without changing anything.

Reads the files, probes the running system read-only (its addresses; with swand's
firewall off also `ip_forward` and the firewall rules, via `iptables-save` /
`nft list ruleset`; which plugins charon loaded, via VICI `stats`), and prints the
findings of `swand.core.checks` and `swand.core.plugins`. Exit status: 0 with no errors
(warnings are printed either way), 1 with errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from swand.adapters.vici import ViciError, ViciSession
from swand.config import ConfigError, SwandConfig, load_config
from swand.core import checks, plugins
from swand.core.checks import CheckInput, CredentialFile, Finding, SystemFacts
from swand.core.fleet import check_fleet_pools, gateway_pools
from swand.core.settings import Section, SettingsError, parse_file
from swand.core.swanctl import referenced_files, translate
from swand.runtime.loader import read_credentials

CERT_FOLDERS = ("x509",)
CA_FOLDERS = ("x509ca",)
KEY_FOLDERS = ("private", "rsa", "ecdsa", "pkcs8", "pkcs12")
#: where `swand client add` keeps the client certificates it issued
CLIENT_FOLDERS = ("swand-clients",)
CRL_FOLDERS = ("x509crl",)
PROBE_TIMEOUT = 10.0
#: seconds to wait for charon's `stats` (a charon that does not answer is reported)
CHARON_TIMEOUT = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the findings as one JSON document")
    parser.add_argument("--no-system", action="store_true",
                        help="do not probe this machine (addresses, ip_forward, firewall "
                        "rules): check a configuration meant for another host")
    parser.add_argument("--fleet", metavar="FILE", nargs="+", default=None,
                        help="the other gateways' swanctl.conf files: warn when pools "
                        "double-lease across the fleet (default: [fleet] peers)")


# --- reading (I/O lives here, the checks are pure) --------------------------------------

class FolderUnreadable(Exception):
    """A credential folder or file exists but cannot be read (not root?)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read_folder(swanctl_dir: Path, folder: str) -> tuple[CredentialFile, ...]:
    """The regular files of one credential folder, with their permission bits."""
    base = swanctl_dir / folder
    out = []
    try:
        names = sorted(os.listdir(base))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError as exc:
        raise FolderUnreadable(base, exc.strerror or str(exc)) from None
    for name in names:
        path = base / name
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            data = path.read_bytes()
        except PermissionError as exc:
            raise FolderUnreadable(path, exc.strerror or str(exc)) from None
        except OSError:
            continue
        out.append(CredentialFile(f"{folder}/{name}", data, stat.S_IMODE(st.st_mode)))
    return tuple(out)


def translation_findings(tree: Section, swanctl_dir: Path) -> list[Finding]:
    """The loader's translation problems (a named file missing, an undecryptable key...),
    through the same code `swand apply` and `swand run` use."""
    _, errors = translate(tree, read_credentials(str(swanctl_dir), tree))
    out = []
    for err in errors:
        file, line = checks.parse_where(err.where) if err.where else (str(swanctl_dir), 0)
        out.append(Finding(file, line, "error", "load", f"{err.item}: {err.message}",
                           "fix the file or the credential it names"))
    return out


def _run(argv: list[str]) -> str | None:
    """Output of a read-only probe, or None when it cannot run here."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def probe_addresses() -> tuple[checks.IPInterface, ...] | None:
    """This machine's addresses (`ip -j address`), read-only."""
    out = _run(["ip", "-j", "address", "show"])
    if out is None:
        return None
    try:
        links = json.loads(out)
    except ValueError:
        return None
    found = []
    for link in links:
        for a in link.get("addr_info", ()):
            with contextlib.suppress(KeyError, ValueError):
                found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    return tuple(found)


def probe_ip_forward() -> bool | None:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        return None


def probe_rulesets() -> tuple[str, ...] | None:
    """The firewall as text, from every back end that answers (list/save only)."""
    texts = [t for t in (
        _run(["iptables-save"]),
        _run(["iptables-legacy-save"]),
        _run(["nft", "list", "ruleset"]),
    ) if t is not None]
    return tuple(texts) if texts else None


def probe_charon_plugins(uri: str) -> tuple[list[str] | None, str]:
    """The plugins charon reports as loaded (VICI `stats`), or None and why not."""

    async def ask() -> list[str]:
        session = await ViciSession.connect(uri, timeout=CHARON_TIMEOUT)
        try:
            stats = await session.request("stats", timeout=CHARON_TIMEOUT)
        finally:
            await session.close()
        plugins = stats.get("plugins", [])
        return [p.decode(errors="replace") if isinstance(p, bytes) else str(p)
                for p in plugins] if isinstance(plugins, list) else []

    try:
        return asyncio.run(ask()), ""
    except (ViciError, OSError, TimeoutError) as exc:
        return None, str(exc) or type(exc).__name__


def installed_plugins(folder: str = plugins.PLUGIN_DIR) -> set[str] | None:
    """Plugins whose file is in charon's plugin folder (None: folder unreadable)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    return {n[len("libstrongswan-"):-3] for n in names
            if n.startswith("libstrongswan-") and n.endswith(".so")}


def debian_release(os_release: str = "/etc/os-release") -> str:
    """VERSION_CODENAME of this machine (bookworm when unknown)."""
    with contextlib.suppress(OSError):
        for line in Path(os_release).read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME" and value.strip('"') in plugins.DEBIAN_PACKAGES:
                return value.strip('"')
    return plugins.DEFAULT_RELEASE


def plugin_findings(cfg: SwandConfig, tree: Section, conf: Path,
                    files: tuple[CredentialFile, ...]) -> list[Finding]:
    """What the configuration needs that charon has not loaded; a charon that does not
    answer is said in one warning and the check skipped (the rest of `check` runs)."""
    loaded, why = probe_charon_plugins(cfg.charon.vici)
    if loaded is None:
        return [Finding(cfg.charon.vici, 0, "warning", "charon-unreachable",
                        f"charon does not answer ({why}): its plugins were not checked",
                        "start charon (systemctl start strongswan) or pass --vici URI; "
                        "--no-system skips this probe")]
    required = plugins.needs_of(tree, files, metrics=bool(cfg.metrics.listen))
    return plugins.missing_plugin_findings(
        required, loaded, conf_file=str(conf), installed=installed_plugins(),
        release=debian_release())


def _read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def probe_ipv6(cfg: SwandConfig) -> dict[str, object]:
    """IPv6 facts for `checks.check_ipv6`: forwarding, the IPv6 egress (as swand would
    pick it), its addresses, its accept_ra and whether its default route came from an
    RA (`ip -j -6 route/address`, /proc/sys; read-only)."""
    facts: dict[str, object] = {}
    forwarding = _read_sysctl("net/ipv6/conf/all/forwarding")
    if forwarding is not None:
        facts["ipv6_forwarding"] = forwarding == "1"
    routes: list[dict[str, object]] = []
    out = _run(["ip", "-j", "-6", "route", "show", "default"])
    with contextlib.suppress(ValueError, TypeError):
        routes = [r for r in json.loads(out or "[]") if isinstance(r, dict) and r.get("dev")]
    routes.sort(key=lambda r: int(str(r.get("metric") or 0)))
    best = routes[0] if routes else None
    egress = cfg.ipv6.egress if cfg.ipv6.egress != "auto" else (
        str(best["dev"]) if best else None)
    if egress is None:
        return facts
    facts["egress6"] = egress
    facts["egress6_from_ra"] = any(r.get("dev") == egress and r.get("protocol") == "ra"
                                   for r in routes)
    facts["egress6_accept_ra"] = _read_sysctl(f"net/ipv6/conf/{egress}/accept_ra")
    addrs = _run(["ip", "-j", "-6", "address", "show", "dev", egress])
    found = []
    with contextlib.suppress(ValueError, TypeError):
        for link in json.loads(addrs or "[]"):
            for a in link.get("addr_info", ()):
                with contextlib.suppress(KeyError, ValueError):
                    found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    facts["egress6_addresses"] = tuple(found)
    return facts


def probe_system(firewall_enabled: bool, cfg: SwandConfig | None = None) -> SystemFacts:
    v6 = probe_ipv6(cfg or SwandConfig())
    if firewall_enabled:
        return SystemFacts(addresses=probe_addresses(), **v6)  # type: ignore[arg-type]
    return SystemFacts(addresses=probe_addresses(), ip_forward=probe_ip_forward(),
                       rulesets=probe_rulesets(), **v6)  # type: ignore[arg-type]


# --- the command --------------------------------------------------------------------------

def collect(args: argparse.Namespace) -> list[Finding]:
    """Every finding for the configuration named by the arguments."""
    findings: list[Finding] = []
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        file, _, message = str(exc).partition(": ")
        findings.append(Finding(file, 0, "error", "config", message or str(exc),
                                "fix swand.toml (see etc/swand/swand.toml for every key)"))
        cfg = SwandConfig()
    cfg = cfg.with_overrides(vici=args.vici, swanctl_dir=args.swanctl_dir)
    swanctl_dir = Path(cfg.swanctl.dir)
    conf = swanctl_dir / "swanctl.conf"

    try:
        tree = parse_file(conf)
    except SettingsError as exc:
        fix = ("fix the syntax at that line" if exc.origin.line > 0 else
               "check the path and its permissions (or pass --swanctl-dir)")
        findings.append(Finding(exc.origin.file, exc.origin.line, "error", "syntax",
                                exc.message, fix))
        return findings
    except OSError as exc:
        findings.append(Finding(str(conf), 0, "error", "syntax",
                                exc.strerror or str(exc), "create it or pass --swanctl-dir"))
        return findings

    unreadable: list[FolderUnreadable] = []

    def outside_files(tree: Section) -> tuple[CredentialFile, ...]:
        """Certificates named by absolute path (`certs = /etc/ssl/gw.pem`)."""
        out = []
        for path in referenced_files(tree, str(swanctl_dir)):
            if Path(path).is_relative_to(swanctl_dir):
                continue
            with contextlib.suppress(OSError):
                out.append(CredentialFile(path, Path(path).read_bytes()))
        return tuple(out)

    def read(folders: tuple[str, ...]) -> tuple[CredentialFile, ...]:
        out: list[CredentialFile] = []
        for d in folders:
            try:
                out += read_folder(swanctl_dir, d)
            except FolderUnreadable as exc:
                unreadable.append(exc)
        return tuple(out)

    inp = CheckInput(
        tree=tree, conf_file=str(conf), certs=read(CERT_FOLDERS) + outside_files(tree),
        cas=read(CA_FOLDERS),
        keys=read(KEY_FOLDERS), clients=read(CLIENT_FOLDERS), windows=cfg.check.windows,
        keepalive=cfg.keepalive.conns, swand_toml=cfg.source,
        ipv6_mode=cfg.ipv6.mode,
        sets_forwarding=cfg.firewall.enabled and cfg.sysctl.ip_forward,
        sets_accept_ra=cfg.sysctl.accept_ra, writes_kernel=cfg.firewall.enabled,
    )
    if unreadable:
        # without the folders the credential checks would only report false problems
        findings += [Finding(str(u.path), 0, "error", "unreadable",
                             f"cannot read it ({u.reason}); credential checks skipped",
                             "run swand check as root (it reads private keys)")
                     for u in unreadable]
        return findings
    loaded = translation_findings(tree, swanctl_dir)
    facts = None if args.no_system else probe_system(cfg.firewall.enabled, cfg)
    found = checks.run_checks(inp, facts, cfg.firewall.enabled)
    if not args.no_system:
        found += plugin_findings(cfg, tree, conf, inp.certs + inp.cas + inp.keys +
                                 read(CRL_FOLDERS))
    # the loader already names a certificate that is missing: do not say it twice
    loader_spots = {(f.file, f.line) for f in loaded}
    found = [f for f in found if not (f.code == "cert-missing" and (f.file, f.line)
                                      in loader_spots)]
    findings += loaded + found + fleet_findings(tree, str(conf), cfg, args)
    # key paths are relative to the swanctl folder: make them absolute for the reader
    return [
        Finding(str(swanctl_dir / f.file), f.line, f.severity, f.code, f.message, f.fix)
        if f.code in ("key-mode", "plugin-missing") and not Path(f.file).is_absolute()
        else f
        for f in findings
    ]


def fleet_findings(tree: Section, conf: str, cfg: SwandConfig, args: argparse.Namespace
                   ) -> list[Finding]:
    """Pools that double-lease with the other gateways' (``--fleet`` or ``[fleet]
    peers``); a peer file that cannot be read is a warning naming it."""
    paths = args.fleet if getattr(args, "fleet", None) else list(cfg.fleet.peers)
    peers = []
    out: list[Finding] = []
    for path in paths:
        try:
            peers.append(gateway_pools(path, parse_file(path)))
        except SettingsError as exc:
            out.append(Finding(exc.origin.file, exc.origin.line, "warning", "fleet-peer",
                               f"fleet peer not checked: {exc.message}",
                               "fix the file or [fleet] peers"))
        except OSError as exc:
            out.append(Finding(path, 0, "warning", "fleet-peer",
                               f"fleet peer not checked: {exc.strerror or exc}",
                               "fix the path in [fleet] peers or --fleet"))
    return out + check_fleet_pools(gateway_pools(conf, tree), peers)


def render_text(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.where}: {f.severity}: {f.message}")
        lines.append(f"    fix: {f.fix}")
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    lines.append(f"{errors} error{'s' if errors != 1 else ''}, "
                 f"{warnings} warning{'s' if warnings != 1 else ''}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    findings = collect(args)
    errors = sum(1 for f in findings if f.severity == "error")
    if args.json:
        json.dump({
            "errors": errors, "warnings": len(findings) - errors,
            "findings": [f.as_dict() for f in findings],
        }, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_text(findings))
    return 1 if errors else 0
