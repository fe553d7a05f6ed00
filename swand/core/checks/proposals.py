"""IKE/ESP proposals (what charon and Windows accept) and rekeying."""

from __future__ import annotations

import re
from collections.abc import Iterator

from swand.core import profiles
from swand.core.checks.base import (
    CheckInput,
    Finding,
    _connections,
    _is_road_warrior,
    _list,
    _serves_windows,
    finding_at,
)
from swand.core.proposals import Proposal, is_charon6_keyword, tokenize
from swand.core.settings import Section

# --- proposals --------------------------------------------------------------------------

#: the curve of an ECDSA certificate -> the DH group Windows couples it with
CURVE_GROUP = {"secp256r1": "ecp256", "secp384r1": "ecp384", "secp521r1": "ecp521"}


def parse_proposals(value: str) -> list[Proposal]:
    """A proposal list as written, each unvalidated (findings name what is wrong)."""
    return [tokenize(text) for text in _list(value)]


def proposal_problem(p: Proposal, kind: str) -> str | None:
    """Why charon would reject this proposal, or None (see `Proposal.problem`)."""
    return p.problem(kind)


def windows_can_negotiate(p: Proposal, kind: str) -> bool:
    """Could Windows' built-in client agree on this proposal (with the right PowerShell
    settings)? charon's `default` proposals include one it can. Answered by the suite
    search `swand client add` makes the Windows profile with, so the two never disagree."""
    if p.is_default:
        return True
    # charon 6.0's additional key exchanges have their own finding (proposal-charon6)
    q = p.without_charon6()
    if q.problem(kind) is not None:
        return False
    if kind == "ike":
        return profiles.windows_ike_suite((q,)) is not None
    return profiles.windows_esp_suite((q,)) is not None


def _proposal_settings(conn: Section) -> Iterator[tuple[str, Section, str]]:
    """(kind, section, key) of every proposal list of a connection and its children."""
    yield "ike", conn, "proposals"
    children = conn.sections.get("children")
    for child in children.sections.values() if children else ():
        yield "esp", child, "esp_proposals"
        yield "ah", child, "ah_proposals"


def check_proposals(inp: CheckInput) -> list[Finding]:
    """Unknown keywords and proposals charon rejects; suites Windows cannot negotiate."""
    out: list[Finding] = []
    for conn in _connections(inp.tree):
        windows = _serves_windows(conn, inp.windows)
        for kind, sec, key in _proposal_settings(conn):
            setting = sec.settings.get(key)
            if setting is None:
                continue  # charon's defaults: valid, and include a Windows suite
            proposals = parse_proposals(setting.value)
            valid = []
            for p in proposals:
                newer = [t for t in p.tokens if is_charon6_keyword(t)]
                if newer:
                    out.append(finding_at(
                        setting.origin, "warning", "proposal-charon6",
                        f"{sec.path}.{key}: '{p.text}': {', '.join(newer)} need charon 6.0 "
                        "(additional key exchanges / ML-KEM); charon 5.9 rejects the "
                        "connection", "run charon 6.0, or drop them for 5.9"))
                problem = proposal_problem(p, kind)
                if problem:
                    out.append(finding_at(
                        setting.origin, "error", "proposal-invalid",
                        f"{sec.path}.{key}: '{p.text}': {problem}",
                        "use strongSwan keywords, e.g. aes256-sha384-prfsha384-ecp384 (IKE) or "
                        "aes256gcm16-ecp384 (ESP)",
                    ))
                else:
                    valid.append(p)
            if windows and kind != "ah" and valid and not any(
                    windows_can_negotiate(p, kind) for p in valid):
                suite = ("aes256-sha384-prfsha384-ecp384" if kind == "ike"
                         else "aes256gcm16-ecp384")
                out.append(finding_at(
                    setting.origin, windows, f"windows-{kind}",
                    f"{sec.path}.{key}: no proposal Windows' built-in client can negotiate",
                    f"add {suite} (AES-GCM-256/SHA-384/ECP-384 works with Windows)",
                ))
    return out


# --- rekeying -----------------------------------------------------------------------------

def _seconds(value: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not m:
        return None
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * factor


def check_rekey(inp: CheckInput) -> list[Finding]:
    """rekey_time ≠ 0 on road-warrior connections: Windows behind NAT drops rekeys the
    responder starts, and the SA dies. charon's defaults are 4h (IKE) and 1h (CHILD)."""
    out: list[Finding] = []
    for conn in _connections(inp.tree):
        if not _is_road_warrior(conn):
            continue
        targets: list[tuple[Section, str]] = [(conn, "4h")]
        children = conn.sections.get("children")
        targets += [(c, "1h") for c in (children.sections.values() if children else ())]
        for sec, default in targets:
            setting = sec.settings.get("rekey_time")
            value = setting.value if setting else default
            if _seconds(value) == 0:
                continue
            origin = setting.origin if setting else sec.origin
            what = "set to " + value if setting else f"not set (default {default})"
            out.append(finding_at(
                origin, "warning", "rekey-responder",
                f"{sec.path}: rekey_time {what} on a road-warrior connection: Windows behind "
                "NAT drops rekeys the gateway starts",
                f"set rekey_time = 0 in {sec.path} (the clients rekey themselves)",
            ))
    return out
