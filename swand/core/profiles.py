"""Client profiles derived from the gateway's own configuration (pure).

A new road-warrior client needs the same facts on every platform: where the gateway is,
which identity it proves, and one IKE and one ESP suite the gateway accepts. This module
reads them once from the gateway's parsed swanctl.conf (`gateway_from_settings`) and
renders each platform's import format from them:

- Windows: `Add-VpnConnection` + `Set-VpnConnectionIPsecConfiguration` (`windows_params`,
  `windows_script`). Windows offers exactly one suite, so one of the gateway's proposals
  must be expressible in Windows' names, or `ProfileError` says why not.
- Android (strongSwan app): the `.sswan` JSON profile (`sswan_profile`).
- Apple: a `.mobileconfig` plist (`mobileconfig`), pkcs12 + root CA + IKEv2 VPN payload.
- Linux: a swanctl.conf connection for charon on the client (`linux_swanctl_conf`) and the
  `[keepalive]` snippet for swand there.
- Gateway side: the pinned connection + one-address pool for `--static-ip`
  (`gateway_static_conf`).

No file, socket or crypto library is touched here: the caller passes certificate facts
(DER bytes, names) in, and gets text, dicts or bytes out.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import plistlib
import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from swand.core.settings import Section, Setting

# --- errors -----------------------------------------------------------------------------


class ProfileError(Exception):
    """A profile that cannot be made; the message names the proposal, file or setting."""


# --- strongSwan proposal keywords ----------------------------------------------------------

#: encryption keywords -> canonical name; AEAD ones end in "gcm16"/"poly1305"/"ccm16"
_ENCR_ALIASES: dict[str, str] = {
    "des": "des", "3des": "3des",
    "aes128": "aes128", "aes192": "aes192", "aes256": "aes256", "aes": "aes128",
    "aes128ctr": "aes128ctr", "aes192ctr": "aes192ctr", "aes256ctr": "aes256ctr",
    "camellia128": "camellia128", "camellia192": "camellia192",
    "camellia256": "camellia256",
    "chacha20poly1305": "chacha20poly1305",
}
for _bits in (128, 192, 256):
    for _icv, _canon in (("8", "8"), ("64", "8"), ("12", "12"), ("96", "12"),
                         ("16", "16"), ("128", "16"), ("", "16")):
        _ENCR_ALIASES[f"aes{_bits}gcm{_icv}"] = f"aes{_bits}gcm{_canon}"
        _ENCR_ALIASES[f"aes{_bits}ccm{_icv}"] = f"aes{_bits}ccm{_canon}"

_INTEG_ALIASES: dict[str, str] = {
    "md5": "md5", "md5_128": "md5_128", "sha1": "sha1", "sha": "sha1", "sha1_160": "sha1_160",
    "sha256": "sha256", "sha2_256": "sha256", "sha256_96": "sha256_96",
    "sha2_256_96": "sha256_96", "sha384": "sha384", "sha2_384": "sha384",
    "sha512": "sha512", "sha2_512": "sha512", "aesxcbc": "aesxcbc", "aescmac": "aescmac",
    "aes128gmac": "aes128gmac", "aes192gmac": "aes192gmac", "aes256gmac": "aes256gmac",
}
_PRF_ALIASES: dict[str, str] = {
    "prfmd5": "md5", "prfsha1": "sha1", "prfsha256": "sha256", "prfsha384": "sha384",
    "prfsha512": "sha512", "prfaesxcbc": "aesxcbc", "prfaescmac": "aescmac",
}
_DH_NAMES = {
    "modp768", "modp1024", "modp1536", "modp2048", "modp3072", "modp4096", "modp6144",
    "modp8192", "modp1024s160", "modp2048s224", "modp2048s256", "ecp192", "ecp224",
    "ecp256", "ecp384", "ecp521", "ecp224bp", "ecp256bp", "ecp384bp", "ecp512bp",
    "curve25519", "curve448",
}
_DH_ALIASES = {name: name for name in _DH_NAMES} | {"x25519": "curve25519", "x448": "curve448"}
_ESN = {"esn", "noesn"}
#: ESP without PFS, spelled out (charon 5.9 takes both)
_NO_PFS = {"none", "modpnone"}

#: strongSwan 5.9's built-in proposals, used where swanctl.conf says `default` (or nothing)
DEFAULT_IKE = (
    "aes128-aes192-aes256-sha256-sha384-sha512-sha1-prfsha256-prfsha384-prfsha512-prfsha1-"
    "curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
    "aes128gcm16-aes192gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-"
    "prfsha1-curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
)
DEFAULT_ESP = ("aes128gcm16-aes256gcm16-chacha20poly1305", "aes128-aes256-sha256-sha1")


def _is_aead(encr: str) -> bool:
    return "gcm" in encr or "ccm" in encr or encr == "chacha20poly1305"


@dataclass(frozen=True)
class Proposal:
    """One parsed proposal: each algorithm kind in the order written."""

    text: str
    encryption: tuple[str, ...]
    integrity: tuple[str, ...] = ()
    prf: tuple[str, ...] = ()
    dh: tuple[str, ...] = ()
    esn: tuple[str, ...] = ()

    @property
    def prfs(self) -> tuple[str, ...]:
        """The PRFs charon uses: explicit ones, else one per integrity algorithm."""
        if self.prf:
            return self.prf
        return tuple(dict.fromkeys(i.split("_")[0] for i in self.integrity))


def parse_proposal(text: str, ike: bool) -> Proposal:
    """Split one strongSwan proposal (``aes256gcm16-prfsha384-ecp384``) into its kinds.

    A trailing ``!`` (strict, strongSwan 5.x ipsec.conf) is ignored. Unknown keywords raise
    ProfileError naming the keyword, because a profile built on a guess would fail late.
    """
    encr: list[str] = []
    integ: list[str] = []
    prf: list[str] = []
    dh: list[str] = []
    esn: list[str] = []
    for raw in text.strip().rstrip("!").lower().split("-"):
        token = raw.strip()
        if token in _ENCR_ALIASES:
            encr.append(_ENCR_ALIASES[token])
        elif token in _INTEG_ALIASES:
            integ.append(_INTEG_ALIASES[token])
        elif token in _PRF_ALIASES and ike:
            prf.append(_PRF_ALIASES[token])
        elif token in _DH_ALIASES:
            dh.append(_DH_ALIASES[token])
        elif token in _ESN and not ike:
            esn.append(token)
        elif token in _NO_PFS and not ike:
            continue  # the same as naming no group
        else:
            kind = "IKE" if ike else "ESP"
            raise ProfileError(f"{kind} proposal {text!r}: unknown algorithm keyword {token!r}")
    if not encr:
        raise ProfileError(f"proposal {text!r} has no encryption algorithm")
    return Proposal(text, tuple(encr), tuple(integ), tuple(prf), tuple(dh), tuple(esn))


def parse_proposals(values: Iterable[str], ike: bool) -> tuple[Proposal, ...]:
    """A swanctl `proposals` / `esp_proposals` list; ``default`` expands to charon's."""
    out: list[Proposal] = []
    for value in values:
        if value.strip().lower() == "default":
            out.extend(parse_proposal(p, ike) for p in (DEFAULT_IKE if ike else DEFAULT_ESP))
        else:
            out.append(parse_proposal(value, ike))
    return tuple(out)


def split_list(value: str) -> tuple[str, ...]:
    """A swanctl comma-separated list value."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


# --- the gateway's facts ---------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayInfo:
    """What every client profile needs to know about the gateway."""

    #: what clients dial: a DNS name or an IP address
    address: str
    #: the identity the gateway proves (its local id); clients expect it as remote id
    identity: str
    ike_proposals: tuple[str, ...] = ("aes256gcm16-prfsha384-ecp384",)
    esp_proposals: tuple[str, ...] = ("aes256gcm16-ecp384",)
    #: the road-warrior connection and its child on the gateway
    conn_name: str = "roadwarriors"
    child_name: str = "roadwarriors"
    #: the child's local_ts: what the client routes into the tunnel
    local_ts: tuple[str, ...] = ("0.0.0.0/0",)
    pool_addrs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    #: the gateway certificate file (under x509/), when the config names one
    cert_file: str | None = None
    #: the name of the connection's (first) remote auth section: remote, remote-1, ...
    remote_section: str = "remote"

    @property
    def ike(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.ike_proposals, ike=True)

    @property
    def esp(self) -> tuple[Proposal, ...]:
        return parse_proposals(self.esp_proposals, ike=False)


def _setting(section: Section | None, key: str) -> Setting | None:
    return None if section is None else section.settings.get(key)


def _value(section: Section | None, key: str, default: str | None = None) -> str | None:
    s = _setting(section, key)
    return default if s is None else s.value


def _auth_rounds(conn: Section, side: str) -> list[Section]:
    """`local`, `local-1`, `localX` ... sections in file order (swanctl's suffix rule)."""
    return [s for name, s in conn.sections.items() if name == side or name.startswith(side)]


def _is_road_warrior(conn: Section) -> bool:
    """Pools, certificate-authenticated clients, and any identity (a connection pinned to
    one client's id, like `t520` or a `--static-ip` client, is not the road-warrior one)."""
    remotes = _auth_rounds(conn, "remote")
    first = remotes[0] if remotes else None
    auth = _value(first, "auth", "pubkey") or "pubkey"
    remote_id = _value(first, "id", "%any") or "%any"
    return bool(_value(conn, "pools")) and auth.startswith("pubkey") and remote_id == "%any"


def find_road_warrior(root: Section, conn_name: str | None = None) -> Section:
    """The road-warrior connection: the named one, or the only one with pools and pubkey
    client authentication."""
    conns = root.sections.get("connections")
    if conns is None or not conns.sections:
        raise ProfileError(f"{root.origin.file}: no connections section")
    if conn_name is not None:
        conn = conns.sections.get(conn_name)
        if conn is None:
            raise ProfileError(
                f"{conns.origin}: no connection {conn_name!r} "
                f"(have: {', '.join(conns.sections)})"
            )
        return conn
    candidates = [c for c in conns.sections.values() if _is_road_warrior(c)]
    if len(candidates) != 1:
        have = ", ".join(c.name for c in candidates) or "none"
        raise ProfileError(
            f"{conns.origin}: cannot tell which connection serves road warriors "
            f"(candidates with pools and pubkey clients: {have}); name it with --conn"
        )
    return candidates[0]


def gateway_from_settings(
    root: Section, *, conn_name: str | None = None, address: str | None = None,
    identity: str | None = None,
) -> GatewayInfo:
    """Read the gateway's facts from its parsed swanctl.conf.

    The identity is the road-warrior connection's local id (or the one given); the address
    clients dial defaults to that identity. Proposals come from the connection and its
    first child; pool addresses and DNS from the pools it names.
    """
    conn = find_road_warrior(root, conn_name)
    where = f"{conn.origin} (connection {conn.name})"
    local = next(iter(_auth_rounds(conn, "local")), None)
    ident = identity or _value(local, "id")
    cert_files = split_list(_value(local, "certs", "") or "")
    if not ident or "*" in ident or ident == "%any":
        raise ProfileError(
            f"{where}: the gateway's local id is not a plain name ({ident or 'unset'}); "
            "set local.id to the name clients dial, or pass --gateway-id"
        )
    addr = address or ident
    assert addr is not None and ident is not None
    children = conn.sections.get("children")
    child = next(iter(children.sections.values()), None) if children else None
    if child is None:
        raise ProfileError(f"{where}: has no children")
    ike = split_list(_value(conn, "proposals", "default") or "default")
    esp = split_list(_value(child, "esp_proposals", "default") or "default")
    local_ts = split_list(_value(child, "local_ts", "0.0.0.0/0") or "0.0.0.0/0")
    pool_addrs: list[str] = []
    dns: list[str] = []
    pools = root.sections.get("pools")
    for pool_name in split_list(_value(conn, "pools", "") or ""):
        pool = pools.sections.get(pool_name) if pools else None
        if pool is None:
            continue  # a pool provided by another plugin (attr-sql, dhcp): nothing to read
        pool_addrs.extend(split_list(_value(pool, "addrs", "") or ""))
        dns.extend(split_list(_value(pool, "dns", "") or ""))
    remotes = _auth_rounds(conn, "remote")
    gw = GatewayInfo(
        remote_section=remotes[0].name if remotes else "remote",
        address=addr, identity=ident, ike_proposals=ike, esp_proposals=esp,
        conn_name=conn.name, child_name=child.name, local_ts=local_ts,
        pool_addrs=tuple(pool_addrs), dns=tuple(dict.fromkeys(dns)),
        cert_file=cert_files[0] if cert_files else None,
    )
    gw.ike  # noqa: B018 - validate the keywords now, naming the connection
    gw.esp  # noqa: B018
    return gw


# --- client facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientInfo:
    """The client's certificate facts, as the profiles need them."""

    name: str
    #: the subject DN in strongSwan's string form ("C=DE, O=example, CN=alice")
    dn: str
    #: the subjectAltName the non-Windows clients send as their identity
    san: str
    #: PKCS#12 blob (key, certificate, CA chain), password-protected
    p12: bytes
    #: the CA certificate, DER
    ca_der: bytes
    ca_common_name: str
    #: "ECDSA256" / "ECDSA384" / "ECDSA521" / "RSA" (Apple's CertificateType names)
    key_type: str = "ECDSA384"
    static_ip: str | None = None


# --- Windows ---------------------------------------------------------------------------

_WIN_IKE_ENCR = {
    "des": "DES", "3des": "DES3", "aes128": "AES128", "aes192": "AES192", "aes256": "AES256",
    "aes128gcm16": "GCMAES128", "aes256gcm16": "GCMAES256",
}
_WIN_HASH = {"md5": "MD5", "sha1": "SHA1", "sha256": "SHA256", "sha384": "SHA384"}
_WIN_DH = {
    "modp768": "Group1", "modp1024": "Group2", "modp2048": "Group14", "ecp256": "ECP256",
    "ecp384": "ECP384", "modp2048s256": "Group24",
}
_WIN_ESP_ENCR = {
    "des": "DES", "3des": "DES3", "aes128": "AES128", "aes192": "AES192", "aes256": "AES256",
    "aes128gcm16": "GCMAES128", "aes192gcm16": "GCMAES192", "aes256gcm16": "GCMAES256",
}
_WIN_ESP_INTEG = {"md5": "MD596", "sha1": "SHA196", "sha256": "SHA256128"}
_WIN_PFS = {
    "modp768": "PFS1", "modp1024": "PFS2", "modp2048": "PFS2048", "ecp256": "ECP256",
    "ecp384": "ECP384", "modp2048s256": "PFS24",
}


@dataclass(frozen=True)
class IkeSuite:
    """One concrete IKE suite in strongSwan keywords; `integrity` empty for AEAD."""

    encryption: str
    integrity: str | None
    prf: str
    dh: str

    def keywords(self) -> str:
        parts = [self.encryption]
        if self.integrity:
            parts.append(self.integrity)
        parts += [f"prf{self.prf}", self.dh]
        return "-".join(parts)


@dataclass(frozen=True)
class EspSuite:
    encryption: str
    integrity: str | None
    dh: str | None

    def keywords(self) -> str:
        parts = [self.encryption]
        if self.integrity:
            parts.append(self.integrity)
        if self.dh:
            parts.append(self.dh)
        return "-".join(parts)


def _ike_suites(proposals: Sequence[Proposal]) -> Iterable[IkeSuite]:
    """Every concrete suite the gateway accepts, in the gateway's preference order."""
    for p in proposals:
        for encr in p.encryption:
            for dh in p.dh:
                if _is_aead(encr):
                    for prf in p.prfs:
                        yield IkeSuite(encr, None, prf, dh)
                else:
                    for integ in p.integrity:
                        for prf in p.prfs:
                            yield IkeSuite(encr, integ, prf, dh)


def _esp_suites(proposals: Sequence[Proposal]) -> Iterable[EspSuite]:
    for p in proposals:
        if p.esn and "noesn" not in p.esn:
            continue  # ESN only: neither Windows nor Apple offer it
        dhs: tuple[str | None, ...] = p.dh or (None,)
        for encr in p.encryption:
            integs: tuple[str | None, ...] = (None,) if _is_aead(encr) else p.integrity
            for integ in integs:
                for dh in dhs:
                    yield EspSuite(encr, integ, dh)


@dataclass(frozen=True)
class WindowsParams:
    """`Set-VpnConnectionIPsecConfiguration` parameters, plus the suites they stand for."""

    encryption_method: str
    integrity_check_method: str
    dh_group: str
    cipher_transform_constants: str
    authentication_transform_constants: str
    pfs_group: str
    ike: IkeSuite
    esp: EspSuite

    def as_ps_args(self) -> dict[str, str]:
        return {
            "AuthenticationTransformConstants": self.authentication_transform_constants,
            "CipherTransformConstants": self.cipher_transform_constants,
            "EncryptionMethod": self.encryption_method,
            "IntegrityCheckMethod": self.integrity_check_method,
            "DHGroup": self.dh_group,
            "PfsGroup": self.pfs_group,
        }


def windows_ike_suite(proposals: Sequence[Proposal]) -> IkeSuite | None:
    """The first of these IKE suites Windows can offer, else None (`swand check` asks
    the same question)."""
    for s in _ike_suites(proposals):
        if s.encryption not in _WIN_IKE_ENCR or s.dh not in _WIN_DH or s.prf not in _WIN_HASH:
            continue
        if s.integrity is not None and s.integrity != s.prf:
            continue  # Windows derives the PRF from its one hash setting
        return s
    return None


def windows_esp_suite(proposals: Sequence[Proposal]) -> EspSuite | None:
    """The first of these ESP suites Windows can offer, else None."""
    for e in _esp_suites(proposals):
        if e.encryption not in _WIN_ESP_ENCR:
            continue
        if e.integrity is not None and e.integrity not in _WIN_ESP_INTEG:
            continue
        if e.dh is not None and e.dh not in _WIN_PFS:
            continue
        return e
    return None


def windows_params(gw: GatewayInfo) -> WindowsParams:
    """The first IKE and ESP suite of the gateway's that Windows can offer.

    Windows' IKEv2 client uses one hash for integrity and PRF (AEAD: the PRF only), knows
    DH groups 1, 2, 14, 24, ECP256 and ECP384, and for ESP only HMAC-MD5/SHA1/SHA256-128
    or AES-GCM as both cipher and integrity.
    """
    ike = windows_ike_suite(gw.ike)
    if ike is None:
        raise ProfileError(
            f"Windows cannot match the gateway's IKE proposals "
            f"({', '.join(gw.ike_proposals)}) of connection {gw.conn_name}: Windows offers "
            "AES-CBC/AES-GCM with SHA1/SHA256/SHA384 and DH groups 2, 14, 24, ECP256, ECP384; "
            "add e.g. aes256gcm16-prfsha384-ecp384 or aes256-sha256-modp2048"
        )
    esp = windows_esp_suite(gw.esp)
    if esp is None:
        raise ProfileError(
            f"Windows cannot match the gateway's ESP proposals "
            f"({', '.join(gw.esp_proposals)}) of connection {gw.conn_name}: Windows offers "
            "AES-CBC with SHA1/SHA256 or AES-GCM, PFS none/modp2048/ECP256/ECP384; "
            "add e.g. aes256gcm16-ecp384 or aes256-sha256-modp2048"
        )
    cipher = _WIN_ESP_ENCR[esp.encryption]
    return WindowsParams(
        encryption_method=_WIN_IKE_ENCR[ike.encryption],
        integrity_check_method=_WIN_HASH[ike.prf],
        dh_group=_WIN_DH[ike.dh],
        cipher_transform_constants=cipher,
        authentication_transform_constants=(
            cipher if esp.integrity is None else _WIN_ESP_INTEG[esp.integrity]
        ),
        pfs_group="None" if esp.dh is None else _WIN_PFS[esp.dh],
        ike=ike,
        esp=esp,
    )


def _ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal."""
    return "'" + value.replace("'", "''") + "'"


def windows_script(gw: GatewayInfo, client: ClientInfo, connection_name: str | None = None) -> str:
    """`NAME.ps1`: import the p12, add the IKEv2 connection, pin its IPsec parameters."""
    params = windows_params(gw)
    vpn = connection_name or gw.address
    args = " ".join(f"-{k} {v}" for k, v in params.as_ps_args().items())
    return "\n".join([
        f"# swand: IKEv2 connection to {gw.address} for {client.name}",
        "# Run in an elevated PowerShell next to the .p12 file:",
        f"#   powershell -ExecutionPolicy Bypass -File .\\{client.name}.ps1",
        f"# IKE {params.ike.keywords()}, ESP {params.esp.keywords()} (from the gateway's "
        f"connection {gw.conn_name}).",
        "# Windows authenticates with its certificate's subject DN:",
        f"#   {client.dn}",
        "$ErrorActionPreference = 'Stop'",
        f"$p12 = Join-Path $PSScriptRoot {_ps_quote(client.name + '.p12')}",
        "$password = Read-Host -AsSecureString -Prompt 'PKCS#12 password'",
        "# The machine store: IKEv2 MachineCertificate authentication looks only there.",
        "Import-PfxCertificate -FilePath $p12 -CertStoreLocation Cert:\\LocalMachine\\My "
        "-Password $password | Out-Null",
        f"# The CA ({client.ca_common_name}) goes to the machine's trusted roots so the",
        "# gateway certificate validates.",
        f"$caDer = [Convert]::FromBase64String('{base64.b64encode(client.ca_der).decode()}')",
        "$ca = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($caDer)",
        "$root = [System.Security.Cryptography.X509Certificates.X509Store]::new("
        "'Root', 'LocalMachine')",
        "$root.Open('ReadWrite'); $root.Add($ca); $root.Close()",
        "# Re-running replaces the connection (Add-VpnConnection refuses an existing name).",
        f"Get-VpnConnection -Name {_ps_quote(vpn)} -AllUserConnection -ErrorAction "
        "SilentlyContinue | Remove-VpnConnection -AllUserConnection -Force",
        f"Add-VpnConnection -Name {_ps_quote(vpn)} -ServerAddress {_ps_quote(gw.address)} "
        "-TunnelType IKEv2 -AuthenticationMethod MachineCertificate -EncryptionLevel Required "
        "-AllUserConnection -Force",
        f"Set-VpnConnectionIPsecConfiguration -ConnectionName {_ps_quote(vpn)} {args} "
        "-AllUserConnection -Force",
        "# With several machine certificates, Windows may pick the wrong one; pin the CA:",
        f"#   Set-VpnConnection -Name {_ps_quote(vpn)} -AllUserConnection "
        "-MachineCertificateIssuerFilter $ca",
        "# DNS: Windows' smart multi-homed name resolution asks every interface's DNS",
        "# server at once, so names can leak past the tunnel. To send them only through",
        "# the VPN, turn it off (Group Policy 'Turn off smart multi-homed name resolution'):",
        "#   Set-ItemProperty -Path 'HKLM:\\Software\\Policies\\Microsoft\\Windows NT\\"
        "DNSClient' -Name DisableSmartNameResolution -Value 1 -Type DWord",
        "# and give the VPN interface a lower metric than the LAN's:",
        f"#   Set-NetIPInterface -InterfaceAlias {_ps_quote(vpn)} -InterfaceMetric 1",
        "",
    ])


def parse_windows_script(text: str) -> dict[str, str]:
    """The `Set-VpnConnectionIPsecConfiguration` arguments of a script (for tests/audits)."""
    for line in text.splitlines():
        if line.startswith("Set-VpnConnectionIPsecConfiguration"):
            return dict(re.findall(r"-(\w+) (\w+)", line.split(" ", 3)[3]))
    raise ProfileError("no Set-VpnConnectionIPsecConfiguration line")


def windows_suites_from_params(params: dict[str, str]) -> tuple[str, str]:
    """The (IKE, ESP) suites Windows offers for these `Set-VpnConnectionIPsecConfiguration`
    arguments, in strongSwan keywords — for tests and audits (a strongSwan client can
    offer exactly what Windows would)."""
    def back(table: dict[str, str], value: str, what: str) -> str:
        for keyword, name in table.items():
            if name == value:
                return keyword
        raise ProfileError(f"unknown Windows {what} {value!r}")

    encr = back(_WIN_IKE_ENCR, params["EncryptionMethod"], "EncryptionMethod")
    hash_ = back(_WIN_HASH, params["IntegrityCheckMethod"], "IntegrityCheckMethod")
    dh = back(_WIN_DH, params["DHGroup"], "DHGroup")
    ike = IkeSuite(encr, None if _is_aead(encr) else hash_, hash_, dh)
    cipher = back(_WIN_ESP_ENCR, params["CipherTransformConstants"], "CipherTransformConstants")
    auth = params["AuthenticationTransformConstants"]
    integ = None if _is_aead(cipher) else back(_WIN_ESP_INTEG, auth, "AuthenticationTransform")
    pfs = None if params["PfsGroup"] == "None" else back(_WIN_PFS, params["PfsGroup"], "PfsGroup")
    return ike.keywords(), EspSuite(cipher, integ, pfs).keywords()


# --- Apple ---------------------------------------------------------------------------------------

_APPLE_ENCR = {
    "des": "DES", "3des": "3DES", "aes128": "AES-128", "aes256": "AES-256",
    "aes128gcm16": "AES-128-GCM", "aes256gcm16": "AES-256-GCM",
    "chacha20poly1305": "ChaCha20Poly1305",
}
_APPLE_INTEG = {"sha1": "SHA1-96", "sha256": "SHA2-256", "sha384": "SHA2-384",
                "sha512": "SHA2-512"}
_APPLE_DH = {
    "modp768": 1, "modp1024": 2, "modp1536": 5, "modp2048": 14, "modp3072": 15,
    "modp4096": 16, "modp6144": 17, "modp8192": 18, "ecp256": 19, "ecp384": 20, "ecp521": 21,
    "curve25519": 31, "curve448": 32,
}


@dataclass(frozen=True)
class AppleParams:
    ike: IkeSuite
    esp: EspSuite

    def ike_dict(self) -> dict[str, object]:
        return {
            "EncryptionAlgorithm": _APPLE_ENCR[self.ike.encryption],
            "IntegrityAlgorithm": _APPLE_INTEG[self.ike.prf],
            "DiffieHellmanGroup": _APPLE_DH[self.ike.dh],
            "LifeTimeInMinutes": 1440,
        }

    def child_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"EncryptionAlgorithm": _APPLE_ENCR[self.esp.encryption]}
        if self.esp.integrity:
            d["IntegrityAlgorithm"] = _APPLE_INTEG[self.esp.integrity]
        # Apple wants a group here even without PFS; it is used only when EnablePFS is 1
        d["DiffieHellmanGroup"] = _APPLE_DH[self.esp.dh or self.ike.dh]
        d["LifeTimeInMinutes"] = 480
        return d


def apple_params(gw: GatewayInfo) -> AppleParams:
    """The first IKE and ESP suite of the gateway's that iOS/macOS can be told to use."""
    ike = next(
        (s for s in _ike_suites(gw.ike)
         if s.encryption in _APPLE_ENCR and s.prf in _APPLE_INTEG and s.dh in _APPLE_DH
         and (s.integrity is None or s.integrity == s.prf)),
        None,
    )
    if ike is None:
        raise ProfileError(
            f"Apple clients cannot match the gateway's IKE proposals "
            f"({', '.join(gw.ike_proposals)}) of connection {gw.conn_name}"
        )
    esp = next(
        (e for e in _esp_suites(gw.esp)
         if e.encryption in _APPLE_ENCR
         and (e.integrity is None or e.integrity in _APPLE_INTEG)
         and (e.dh is None or e.dh in _APPLE_DH)),
        None,
    )
    if esp is None:
        raise ProfileError(
            f"Apple clients cannot match the gateway's ESP proposals "
            f"({', '.join(gw.esp_proposals)}) of connection {gw.conn_name}"
        )
    return AppleParams(ike, esp)


def _stable_uuid(*parts: str) -> str:
    """A UUID derived from names, so re-generating a profile replaces the old one."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "swand:" + ":".join(parts))).upper()


def mobileconfig(
    gw: GatewayInfo, client: ClientInfo, *, dpd_rate: str = "Medium",
    on_demand: bool = False, identifier_prefix: str = "org.strongswan.swand",
) -> bytes:
    """`NAME.mobileconfig`: the client's PKCS#12, the CA as a root, and the IKEv2 payload.

    The p12 password is not embedded: the device asks for it on install.
    """
    params = apple_params(gw)
    p12_uuid = _stable_uuid(gw.address, client.name, "p12")
    ca_uuid = _stable_uuid(gw.address, client.name, "ca")
    vpn_uuid = _stable_uuid(gw.address, client.name, "vpn")
    ident = f"{identifier_prefix}.{gw.address}.{client.name}"
    ikev2: dict[str, object] = {
        "RemoteAddress": gw.address,
        "RemoteIdentifier": gw.identity,
        "LocalIdentifier": client.san,
        "AuthenticationMethod": "Certificate",
        "CertificateType": client.key_type,
        "PayloadCertificateUUID": p12_uuid,
        "ServerCertificateIssuerCommonName": client.ca_common_name,
        "ExtendedAuthEnabled": 0,
        "IKESecurityAssociationParameters": params.ike_dict(),
        "ChildSecurityAssociationParameters": params.child_dict(),
        "DeadPeerDetectionRate": dpd_rate,
        "DisableMOBIKE": 0,
        "DisableRedirect": 0,
        "EnablePFS": 1 if params.esp.dh else 0,
        "EnableCertificateRevocationCheck": 0,
        "UseConfigurationAttributeInternalIPSubnet": 0,
        "OnDemandEnabled": 1 if on_demand else 0,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": _stable_uuid(gw.address, client.name, "profile"),
        "PayloadDisplayName": f"VPN {gw.address} ({client.name})",
        "PayloadDescription": f"IKEv2 VPN to {gw.address}, made by swand",
        "PayloadContent": [
            {
                "PayloadType": "com.apple.security.pkcs12",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{ident}.p12",
                "PayloadUUID": p12_uuid,
                "PayloadDisplayName": f"{client.name}.p12",
                "PayloadContent": client.p12,
            },
            {
                "PayloadType": "com.apple.security.root",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{ident}.ca",
                "PayloadUUID": ca_uuid,
                "PayloadDisplayName": client.ca_common_name,
                "PayloadContent": client.ca_der,
            },
            {
                "PayloadType": "com.apple.vpn.managed",
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{ident}.vpn",
                "PayloadUUID": vpn_uuid,
                "PayloadDisplayName": f"VPN {gw.address}",
                "UserDefinedName": f"VPN {gw.address}",
                "VPNType": "IKEv2",
                "IKEv2": ikev2,
            },
        ],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=False)


def apple_suites_from_plist(data: bytes) -> tuple[str, str]:
    """Read a mobileconfig back into strongSwan keywords (IKE, ESP) — for tests/audits."""
    by_apple_encr = {v: k for k, v in _APPLE_ENCR.items()}
    by_apple_integ = {v: k for k, v in _APPLE_INTEG.items()}
    by_apple_dh = {v: k for k, v in _APPLE_DH.items()}
    doc = plistlib.loads(data)
    vpn = next(p for p in doc["PayloadContent"] if p["PayloadType"] == "com.apple.vpn.managed")
    ikev2 = vpn["IKEv2"]
    i = ikev2["IKESecurityAssociationParameters"]
    c = ikev2["ChildSecurityAssociationParameters"]
    encr = by_apple_encr[i["EncryptionAlgorithm"]]
    prf = by_apple_integ[i["IntegrityAlgorithm"]]
    ike = IkeSuite(encr, None if _is_aead(encr) else prf, prf, by_apple_dh[i["DiffieHellmanGroup"]])
    cenc = by_apple_encr[c["EncryptionAlgorithm"]]
    esp = EspSuite(
        cenc,
        None if _is_aead(cenc) else by_apple_integ[c["IntegrityAlgorithm"]],
        by_apple_dh[c["DiffieHellmanGroup"]] if ikev2.get("EnablePFS") else None,
    )
    return ike.keywords(), esp.keywords()


# --- Android (strongSwan app) -------------------------------------------------------------------

#: the keys the app's VpnProfileImportActivity reads (required ones marked True)
SSWAN_KEYS: dict[str, bool] = {
    "uuid": True, "name": True, "type": True, "remote": True, "local": False,
    "ike-proposal": False, "esp-proposal": False, "dns-servers": False, "mtu": False,
    "nat-keepalive": False, "split-tunneling": False, "apps": False, "excluded-apps": False,
}
SSWAN_REMOTE_KEYS: dict[str, bool] = {
    "addr": True, "port": False, "id": False, "cert": False, "certreq": False,
    "revocation": False,
}
SSWAN_LOCAL_KEYS: dict[str, bool] = {"eap_id": False, "id": False, "p12": False, "rsa-pss": False}
SSWAN_TYPES = ("ikev2-eap", "ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls", "ikev2-byod-eap")


def sswan_profile(gw: GatewayInfo, client: ClientInfo, *, local_id: str | None = None) -> dict:
    """The strongSwan Android app's profile (`NAME.sswan`), p12 and CA embedded.

    The app accepts the full strongSwan proposal syntax, so the gateway's first proposals
    are passed through unchanged (its own parser validates them on import).
    """
    return {
        "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"swand:{gw.address}:{client.name}")),
        "name": f"VPN {gw.address}",
        "type": "ikev2-cert",
        "remote": {
            "addr": gw.address,
            "id": gw.identity,
            "cert": base64.b64encode(client.ca_der).decode(),
        },
        "local": {
            "id": local_id or client.san,
            "p12": base64.b64encode(client.p12).decode(),
        },
        "ike-proposal": gw.ike_proposals[0],
        "esp-proposal": gw.esp_proposals[0],
    }


def sswan_text(profile: dict) -> str:
    return json.dumps(profile, indent=2) + "\n"


def validate_sswan(profile: dict) -> list[str]:
    """Problems the Android app would have importing `profile` (empty list: fine)."""
    problems: list[str] = []

    def check(obj: dict, known: dict[str, bool], where: str) -> None:
        for key, required in known.items():
            if required and key not in obj:
                problems.append(f"{where}{key}: required")
        for key in obj:
            if key not in known:
                problems.append(f"{where}{key}: not read by the app")

    check(profile, SSWAN_KEYS, "")
    try:
        uuidlib.UUID(str(profile.get("uuid")))
    except ValueError:
        problems.append("uuid: not an RFC 4122 UUID")
    if profile.get("type") not in SSWAN_TYPES:
        problems.append(f"type: {profile.get('type')!r} not one of {', '.join(SSWAN_TYPES)}")
    remote = profile.get("remote")
    if isinstance(remote, dict):
        check(remote, SSWAN_REMOTE_KEYS, "remote.")
    else:
        problems.append("remote: must be an object")
    local = profile.get("local", {})
    if not isinstance(local, dict):
        problems.append("local: must be an object")
    else:
        check(local, SSWAN_LOCAL_KEYS, "local.")
        if profile.get("type") == "ikev2-cert" and "p12" not in local:
            problems.append("local.p12: an ikev2-cert profile needs the certificate")
    for key, where in (("cert", remote), ("p12", local)):
        if isinstance(where, dict) and key in where:
            try:
                base64.b64decode(where[key], validate=True)
            except ValueError:
                problems.append(f"{key}: not base64")
    for key, ike in (("ike-proposal", True), ("esp-proposal", False)):
        if key in profile:
            try:
                parse_proposal(profile[key], ike)
            except ProfileError as exc:
                problems.append(f"{key}: {exc}")
    return problems


# --- Linux client ------------------------------------------------------------------------------

def _quote(value: str) -> str:
    """A swanctl.conf value, quoted when it holds characters the parser treats specially."""
    if re.fullmatch(r"[A-Za-z0-9_.:/@%*+-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def linux_swanctl_conf(
    gw: GatewayInfo, client: ClientInfo, *, p12_password: str, encap: bool = False,
    local_id: str | None = None, conn_name: str | None = None, dpd_delay: str = "30s",
) -> str:
    """`NAME.swanctl.conf` for charon on a Linux client.

    The remote id is the gateway's exact id (no wildcards) so charon sends INITIAL_CONTACT
    and the gateway drops the client's stale SAs after a reboot. The p12 password sits in
    the secrets section because swanctl/swand load credentials non-interactively: the file
    is written 0600 and belongs in the client's /etc/swanctl/conf.d/.
    """
    if "*" in gw.identity or gw.identity == "%any":
        raise ProfileError(
            f"gateway id {gw.identity!r} has wildcards: the Linux client needs the exact id "
            "(charon sends INITIAL_CONTACT only then); pass --gateway-id"
        )
    name = conn_name or client_conn_name(gw)
    ike = ",".join(gw.ike_proposals)
    esp = ",".join(gw.esp_proposals)
    lines = [
        f"# swand: {client.name}'s connection to {gw.address}",
        f"# Install: {client.name}.p12 -> /etc/swanctl/pkcs12/, this file -> "
        "/etc/swanctl/conf.d/ (mode 0600: it holds the p12 password).",
        "connections {",
        f"    {name} {{",
        "        version = 2",
        f"        remote_addrs = {_quote(gw.address)}",
        "        vips = 0.0.0.0",
        f"        proposals = {ike}",
        "        mobike = yes",
        f"        encap = {'yes' if encap else 'no'}",
        f"        dpd_delay = {dpd_delay}",
        "        keyingtries = 0",
        "        local {",
        "            auth = pubkey",
        f"            id = {_quote(local_id or client.san)}",
        "        }",
        "        remote {",
        "            auth = pubkey",
        f"            id = {_quote(gw.identity)}",
        "        }",
        "        children {",
        f"            {name} {{",
        f"                remote_ts = {','.join(gw.local_ts)}",
        f"                esp_proposals = {esp}",
        "                start_action = start",
        "                dpd_action = restart",
        "                close_action = start",
        "            }",
        "        }",
        "    }",
        "}",
        "secrets {",
        f"    pkcs12-{client.name} {{",
        f"        file = {client.name}.p12",
        f"        secret = {_quote(p12_password)}",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def client_conn_name(gw: GatewayInfo) -> str:
    """The client-side connection's name: the gateway's address, as a section name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", gw.address).strip("-") or "vpn"


def keepalive_snippet(gw: GatewayInfo, conn_name: str | None = None) -> str:
    """The swand.toml lines that make swand on the client keep the tunnel up."""
    name = conn_name or client_conn_name(gw)
    return (
        "# swand.toml on the client: keep the tunnel up, no gateway firewall\n"
        f"[keepalive]\nconns = [{json.dumps(name)}]\n\n[firewall]\nenabled = false\n"
    )


# --- gateway side for --static-ip --------------------------------------------------------------

@dataclass(frozen=True)
class StaticLease:
    """A client pinned to one address: one connection matching one identity, one pool."""

    name: str
    address: str
    #: the identity the client sends: its subject DN (Windows, strongSwan clients told
    #: so) or its subjectAltName (Apple cannot send a DN)
    identity: str


def check_static_ip(gw: GatewayInfo, address: str) -> str:
    """The static address, validated: an address outside the dynamic pools."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ProfileError(f"--static-ip {address!r} is not an IP address") from None
    for pool in gw.pool_addrs:
        try:
            if "-" in pool:
                lo, hi = (ipaddress.ip_address(x.strip()) for x in pool.split("-", 1))
                inside = type(lo) is type(ip) and lo <= ip <= hi  # type: ignore[operator]
            else:
                inside = ip in ipaddress.ip_network(pool, strict=False)
        except ValueError:
            continue
        if inside:
            raise ProfileError(
                f"--static-ip {address} lies inside the dynamic pool {pool} of connection "
                f"{gw.conn_name}: charon could lease it to someone else"
            )
    return str(ip)


def gateway_static_conf(gw: GatewayInfo, lease: StaticLease) -> str:
    """`conf.d/NAME.conf` on the gateway: the road-warrior connection, pinned.

    The connection inherits everything from the road-warrior connection by a section
    reference and only overrides the expected remote identity and the pool, so a change to
    the road-warrior connection (proposals, certificates) applies here too. A connection
    with a specific remote id wins over the road-warrior's `%any` when charon picks a
    config. One connection per one-address pool: two would compete for the address.
    """
    lines = [
        f"# swand client add {lease.name} --static-ip {lease.address}: pins the client "
        f"({lease.identity}) to {lease.address}",
        "connections {",
        f"    {lease.name} : connections.{gw.conn_name} {{",
        f"        pools = {lease.name}",
        f"        {gw.remote_section} {{",
        f"            id = {_quote(lease.identity)}",
        "        }",
        "    }",
        "}",
        "pools {",
        f"    {lease.name} {{",
        f"        addrs = {lease.address}",
    ]
    if gw.dns:
        lines.append(f"        dns = {', '.join(gw.dns)}")
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def windows_curve_for(gw: GatewayInfo) -> str:
    """The ECDSA curve for a Windows client's key: the one of the IKE DH group Windows
    negotiates (Windows couples them), P-384 when that group is not an ECP one."""
    try:
        dh = windows_params(gw).ike.dh
    except ProfileError:
        return "secp384r1"
    return {"ecp256": "secp256r1", "ecp384": "secp384r1"}.get(dh, "secp384r1")
