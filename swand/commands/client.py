"""`swand client add|revoke|list`: road-warrior clients and their ready-to-import profiles.

    swand client add alice [--platform windows,android,apple,linux] [--out DIR]
                           [--static-ip 10.8.0.2] [--password-file F] [--modern]
    swand client revoke alice
    swand client list

The gateway's address, identity and proposals come from its own swanctl.conf (the
road-warrior connection: the one with pools, pubkey clients and no specific remote id),
overridable with --gateway/--gateway-id/--conn/--ike/--esp. See docs/clients.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from swand.adapters.pki_files import (
    PkiError,
    SwanctlPki,
    check_client_name,
    common_name,
    dn_string,
    generate_password,
    issue_client,
    list_clients,
    pkcs12_bytes,
    read_crl,
    revoke_client,
    write_new,
)
from swand.adapters.vici import ViciError, ViciSession
from swand.config import ConfigError, load_config
from swand.core import profiles
from swand.core.settings import SettingsError, parse_file

PLATFORMS = ("windows", "android", "apple", "linux")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="issue a client certificate and its profiles")
    add.add_argument("name", help="client name (file names, CN, default identity)")
    add.add_argument("--dn", default=None,
                     help="subject DN (default: the CA's DN with CN = NAME)")
    add.add_argument("--san", default=None,
                     help="identity non-Windows clients send, as subjectAltName "
                     "(default NAME; an e-mail address or DNS name)")
    add.add_argument("--static-ip", default=None, metavar="ADDR",
                     help="pin the client to this virtual IP (writes conf.d/NAME.conf)")
    add.add_argument("--pin-by", choices=("dn", "san"), default="dn",
                     help="with --static-ip: the identity the pinned connection matches; "
                     "dn (default) serves Windows, Linux and Android, san serves Apple, "
                     "Linux and Android")
    add.add_argument("--platform", default=None,
                     help=f"comma-separated profiles to write (default {','.join(PLATFORMS)})")
    add.add_argument("--out", default=".", metavar="DIR", help="where profiles go (default .)")
    add.add_argument("--password-file", default=None, metavar="FILE",
                     help="p12 password from this file's first line (default: generate one "
                     "and print it once)")
    add.add_argument("--modern", action="store_true",
                     help="PKCS#12 with AES-256/PBKDF2-SHA256 instead of legacy 3DES/SHA-1 "
                     "(not for Apple: its profile keeps a legacy one)")
    add.add_argument("--curve", default=None, choices=("secp256r1", "secp384r1", "secp521r1"),
                     help="ECDSA curve (default: the one of the IKE DH group Windows uses)")
    add.add_argument("--rsa", action="store_true",
                     help="RSA 3072 key instead of ECDSA (for clients without ECDSA support)")
    add.add_argument("--days", type=int, default=825, help="validity (default 825)")
    add.add_argument("--encap", action="store_true",
                     help="Linux profile: force UDP encapsulation (encap = yes)")
    add_gateway_overrides(add)
    revoke = sub.add_parser("revoke", help="revoke a client: CRL, load it, end its SAs")
    revoke.add_argument("name")
    sub.add_parser("list", help="clients, serials, expiry, revoked or not").add_argument(
        "--json", action="store_true", help="machine-readable output")


def add_gateway_overrides(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gateway facts (default: read from swanctl.conf)")
    g.add_argument("--conn", default=None, help="the road-warrior connection's name")
    g.add_argument("--gateway", default=None, metavar="ADDR",
                   help="the address clients dial (default: the gateway's id)")
    g.add_argument("--gateway-id", default=None, metavar="ID",
                   help="the gateway's IKE identity (default: the connection's local id)")
    g.add_argument("--ike", default=None, metavar="PROPOSALS",
                   help="IKE proposals, comma-separated (default: the connection's)")
    g.add_argument("--esp", default=None, metavar="PROPOSALS",
                   help="ESP proposals, comma-separated (default: the child's)")


class ClientError(Exception):
    pass


def gateway_info(swanctl_dir: Path, args: argparse.Namespace) -> profiles.GatewayInfo:
    """The gateway's facts from `<dir>/swanctl.conf`, with the command line's overrides."""
    conf = swanctl_dir / "swanctl.conf"
    if conf.exists():
        root = parse_file(conf)
        gw = profiles.gateway_from_settings(
            root, conn_name=args.conn, address=args.gateway, identity=args.gateway_id,
        )
    elif args.gateway_id or args.gateway:
        ident = args.gateway_id or args.gateway
        gw = profiles.GatewayInfo(address=args.gateway or ident, identity=ident)
    else:
        raise ClientError(f"{conf}: no such file; pass --gateway-id (and --ike/--esp)")
    if args.ike:
        gw = dataclasses.replace(gw, ike_proposals=profiles.split_list(args.ike))
    if args.esp:
        gw = dataclasses.replace(gw, esp_proposals=profiles.split_list(args.esp))
    gw.ike  # noqa: B018 - validate overrides now
    gw.esp  # noqa: B018
    return gw


def includes_conf_d(swanctl_dir: Path) -> bool:
    """Whether the gateway's swanctl.conf includes conf.d/*.conf (Debian's default does)."""
    conf = swanctl_dir / "swanctl.conf"
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return False
    return any(
        re.fullmatch(r"\s*include\s+(\S*/)?conf\.d/\*(\.conf)?\s*(#.*)?", line)
        for line in text.splitlines()
    )


def _platforms(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in PLATFORMS]
    if unknown or not chosen:
        raise ClientError(
            f"--platform {text!r}: unknown {', '.join(unknown) or '(empty)'} "
            f"(one or more of {', '.join(PLATFORMS)})"
        )
    return chosen


def _read_password(path: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise ClientError(f"{path}: the first line (the password) is empty")
    return lines[0]


def cmd_add(args: argparse.Namespace, swanctl_dir: Path) -> int:
    name = check_client_name(args.name)
    platforms = _platforms(args.platform or ",".join(PLATFORMS))
    notes: list[str] = []
    if args.static_ip:
        # Windows sends only its DN, Apple only a SAN; one pinned connection serves one.
        cannot = "apple" if args.pin_by == "dn" else "windows"
        if cannot in platforms:
            if args.platform is not None:
                raise ClientError(
                    f"--static-ip with --pin-by {args.pin_by}: {cannot.capitalize()} cannot "
                    f"send the client's {'DN' if args.pin_by == 'dn' else 'subjectAltName'}; "
                    f"use --pin-by {'san' if args.pin_by == 'dn' else 'dn'} or drop {cannot}"
                )
            platforms = tuple(p for p in platforms if p != cannot)
            notes.append(f"note: no {cannot} profile: a client pinned by its "
                         f"{args.pin_by.upper()} cannot be {cannot} (see docs/clients.md)")
    pki = SwanctlPki(swanctl_dir)
    # Everything that can fail is checked before the first file is written.
    gw = gateway_info(swanctl_dir, args)
    if "windows" in platforms:
        profiles.windows_params(gw)
    if "apple" in platforms:
        profiles.apple_params(gw)
    if args.modern and "apple" in platforms:
        notes.append(f"warning: --modern: Apple devices import only legacy (3DES/SHA-1) "
                     f"PKCS#12; {name}.mobileconfig embeds a legacy one, {name}.p12 is modern")
    curve = args.curve or profiles.windows_curve_for(gw)
    out = Path(args.out)
    outputs = {
        "p12": out / f"{name}.p12",
        "windows": out / f"{name}.ps1",
        "android": out / f"{name}.sswan",
        "apple": out / f"{name}.mobileconfig",
        "linux": out / f"{name}.swanctl.conf",
        "keepalive": out / f"{name}.swand.toml",
    }
    wanted = {"p12", *platforms} | ({"keepalive"} if "linux" in platforms else set())
    for kind, path in outputs.items():
        if kind in wanted and path.exists():
            raise ClientError(f"{path}: exists; refusing to overwrite it")
    static_path = swanctl_dir / "conf.d" / f"{name}.conf"
    static_ip = None
    if args.static_ip:
        static_ip = profiles.check_static_ip(gw, args.static_ip)
        profiles.static_section(gw, name)  # a name the gateway already uses is refused
        if static_path.exists():
            raise ClientError(f"{static_path}: exists; refusing to overwrite it")
        if not includes_conf_d(swanctl_dir):
            notes.append(
                f"warning: {swanctl_dir / 'swanctl.conf'} does not `include conf.d/*.conf`; "
                f"add that line or {static_path.name} is never loaded"
            )
    password = _read_password(args.password_file) if args.password_file else None
    generated = password is None
    password = password or generate_password()
    pki.load_ca()  # a missing CA fails here, before anything is written

    issued = issue_client(pki, name, dn=args.dn, san=args.san, curve=curve, days=args.days,
                          use_rsa=args.rsa)
    p12 = pkcs12_bytes(issued, password, modern=args.modern)
    # Apple devices import only the legacy (3DES/SHA-1) PKCS#12 (strongSwan's Apple
    # interoperability notes): the mobileconfig embeds that one whatever --modern says.
    apple_p12 = pkcs12_bytes(issued, password, modern=False) if args.modern else p12

    client = profiles.ClientInfo(
        name=name, dn=issued.dn, san=issued.san, p12=p12,
        ca_der=issued.ca_cert.public_bytes(Encoding.DER),
        ca_common_name=common_name(issued.ca_cert.subject),
        key_type=issued.apple_key_type, static_ip=static_ip,
    )
    # A pinned client must send the identity its connection matches; strongSwan-based
    # clients (Linux, Android) can send either form.
    pinned_id = issued.dn if args.pin_by == "dn" else issued.san
    strongswan_id = pinned_id if static_ip else issued.san
    # Render everything in memory, then write; a failed write undoes the whole client.
    files: list[tuple[Path, bytes, int, str]] = [(outputs["p12"], p12, 0o600, " (0600)")]
    if "windows" in platforms:
        files.append((outputs["windows"], profiles.windows_script(gw, client).encode(),
                      0o644, ""))
    if "android" in platforms:
        doc = profiles.sswan_profile(gw, client, local_id=strongswan_id)
        files.append((outputs["android"], profiles.sswan_text(doc).encode(), 0o600,
                      " (0600, holds the p12)"))
    if "apple" in platforms:
        apple_client = dataclasses.replace(client, p12=apple_p12)
        files.append((outputs["apple"], profiles.mobileconfig(gw, apple_client), 0o600,
                      " (0600, holds a legacy p12)" if args.modern else " (0600, holds the p12)"))
    if "linux" in platforms:
        text = profiles.linux_swanctl_conf(
            gw, client, p12_password=password, encap=args.encap, local_id=strongswan_id,
        )
        files.append((outputs["linux"], text.encode(), 0o600,
                      " (0600, holds the p12 password)"))
        files.append((outputs["keepalive"], profiles.keepalive_snippet(gw).encode(), 0o644, ""))
    if static_ip:
        lease = profiles.StaticLease(name, static_ip, pinned_id)
        files.append((static_path, profiles.gateway_static_conf(gw, lease).encode(), 0o644,
                      " (gateway side; loaded on swand's next reload)"))
    done: list[Path] = []
    try:
        for path, data, mode, _ in files:
            write_new(path, data, mode)
            done.append(path)
    except (OSError, PkiError) as exc:
        for written_path in [*done, pki.client_cert(name)]:
            written_path.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ClientError(f"writing {path}: {reason}; nothing was kept") from None
    written = [f"{path}{note}" for path, _, _, note in files]

    print(f"client {name}: serial {issued.cert.serial_number:x}, "
          f"valid until {issued.cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"  subject {issued.dn} (Windows sends this)")
    print(f"  subjectAltName {issued.san} (Android, Apple and Linux send this"
          f"{'; pinned, Android and Linux send ' + pinned_id if static_ip else ''})")
    print(f"  gateway {gw.address} (id {gw.identity}), connection {gw.conn_name}")
    for line in written:
        print(f"  wrote {line}")
    for note in notes:
        print(note, file=sys.stderr)
    if generated:
        print(f"PKCS#12 password (shown once): {password}")
    return 0


async def _revoke_live(uri: str, crl_der: bytes, identities: set[str]) -> list[str]:
    """Load the CRL into charon and end the SAs of the revoked identities."""
    ended: list[str] = []
    session = await ViciSession.connect(uri)
    try:
        await session.request("load-cert", {"type": "x509crl", "flag": "none", "data": crl_der})
        # blocking: a revoked client's SA that is mid-rekey must not be skipped
        events, _ = await session.streamed("list-sas", "list-sa")
        for event in events:
            for conn, sa in event.items():
                if not isinstance(sa, dict):
                    continue
                if _norm(sa.get("remote-id", "")) in identities:
                    ike_id = str(sa.get("uniqueid"))
                    await session.request(
                        "terminate", {"ike-id": ike_id, "force": "yes", "timeout": 5000},
                        check=False, timeout=15.0,
                    )
                    ended.append(f"{conn}[{ike_id}] {sa.get('remote-host', '')}")
    finally:
        await session.close()
    return ended


def _norm(identity: str) -> str:
    return re.sub(r"\s*,\s*", ", ", identity.strip())


def cmd_revoke(args: argparse.Namespace, swanctl_dir: Path, vici_uri: str) -> int:
    pki = SwanctlPki(swanctl_dir)
    name = check_client_name(args.name)
    cert, crl_der = revoke_client(pki, name)
    crl = read_crl(pki)
    print(f"client {name}: serial {cert.serial_number:x} revoked; {pki.crl} now lists "
          f"{len(list(crl)) if crl else 0} certificate(s)")
    identities = {_norm(dn_string(cert.subject))}

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identities |= {_norm(str(n.value)) for n in sans}
    except x509.ExtensionNotFound:
        pass
    try:
        ended = asyncio.run(_revoke_live(vici_uri, crl_der, identities))
    except (ViciError, OSError) as exc:
        print(f"swand client revoke: the CRL is written, but charon was not updated: {exc}. "
              "It takes effect when the credentials are next loaded (swand reload); "
              "live SAs of the client stay up until then.", file=sys.stderr)
        return 3
    pinned = swanctl_dir / "conf.d" / f"{name}.conf"
    if pinned.exists():
        print(f"  {pinned} still pins {name}'s address (the connection can no longer "
              "authenticate); delete it to free the address")
    print("  CRL loaded into charon")
    for sa in ended:
        print(f"  terminated {sa}")
    if not ended:
        print("  no live SA of this client")
    return 0


def cmd_list(args: argparse.Namespace, swanctl_dir: Path) -> int:
    records = list_clients(SwanctlPki(swanctl_dir))
    if args.json:
        print(json.dumps([
            {"name": r.name, "serial": f"{r.serial:x}", "subject": r.dn, "san": r.san,
             "not_after": r.not_after.isoformat(),
             "revoked": r.revoked.isoformat() if r.revoked else None}
            for r in records
        ], indent=2))
        return 0
    if not records:
        print("no clients")
        return 0
    width = max(len(r.name) for r in records)
    print(f"{'NAME':<{width}}  {'EXPIRES':<10}  {'STATUS':<18}  SERIAL / SUBJECT / SAN")
    for r in records:
        status = f"revoked {r.revoked:%Y-%m-%d}" if r.revoked else "valid"
        print(f"{r.name:<{width}}  {r.not_after:%Y-%m-%d}  {status:<18}  "
              f"{r.serial:x} / {r.dn} / {r.san}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config).with_overrides(
            swanctl_dir=args.swanctl_dir, vici=args.vici,
        )
        swanctl_dir = Path(cfg.swanctl.dir)
        if args.client_command == "add":
            return cmd_add(args, swanctl_dir)
        if args.client_command == "revoke":
            return cmd_revoke(args, swanctl_dir, cfg.charon.vici)
        return cmd_list(args, swanctl_dir)
    except (ClientError, PkiError, ConfigError, SettingsError, profiles.ProfileError) as exc:
        print(f"swand client: {exc}", file=sys.stderr)
        return 1
