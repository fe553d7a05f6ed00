"""Android (strongSwan app): the `.sswan` JSON profile and a validator against the keys
the app's importer reads (pure)."""

from __future__ import annotations

import base64
import json
import uuid as uuidlib
from typing import Any

from swand.core.profiles.common import ClientInfo, GatewayInfo, ProfileError, parse_proposal

#: the keys the app's VpnProfileImportActivity reads (required ones marked True); from
#: strongSwan's "Android VPN client profiles" page and the importer of app 2.5
SSWAN_KEYS: dict[str, bool] = {
    "uuid": True, "name": True, "type": True, "remote": True, "local": False,
    "ike-proposal": False, "esp-proposal": False, "dns-servers": False, "mtu": False,
    "nat-keepalive": False, "split-tunneling": False, "apps": False, "excluded-apps": False,
    "ipv6-transport": False, "proxy": False,
}
SSWAN_REMOTE_KEYS: dict[str, bool] = {
    "addr": True, "port": False, "id": False, "cert": False, "certreq": False,
    "revocation": False,
}
SSWAN_LOCAL_KEYS: dict[str, bool] = {
    "eap_id": False, "id": False, "p12": False, "rsa-pss": False, "shared_secret": False,
}
SSWAN_SPLIT_KEYS: dict[str, bool] = {
    "subnets": False, "excluded": False, "block-ipv4": False, "block-ipv6": False,
}
SSWAN_PROXY_KEYS: dict[str, bool] = {"host": True, "port": False, "exclusions": False}
SSWAN_TYPES = ("ikev2-eap", "ikev2-cert", "ikev2-cert-eap", "ikev2-eap-tls", "ikev2-byod-eap")


def sswan_profile(gw: GatewayInfo, client: ClientInfo, *, local_id: str | None = None
                  ) -> dict[str, Any]:
    """The strongSwan Android app's profile (`NAME.sswan`), p12 and CA embedded.

    The app accepts the full strongSwan proposal syntax, so the gateway's first proposals
    are passed through unchanged (its own parser validates them on import). Without
    IPv6 in the tunnel the app lets IPv6 bypass the VPN unless told to block it
    (`split-tunneling.block-ipv6`, CharonVpnService); a gateway that tunnels IPv6 hands
    out an IPv6 address and ::/0, which the app routes into the tunnel by itself.
    """
    profile: dict[str, Any] = {
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
    }
    # `default` is charon's list, not a proposal the app parses; left out, the app offers
    # strongSwan's built-in proposals itself
    for key, values in (("ike-proposal", gw.ike_proposals), ("esp-proposal", gw.esp_proposals)):
        if values[0].strip().lower() != "default":
            profile[key] = values[0]
    if not gw.tunnels_ipv6:
        profile["split-tunneling"] = {"block-ipv6": True}
    return profile


def sswan_text(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=2) + "\n"


def validate_sswan(profile: dict[str, Any]) -> list[str]:
    """Problems the Android app would have importing `profile` (empty list: fine)."""
    problems: list[str] = []

    def check(obj: dict[str, Any], known: dict[str, bool], where: str) -> None:
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
    for key, known in (("split-tunneling", SSWAN_SPLIT_KEYS), ("proxy", SSWAN_PROXY_KEYS)):
        if key not in profile:
            continue
        if isinstance(profile[key], dict):
            check(profile[key], known, f"{key}.")
        else:
            problems.append(f"{key}: must be an object")
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
