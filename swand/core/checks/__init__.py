"""`swand check`'s findings: the classic mistakes of an IKEv2 road-warrior gateway, found
in a parsed swanctl.conf, its credential files and (read-only) facts about the running
system.

Pure: the command layer (`swand.commands.check`) reads the files, probes the system and
hands everything in as `CheckInput` / `SystemFacts`; every function here only looks.
Each finding names a file and line, a severity and a one-line fix.

"Serves Windows" (swand.toml `[check] windows`): `auto` treats every road-warrior
connection (one with `pools`) whose clients authenticate with certificates or EAP as
serving Windows' built-in client, and reports what Windows cannot negotiate as warnings;
`yes` makes those errors; `no` skips them. A "road-warrior connection" is one with `pools`.
"""

from __future__ import annotations

import re

from swand.core.checks.base import (
    EXPIRY_WARNING,
    IKE_INTERMEDIATE,
    CheckInput,
    CredentialFile,
    Finding,
    IPInterface,
    IPNetwork,
    Severity,
    SystemFacts,
    finding_at,
    parse_where,
)
from swand.core.checks.certificates import (
    Identity,
    cert_has_identity,
    chains_to_ca,
    check_certificates,
    check_client_cert_curves,
    check_key_modes,
    load_certificate,
    load_private_key,
    parse_identity,
)
from swand.core.checks.ipv6 import (
    ULA,
    check_ipv6,
)
from swand.core.checks.keepalive import (
    check_keepalive,
)
from swand.core.checks.pools import (
    ConfiguredPool,
    check_pools,
    check_remote_ids,
    pools_of,
)
from swand.core.checks.proposals import (
    CURVE_GROUP,
    check_proposals,
    check_rekey,
    parse_proposals,
    proposal_problem,
    windows_can_negotiate,
)
from swand.core.checks.system import (
    check_system,
    ruleset_has_mss_clamp,
    ruleset_nat_covers,
)
from swand.core.settings import Section

# --- everything ---------------------------------------------------------------------------

def settings_warnings(tree: Section) -> list[Finding]:
    """What strongSwan would merely log while parsing (missing referenced sections...).
    An `include` glob that matches nothing is normal (conf.d/*.conf) and not reported."""
    out = []
    for text in tree.warnings:
        if "no files found matching" in text and re.search(r"include '[^']*[*?\[]", text):
            continue
        where, _, message = text.partition(": ")
        file, line = parse_where(where)
        out.append(Finding(file, line, "warning", "syntax-warning", message,
                           "fix the reference or remove it"))
    return out


def run_checks(
    inp: CheckInput, facts: SystemFacts | None = None, firewall_enabled: bool = True,
) -> list[Finding]:
    """Every check over one configuration, sorted by file and line."""
    out: list[Finding] = []
    out += settings_warnings(inp.tree)
    out += check_proposals(inp)
    out += check_rekey(inp)
    out += check_certificates(inp)
    out += check_client_cert_curves(inp)
    out += check_pools(inp, facts)
    out += check_remote_ids(inp)
    out += check_keepalive(inp)
    out += check_ipv6(inp, facts)
    if facts is not None:
        out += check_system(inp, facts, firewall_enabled)
    return sorted(dict.fromkeys(out), key=lambda f: (f.file, f.line, f.severity, f.code))

__all__ = [
    "CURVE_GROUP",
    "EXPIRY_WARNING",
    "IKE_INTERMEDIATE",
    "ULA",
    "CheckInput",
    "ConfiguredPool",
    "CredentialFile",
    "Finding",
    "IPInterface",
    "IPNetwork",
    "Identity",
    "Severity",
    "SystemFacts",
    "cert_has_identity",
    "chains_to_ca",
    "check_certificates",
    "check_client_cert_curves",
    "check_ipv6",
    "check_keepalive",
    "check_key_modes",
    "check_pools",
    "check_proposals",
    "check_rekey",
    "check_remote_ids",
    "check_system",
    "finding_at",
    "load_certificate",
    "load_private_key",
    "parse_identity",
    "parse_proposals",
    "parse_where",
    "pools_of",
    "proposal_problem",
    "ruleset_has_mss_clamp",
    "ruleset_nat_covers",
    "run_checks",
    "settings_warnings",
    "windows_can_negotiate",
]
