"""The sysctls a road-warrior gateway needs, as a pure function of settings and pools.

Keys are paths below ``/proc/sys`` (``net/ipv4/ip_forward``) so the adapter needs no
translation; values are the exact text the kernel reports. A setting that is false means
"leave alone", never "write 0": swand does not undo what the administrator wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from swand.config import SysctlSettings
from swand.core.firewall import Pool

IP_FORWARD = "net/ipv4/ip_forward"
IP_NO_PMTU_DISC = "net/ipv4/ip_no_pmtu_disc"
IPV6_FORWARDING = "net/ipv6/conf/all/forwarding"


def desired_sysctls(settings: SysctlSettings, pools: Sequence[Pool] = ()) -> dict[str, str]:
    """``ip_forward`` (and IPv6 forwarding when a pool hands out IPv6 addresses) and
    ``ip_no_pmtu_disc``, each only when its setting is on."""
    want: dict[str, str] = {}
    if settings.ip_forward:
        want[IP_FORWARD] = "1"
        if any("ipv6" in p.families for p in pools):
            want[IPV6_FORWARDING] = "1"
    if settings.ip_no_pmtu_disc:
        want[IP_NO_PMTU_DISC] = "1"
    return want


def sysctl_changes(want: Mapping[str, str], have: Mapping[str, str | None]) -> dict[str, str]:
    """Only what differs: writing ``ip_forward`` resets per-interface settings, so an
    unchanged value must never be written again."""
    return {k: v for k, v in want.items() if (have.get(k) or "").strip() != v}
