"""swanctl.conf texts for the lab: a minimal road-warrior gateway and its clients.

Kept as plain text templates (not generated through swand) so the lab can check swand
against configurations written the way an administrator writes them.
"""

from __future__ import annotations

from pathlib import Path

IKE_PROPOSAL = "aes256-sha384-prfsha384-ecp384"
ESP_PROPOSAL = "aes256gcm16-ecp384"


def gateway_conf(
    *, gateway_id: str = "vpn.lab.test", pool: str = "10.8.0.128/25",
    local_ts: str | None = None, conn: str = "rw", child: str = "rw",
    dpd_delay: str = "2s", extra_conn: str = "", pool6: str | None = None,
    dns6: str | None = None,
) -> str:
    """Gateway accepting any client certificate of the lab CA, handing out `pool` (and
    `pool6` if given, e.g. "fd00:8::1000/116", which adds ::/0 to `local_ts`; `dns6`: an
    IPv6 DNS server pushed with it)."""
    if local_ts is None:
        local_ts = "0.0.0.0/0, ::/0" if pool6 else "0.0.0.0/0"
    pools = "pool4, pool6" if pool6 else "pool4"
    dns6_line = f"        dns = {dns6}\n" if dns6 else ""
    pool6_section = f"""    pool6 {{
        addrs = {pool6}
{dns6_line}    }}
""" if pool6 else ""
    return f"""connections {{
    {conn} {{
        version = 2
        proposals = {IKE_PROPOSAL}
        encap = yes
        dpd_delay = {dpd_delay}
        pools = {pools}
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
{pool6_section}}}
"""


def client_conf(
    *, client_id: str, cert: str, gateway: str = "192.0.2.1",
    gateway_id: str = "vpn.lab.test", conn: str = "rw", child: str = "rw",
    remote_ts: str | None = None, start_action: str = "none", dpd_delay: str = "2s",
    ipv6: bool = False,
) -> str:
    """Road warrior asking for a virtual IP (`ipv6`: an IPv6 one too) and tunnelling
    `remote_ts` (default everything) to `gateway`."""
    vips = "0.0.0.0, ::" if ipv6 else "0.0.0.0"
    if remote_ts is None:
        remote_ts = "0.0.0.0/0, ::/0" if ipv6 else "0.0.0.0/0"
    return f"""connections {{
    {conn} {{
        version = 2
        remote_addrs = {gateway}
        vips = {vips}
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


def reference_ipsec_files(which: str) -> tuple[str, str]:
    """(ipsec.conf, ipsec.secrets) of the reference setup as docs/service.md shows them:
    `which` is "gateway" or "t520". Read from the docs, so the docs stay what is tested."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "service.md"
    marker = "# /etc/ipsec.conf on the home server t520" if which == "t520" else \
        "# /etc/ipsec.conf — the reference setup"
    text = docs.read_text()
    block = text[text.index(marker):]
    block = block[:block.index("```")]
    conf, _, secrets = block.partition("# /etc/ipsec.secrets\n")
    return conf, secrets
