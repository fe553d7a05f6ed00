"""swanctl.conf texts for the lab: a minimal road-warrior gateway and its clients.

Kept as plain text templates (not generated through swand) so the lab can check swand
against configurations written the way an administrator writes them.
"""

from __future__ import annotations

IKE_PROPOSAL = "aes256-sha384-prfsha384-ecp384"
ESP_PROPOSAL = "aes256gcm16-ecp384"


def gateway_conf(
    *, gateway_id: str = "vpn.lab.test", pool: str = "10.8.0.128/25",
    local_ts: str = "0.0.0.0/0", conn: str = "rw", child: str = "rw",
    dpd_delay: str = "2s", extra_conn: str = "",
) -> str:
    """Gateway accepting any client certificate of the lab CA, handing out `pool`."""
    return f"""connections {{
    {conn} {{
        version = 2
        proposals = {IKE_PROPOSAL}
        encap = yes
        dpd_delay = {dpd_delay}
        pools = pool4
        local {{
            auth = pubkey
            certs = gateway.pem
            id = {gateway_id}
        }}
        remote {{
            auth = pubkey
        }}
        children {{
            {child} {{
                local_ts = {local_ts}
                esp_proposals = {ESP_PROPOSAL}
                dpd_action = clear
            }}
        }}
{extra_conn}
    }}
}}
pools {{
    pool4 {{
        addrs = {pool}
    }}
}}
"""


def client_conf(
    *, client_id: str, cert: str, gateway: str = "192.0.2.1",
    gateway_id: str = "vpn.lab.test", conn: str = "rw", child: str = "rw",
    remote_ts: str = "0.0.0.0/0", start_action: str = "none", dpd_delay: str = "2s",
) -> str:
    """Road warrior asking for a virtual IP and tunnelling `remote_ts` to `gateway`."""
    return f"""connections {{
    {conn} {{
        version = 2
        remote_addrs = {gateway}
        vips = 0.0.0.0
        proposals = {IKE_PROPOSAL}
        encap = yes
        dpd_delay = {dpd_delay}
        local {{
            auth = pubkey
            certs = {cert}
            id = {client_id}
        }}
        remote {{
            auth = pubkey
            id = {gateway_id}
        }}
        children {{
            {child} {{
                remote_ts = {remote_ts}
                esp_proposals = {ESP_PROPOSAL}
                start_action = {start_action}
            }}
        }}
    }}
}}
"""
