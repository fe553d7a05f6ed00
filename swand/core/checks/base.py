"""What every check shares: findings, the inputs, and the swanctl.conf helpers."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from cryptography.x509.oid import ObjectIdentifier

from swand.core.settings import Origin, Section
from swand.core.swanctl import is_road_warrior as _is_road_warrior
from swand.core.swanctl import split_list

Severity = Literal["error", "warning"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: RFC 4945 ikeIntermediate; older macOS/iOS clients want it on the gateway certificate
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: where, how bad, what, and the one-line fix."""

    file: str
    line: int
    severity: Severity
    code: str
    message: str
    fix: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line > 0 else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message} (fix: {self.fix})"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file, "line": self.line, "severity": self.severity,
            "code": self.code, "message": self.message, "fix": self.fix,
        }


def finding_at(
    origin: Origin | None, severity: Severity, code: str, message: str, fix: str,
    default_file: str = "swanctl.conf",
) -> Finding:
    if origin is None:
        return Finding(default_file, 0, severity, code, message, fix)
    return Finding(origin.file, origin.line, severity, code, message, fix)


def parse_where(where: str) -> tuple[str, int]:
    """`file:line` (as SettingsError and LoadError print it) back into its parts."""
    file, sep, line = where.rpartition(":")
    if sep and line.isdigit():
        return file, int(line)
    return where, 0


# --- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialFile:
    """A file of a credential folder: `path` relative to the swanctl folder
    (`x509/gateway.pem`), its bytes and its permission bits."""

    path: str
    data: bytes = field(repr=False)
    mode: int = 0o600


@dataclass(frozen=True)
class CheckInput:
    """Everything the checks look at, read by the command layer."""

    tree: Section
    #: swanctl.conf's path, for findings about the whole file
    conf_file: str
    #: x509/ (own and peer certificates), x509ca/ (trusted CAs)
    certs: tuple[CredentialFile, ...] = ()
    cas: tuple[CredentialFile, ...] = ()
    #: private/, rsa/, ecdsa/, pkcs8/, pkcs12/ files
    keys: tuple[CredentialFile, ...] = ()
    #: client certificates `swand client add` issued (swand-clients/, not loaded by charon)
    clients: tuple[CredentialFile, ...] = ()
    #: swand.toml [check] windows
    windows: str = "auto"
    #: swand.toml [keepalive] conns, and where they were set
    keepalive: tuple[str, ...] = ()
    swand_toml: str = "swand.toml"
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: swand.toml [ipv6] mode (none | routed | nat66)
    ipv6_mode: str = "none"
    #: swand keeps IPv6 forwarding on for IPv6 pools ([firewall] enabled, [sysctl] ip_forward)
    sets_forwarding: bool = True
    #: swand turns accept_ra 1 into 2 on the IPv6 egress ([sysctl] accept_ra too)
    sets_accept_ra: bool = True
    #: [firewall] enabled: swand writes kernel state at all (NDP proxies included)
    writes_kernel: bool = True


@dataclass(frozen=True)
class SystemFacts:
    """What the running system looks like (probed read-only by the command layer). None
    means "could not find out" and produces no finding."""

    addresses: tuple[IPInterface, ...] | None = None
    ip_forward: bool | None = None
    #: text of `iptables-save`, `iptables-legacy-save`, `nft list ruleset` (those that ran)
    rulesets: tuple[str, ...] | None = None
    #: net.ipv6.conf.all.forwarding
    ipv6_forwarding: bool | None = None
    #: the IPv6 egress (swand's choice: [ipv6] egress or the IPv6 default route's), its
    #: addresses with their prefixes, its accept_ra, and whether its default route came
    #: from a router advertisement
    egress6: str | None = None
    egress6_addresses: tuple[IPInterface, ...] | None = None
    egress6_accept_ra: str | None = None
    egress6_from_ra: bool | None = None


# --- the configuration, in the terms the checks need ------------------------------------

def _connections(tree: Section) -> list[Section]:
    conns = tree.sections.get("connections")
    return list(conns.sections.values()) if conns else []


def _rounds(conn: Section, side: str) -> list[Section]:
    """The `local*` / `remote*` authentication rounds of a connection."""
    return [s for name, s in conn.sections.items() if name.startswith(side)]


def _list(value: str | None) -> list[str]:
    """A swanctl.conf list value as swanctl's loader splits it (commas only; a space inside
    a token stays), so a check judges the list charon is sent."""
    return split_list(value) if value else []


def _remote_auths(conn: Section) -> list[str]:
    return [(r.get("auth") or "pubkey").lower() for r in _rounds(conn, "remote")] or ["pubkey"]


def _serves_windows(conn: Section, mode: str) -> Severity | None:
    """The severity of Windows findings for this connection, or None: not serving it."""
    if mode == "no" or not _is_road_warrior(conn):
        return None
    if mode == "yes":
        return "error"
    usable = any(a == "pubkey" or a.startswith("eap") for a in _remote_auths(conn))
    return "warning" if usable else None
