"""Client profiles derived from the gateway's own configuration (pure).

A new road-warrior client needs the same facts on every platform: where the gateway is,
which identity it proves, and one IKE and one ESP suite the gateway accepts. `common`
reads them once from the gateway's parsed swanctl.conf (`gateway_from_settings`); one
module per platform renders its import format from them:

- `windows`: `Add-VpnConnection` + `Set-VpnConnectionIPsecConfiguration` (`windows_params`,
  `windows_script`).
- `android` (strongSwan app): the `.sswan` JSON profile (`sswan_profile`).
- `apple`: a `.mobileconfig` plist (`mobileconfig`), pkcs12 + root CA + IKEv2 VPN payload.
- `linux`: a swanctl.conf connection for charon on the client (`linux_swanctl_conf`) and
  the `[keepalive]` snippet for swand there.
- `static`, the gateway side: the pinned connection + one-address pool for `--static-ip`
  (`gateway_static_conf`).

No file, socket or crypto library is touched here: the caller passes certificate facts
(DER bytes, names) in, and gets text, dicts or bytes out. Everything is re-exported here,
so callers write `profiles.windows_script(...)`.
"""

from __future__ import annotations

from swand.core.profiles.android import (
    SSWAN_KEYS,
    SSWAN_LOCAL_KEYS,
    SSWAN_PROXY_KEYS,
    SSWAN_REMOTE_KEYS,
    SSWAN_SPLIT_KEYS,
    SSWAN_TYPES,
    sswan_profile,
    sswan_text,
    validate_sswan,
)
from swand.core.profiles.apple import (
    AppleParams,
    apple_params,
    apple_suites_from_plist,
    mobileconfig,
)
from swand.core.profiles.common import (
    ClientInfo,
    EspSuite,
    GatewayInfo,
    IkeSuite,
    ProfileError,
    Proposal,
    find_road_warrior,
    gateway_from_settings,
    parse_proposal,
    parse_proposals,
    section_name,
    split_list,
)
from swand.core.profiles.linux import client_conn_name, keepalive_snippet, linux_swanctl_conf
from swand.core.profiles.static import (
    StaticLease,
    check_static_ip,
    gateway_static_conf,
    static_section,
)
from swand.core.profiles.windows import (
    WindowsParams,
    parse_windows_script,
    windows_curve_for,
    windows_esp_suite,
    windows_ike_suite,
    windows_params,
    windows_script,
    windows_suites_from_params,
)
from swand.core.proposals import DEFAULT_ESP, DEFAULT_IKE

__all__ = [
    "DEFAULT_ESP",
    "DEFAULT_IKE",
    "SSWAN_KEYS",
    "SSWAN_LOCAL_KEYS",
    "SSWAN_PROXY_KEYS",
    "SSWAN_REMOTE_KEYS",
    "SSWAN_SPLIT_KEYS",
    "SSWAN_TYPES",
    "AppleParams",
    "ClientInfo",
    "EspSuite",
    "GatewayInfo",
    "IkeSuite",
    "ProfileError",
    "Proposal",
    "StaticLease",
    "WindowsParams",
    "apple_params",
    "apple_suites_from_plist",
    "check_static_ip",
    "client_conn_name",
    "find_road_warrior",
    "gateway_from_settings",
    "gateway_static_conf",
    "keepalive_snippet",
    "linux_swanctl_conf",
    "mobileconfig",
    "parse_proposal",
    "parse_proposals",
    "parse_windows_script",
    "section_name",
    "split_list",
    "sswan_profile",
    "sswan_text",
    "static_section",
    "validate_sswan",
    "windows_curve_for",
    "windows_esp_suite",
    "windows_ike_suite",
    "windows_params",
    "windows_script",
    "windows_suites_from_params",
]
