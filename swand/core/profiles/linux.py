"""Linux: a swanctl.conf connection for charon on the client and the `[keepalive]`
snippet for swand there (pure)."""

from __future__ import annotations

import json
import re

from swand.core.profiles.common import (
    ClientInfo,
    GatewayInfo,
    ProfileError,
    section_name,
    swanctl_quote,
)


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
        f"        remote_addrs = {swanctl_quote(gw.address)}",
        "        vips = 0.0.0.0",
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
