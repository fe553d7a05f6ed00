"""Linux: a swanctl.conf connection for charon on the client and the `[keepalive]`
snippet for swand there (pure)."""

from __future__ import annotations

import json
import re

from swand.core.profiles.common import (
    IPV6_HALVES,
    ClientInfo,
    GatewayInfo,
    ProfileError,
    section_name,
    swanctl_quote,
)

#: `unreachable` routes for both halves of IPv6 while the tunnel is up: answered locally,
#: so no IPv6 packet reaches the bare network. Loopback, the client's own addresses,
#: link-local and on-link prefixes stay reachable (the local table and longer prefixes
#: come first). charon's updown runs `2>&1 <value>` through /bin/sh, hence `sh -c`.
BLOCK_IPV6_UPDOWN = (
    "/bin/sh -c 'case $PLUTO_VERB in "
    f"up-*) {'; '.join(f'ip -6 route replace unreachable {r}' for r in IPV6_HALVES)};; "
    f"down-*) {'; '.join(f'ip -6 route del unreachable {r}' for r in IPV6_HALVES)};; "
    "esac'"
)

BLOCK_IPV6_LINES = [
    "                # The gateway tunnels no IPv6: block it while the tunnel is up, so it",
    "                # never leaks around the tunnel (needs charon's updown plugin).",
    f"                updown = {swanctl_quote(BLOCK_IPV6_UPDOWN)}",
]


def linux_swanctl_conf(
    gw: GatewayInfo, client: ClientInfo, *, p12_password: str, encap: bool = False,
    local_id: str | None = None, conn_name: str | None = None, dpd_delay: str = "30s",
) -> str:
    """`NAME.swanctl.conf` for charon on a Linux client.

    IPv6 follows the gateway: a gateway that tunnels IPv6 gets `vips = 0.0.0.0, ::` (its
    local_ts, ::/0 included, is the remote_ts here); one that does not gets an updown
    command that blocks IPv6 while the tunnel is up (`BLOCK_IPV6_UPDOWN`).

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
        f"        remote_addrs = {swanctl_quote(gw.address)}",
        f"        vips = {'0.0.0.0, ::' if gw.tunnels_ipv6 else '0.0.0.0'}",
        f"        proposals = {ike}",
        "        mobike = yes",
        f"        encap = {'yes' if encap else 'no'}",
        f"        dpd_delay = {dpd_delay}",
        "        keyingtries = 0",
        "        local {",
        "            auth = pubkey",
        f"            id = {swanctl_quote(local_id or client.san)}",
        "        }",
        "        remote {",
        "            auth = pubkey",
        f"            id = {swanctl_quote(gw.identity)}",
        "        }",
        "        children {",
        f"            {name} {{",
        f"                remote_ts = {','.join(gw.local_ts)}",
        f"                esp_proposals = {esp}",
        "                start_action = start",
        "                dpd_action = restart",
        "                close_action = start",
        *([] if gw.tunnels_ipv6 else BLOCK_IPV6_LINES),
        "            }",
        "        }",
        "    }",
        "}",
        "secrets {",
        f"    pkcs12-{section_name(client.name)} {{",
        f"        file = {swanctl_quote(client.name + '.p12')}",
        f"        secret = {swanctl_quote(p12_password)}",
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
