"""Windows: `Add-VpnConnection` + `Set-VpnConnectionIPsecConfiguration` (pure).

Windows offers exactly one suite, so one of the gateway's proposals must be expressible in
Windows' names, or `ProfileError` says why not.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from swand.core.profiles.common import (
    IPV6_HALVES,
    ClientInfo,
    EspSuite,
    GatewayInfo,
    IkeSuite,
    ProfileError,
    Proposal,
    esp_suites,
    ike_suites,
    is_aead,
)

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
    for s in ike_suites(proposals):
        if s.encryption not in _WIN_IKE_ENCR or s.dh not in _WIN_DH or s.prf not in _WIN_HASH:
            continue
        if s.integrity is not None and s.integrity != s.prf:
            continue  # Windows derives the PRF from its one hash setting
        return s
    return None


def windows_esp_suite(proposals: Sequence[Proposal]) -> EspSuite | None:
    """The first of these ESP suites Windows can offer, else None."""
    for e in esp_suites(proposals):
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


def _ipv6_route_lines(gw: GatewayInfo, vpn: str) -> list[str]:
    """Both halves of IPv6 into the tunnel: carried by a gateway that tunnels IPv6,
    dropped (the VPN interface has no IPv6 address) by one that does not."""
    why = ("the gateway tunnels IPv6" if gw.tunnels_ipv6 else
           "the gateway has no IPv6: this blocks it while connected")
    return [
        f"# IPv6 through the tunnel, never around it ({why}):",
        *(f"Add-VpnConnectionRoute -ConnectionName {_ps_quote(vpn)} -DestinationPrefix "
          f"{_ps_quote(prefix)} -AllUserConnection" for prefix in IPV6_HALVES),
    ]


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
        *_ipv6_route_lines(gw, vpn),
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
    ike = IkeSuite(encr, None if is_aead(encr) else hash_, hash_, dh)
    cipher = back(_WIN_ESP_ENCR, params["CipherTransformConstants"], "CipherTransformConstants")
    auth = params["AuthenticationTransformConstants"]
    integ = None if is_aead(cipher) else back(_WIN_ESP_INTEG, auth, "AuthenticationTransform")
    pfs = None if params["PfsGroup"] == "None" else back(_WIN_PFS, params["PfsGroup"], "PfsGroup")
    return ike.keywords(), EspSuite(cipher, integ, pfs).keywords()


def windows_curve_for(gw: GatewayInfo) -> str:
    """The ECDSA curve for a Windows client's key: the one of the IKE DH group Windows
    negotiates (Windows couples them), P-384 when that group is not an ECP one."""
    try:
        dh = windows_params(gw).ike.dh
    except ProfileError:
        return "secp384r1"
    return {"ecp256": "secp256r1", "ecp384": "secp384r1"}.get(dh, "secp384r1")
