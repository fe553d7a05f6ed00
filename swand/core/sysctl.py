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


def accept_ra_key(iface: str) -> str:
    return f"net/ipv6/conf/{iface}/accept_ra"


def proxy_ndp_key(iface: str) -> str:
    return f"net/ipv6/conf/{iface}/proxy_ndp"


def desired_sysctls(
    settings: SysctlSettings, pools: Sequence[Pool] = (), *, egress6: str | None = None,
    egress6_accept_ra: str | None = None, proxy_ndp: bool = False,
) -> dict[str, str]:
    """``ip_forward`` (and IPv6 forwarding when a pool hands out IPv6 addresses) and
    ``ip_no_pmtu_disc``, each only when its setting is on.

    With IPv6 forwarding the kernel ignores router advertisements on an interface whose
    ``accept_ra`` is 1 (the default), so a gateway that takes its IPv6 default route
    from RAs loses it when the route's lifetime runs out. `egress6_accept_ra` is the IPv6
    egress's current value: 1 ("accept unless forwarding") becomes 2 ("accept even
    though forwarding"), written before forwarding; 0 (the administrator's "never") is
    left alone. `proxy_ndp` (routed IPv6 mode) lets the egress answer neighbour
    solicitations for the leased addresses swand adds as proxy entries."""
    want: dict[str, str] = {}
    v6 = any("ipv6" in p.families for p in pools)
    if settings.ip_forward:
        want[IP_FORWARD] = "1"
        if v6:
            if settings.accept_ra and egress6 and (egress6_accept_ra or "").strip() == "1":
                want[accept_ra_key(egress6)] = "2"
            want[IPV6_FORWARDING] = "1"
    if proxy_ndp and v6 and egress6:
        want[proxy_ndp_key(egress6)] = "1"
    if settings.ip_no_pmtu_disc:
        want[IP_NO_PMTU_DISC] = "1"
    return want


def sysctl_changes(want: Mapping[str, str], have: Mapping[str, str | None]) -> dict[str, str]:
    """Only what differs: writing ``ip_forward`` resets per-interface settings, so an
    unchanged value must never be written again."""
    return {k: v for k, v in want.items() if (have.get(k) or "").strip() != v}
