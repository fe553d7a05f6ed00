"""Apple (iOS, iPadOS, macOS): a `.mobileconfig` plist with the PKCS#12, the root CA and
the IKEv2 VPN payload (pure)."""

from __future__ import annotations

import plistlib
from dataclasses import dataclass

from swand.core.profiles.common import (
    ClientInfo,
    EspSuite,
    GatewayInfo,
    IkeSuite,
    ProfileError,
    esp_suites,
    ike_suites,
    is_aead,
    stable_uuid,
)

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
        (s for s in ike_suites(gw.ike)
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
        (e for e in esp_suites(gw.esp)
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


def mobileconfig(
    gw: GatewayInfo, client: ClientInfo, *, dpd_rate: str = "Medium",
    on_demand: bool = False, identifier_prefix: str = "org.strongswan.swand",
) -> bytes:
    """`NAME.mobileconfig`: the client's PKCS#12, the CA as a root, and the IKEv2 payload.

    The p12 password is not embedded: the device asks for it on install.
    """
    params = apple_params(gw)
    p12_uuid = stable_uuid(gw.address, client.name, "p12")
    ca_uuid = stable_uuid(gw.address, client.name, "ca")
    vpn_uuid = stable_uuid(gw.address, client.name, "vpn")
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
    if not gw.tunnels_ipv6:
        # The tunnel has no IPv6: all traffic must use it (iOS 14+, macOS 11+), so IPv6
        # has no way out while connected; the LAN stays reachable.
        ikev2["IncludeAllNetworks"] = 1
        ikev2["ExcludeLocalNetworks"] = 1
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": stable_uuid(gw.address, client.name, "profile"),
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
    ike = IkeSuite(encr, None if is_aead(encr) else prf, prf, by_apple_dh[i["DiffieHellmanGroup"]])
    cenc = by_apple_encr[c["EncryptionAlgorithm"]]
    esp = EspSuite(
        cenc,
        None if is_aead(cenc) else by_apple_integ[c["IntegrityAlgorithm"]],
        by_apple_dh[c["DiffieHellmanGroup"]] if ikev2.get("EnablePFS") else None,
    )
    return ike.keywords(), esp.keywords()
