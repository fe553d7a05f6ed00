"""swand.toml: the daemon's own settings, validated into frozen dataclasses.

Every key is optional; an unknown section or key is an error naming it, because a typo in
a security daemon's config must never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swand.core.routes import protocol_problem, table_problem

DEFAULT_CONFIG_PATH = Path("/etc/swand/swand.toml")
DEFAULT_VICI_URI = "unix:///var/run/charon.vici"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9817"


class ConfigError(Exception):
    """A swand.toml that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class CharonSettings:
    vici: str = DEFAULT_VICI_URI
    #: seconds between the periodic checks that repair what others unloaded
    interval: float = 10.0


@dataclass(frozen=True)
class SwanctlSettings:
    dir: str = "/etc/swanctl"
    #: removing a connection from the file also terminates its SAs
    terminate_removed: bool = True


@dataclass(frozen=True)
class FirewallSettings:
    enabled: bool = True
    backend: str = "auto"  # auto | legacy | nftables
    mode: str = "auto"  # auto | policy | interface
    egress: str = "auto"
    mss: int = 1360
    nat: bool = True
    nat66: bool = False
    forward_rules: bool = True
    interval: float = 10.0


@dataclass(frozen=True)
class SysctlSettings:
    ip_forward: bool = True
    ip_no_pmtu_disc: bool = True
    #: keep the IPv6 default route learned from router advertisements once forwarding is
    #: on (accept_ra = 2 on the IPv6 egress where it was 1)
    accept_ra: bool = True


@dataclass(frozen=True)
class Ipv6Settings:
    """How road warriors' IPv6 addresses reach the internet (see README, "IPv6")."""

    #: routed: NDP proxy per leased address on the egress (the provider's on-link prefix);
    #: nat66: masquerade the (ULA) pools, the same as [firewall] nat66 = true;
    #: none: neither (the provider routes the pool's prefix to this gateway)
    mode: str = "none"  # none | routed | nat66
    #: the interface IPv6 leaves by ("auto": the IPv6 default route's, else [firewall] egress)
    egress: str = "auto"


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = DEFAULT_METRICS_LISTEN
    per_peer: bool = False
    #: the last SA down per connection, kept for `swand status` ("" = not kept)
    state_file: str = "/run/swand/last-downs.json"


@dataclass(frozen=True)
class KeepaliveSettings:
    conns: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSettings:
    format: str = "auto"  # auto | json | console
    level: str = "info"


@dataclass(frozen=True)
class CheckSettings:
    #: does this gateway serve Windows' built-in IKEv2 client? auto: road-warrior
    #: connections (with pools) using certificate or EAP auth are assumed to (warnings);
    #: yes: every road-warrior connection must suit Windows (errors); no: skip those checks
    windows: str = "auto"  # auto | yes | no


@dataclass(frozen=True)
class RoutesSettings:
    """A kernel route per leased virtual IP, for a routing daemon to redistribute
    (`swand.core.routes`); off unless the gateway is one of a fleet."""

    enabled: bool = False
    #: the routing table (254 = main; not 0, 220 = charon's, 253, 255)
    table: int = 254
    #: the routing protocol number marking swand's routes (not 0-4, nor a known daemon's)
    protocol: int = 157
    metric: int = 0
    #: "auto": libipsec's ipsec0, or with kernel ESP the egress interface; else a name
    device: str = "auto"
    #: seconds between full passes that repair drift (events trigger passes in between)
    interval: float = 10.0


@dataclass(frozen=True)
class FleetSettings:
    #: this gateway's name in metrics (the `gateway` label); "" = the host name
    gateway: str = ""
    #: the other gateways' swanctl.conf files, for `swand check`'s pool overlap warnings
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SwandConfig:
    charon: CharonSettings = field(default_factory=CharonSettings)
    swanctl: SwanctlSettings = field(default_factory=SwanctlSettings)
    firewall: FirewallSettings = field(default_factory=FirewallSettings)
    sysctl: SysctlSettings = field(default_factory=SysctlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    ipv6: Ipv6Settings = field(default_factory=Ipv6Settings)
    log: LogSettings = field(default_factory=LogSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    routes: RoutesSettings = field(default_factory=RoutesSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    #: where the settings came from, for messages ("<defaults>" when no file)
    source: str = "<defaults>"

    def with_overrides(
        self, *, vici: str | None = None, swanctl_dir: str | None = None,
        firewall_enabled: bool | None = None,
    ) -> SwandConfig:
        """Apply command-line overrides (--vici, --swanctl-dir, --no-firewall)."""
        cfg = self
        if vici is not None:
            cfg = dataclasses.replace(cfg, charon=dataclasses.replace(cfg.charon, vici=vici))
        if swanctl_dir is not None:
            cfg = dataclasses.replace(
                cfg, swanctl=dataclasses.replace(cfg.swanctl, dir=swanctl_dir)
            )
        if firewall_enabled is not None:
            cfg = dataclasses.replace(
                cfg, firewall=dataclasses.replace(cfg.firewall, enabled=firewall_enabled)
            )
        return cfg


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
    for f in dataclasses.fields(SwandConfig)
    if f.name != "source"
}

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("firewall", "backend"): ("auto", "legacy", "nftables"),
    ("firewall", "mode"): ("auto", "policy", "interface"),
    ("log", "format"): ("auto", "json", "console"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("check", "windows"): ("auto", "yes", "no"),
    ("ipv6", "mode"): ("none", "routed", "nat66"),
}


def _coerce(where: str, section: str, key: str, expected: Any, value: Any) -> Any:
    """Check one value against the dataclass field's declared type."""
    kind = str(expected)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: [{section}] {key} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: [{section}] {key} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(
                f"{where}: [{section}] {key} must be a positive number, got {value!r}"
            )
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: [{section}] {key} must be a string, got {value!r}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(
                f"{where}: [{section}] {key} must be one of {', '.join(choices)}, got {value!r}"
            )
        return value
    if kind.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"{where}: [{section}] {key} must be a list of strings, got {value!r}"
            )
        return tuple(value)
    raise ConfigError(f"{where}: [{section}] {key}: unsupported type {kind}")  # pragma: no cover


def parse_config(data: dict[str, Any], where: str = "<string>") -> SwandConfig:
    """Validate a decoded TOML document into a SwandConfig."""
    sections: dict[str, Any] = {}
    for name, body in data.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            raise ConfigError(
                f"{where}: unknown section [{name}] (known: {', '.join(sorted(_SECTIONS))})"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in body.items():
            f = fields.get(key)
            if f is None:
                raise ConfigError(
                    f"{where}: unknown key {key!r} in [{name}] "
                    f"(known: {', '.join(sorted(fields))})"
                )
            values[key] = _coerce(where, name, key, f.type, value)
        sections[name] = cls(**values)
    cfg = SwandConfig(**sections, source=where)
    mss = cfg.firewall.mss
    if mss != 0 and not 536 <= mss <= 1460:
        raise ConfigError(f"{where}: [firewall] mss must be 0 (off) or 536..1460, got {mss}")
    _check_routes(cfg.routes, where)
    return _ipv6_mode(cfg, where)


def _ipv6_mode(cfg: SwandConfig, where: str) -> SwandConfig:
    """`[ipv6] mode = "nat66"` and the older `[firewall] nat66 = true` say the same thing:
    make both say it; routed addresses must never be masqueraded too."""
    if cfg.firewall.nat66 and cfg.ipv6.mode == "routed":
        raise ConfigError(
            f"{where}: [ipv6] mode = \"routed\" contradicts [firewall] nat66 = true (pick "
            "one: routed hands out the provider's addresses, nat66 masquerades a ULA pool)"
        )
    if cfg.firewall.nat66 and cfg.ipv6.mode == "none":
        return dataclasses.replace(cfg, ipv6=dataclasses.replace(cfg.ipv6, mode="nat66"))
    if cfg.ipv6.mode == "nat66" and not cfg.firewall.nat66:
        return dataclasses.replace(
            cfg, firewall=dataclasses.replace(cfg.firewall, nat66=True))
    return cfg


def _check_routes(routes: RoutesSettings, where: str) -> None:
    for key, problem in (("protocol", protocol_problem(routes.protocol)),
                         ("table", table_problem(routes.table))):
        if problem:
            raise ConfigError(f"{where}: [routes] {key} {problem}")
    if not 0 <= routes.metric < 2**32:
        raise ConfigError(f"{where}: [routes] metric must be 0..4294967295, got {routes.metric}")
    if not routes.device:
        raise ConfigError(f"{where}: [routes] device must be \"auto\" or an interface name")


def gateway_name(cfg: SwandConfig) -> str:
    """This gateway's name in its fleet: ``[fleet] gateway``, else the host name."""
    return cfg.fleet.gateway or socket.gethostname()


def load_config(path: str | Path | None) -> SwandConfig:
    """Read swand.toml; a missing *default* file means all defaults, a missing named one is
    an error."""
    explicit = path is not None
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if explicit and p != DEFAULT_CONFIG_PATH:
            raise ConfigError(f"{p}: no such file") from None
        return SwandConfig()
    except PermissionError:
        raise ConfigError(f"{p}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return parse_config(data, str(p))
