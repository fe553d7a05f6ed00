"""swand.toml against swanctl.conf: `[keepalive] conns` that do not exist."""

from __future__ import annotations

from swand.core.checks.base import (
    CheckInput,
    Finding,
    _connections,
)

# --- swand.toml against swanctl.conf -------------------------------------------------------

def check_keepalive(inp: CheckInput) -> list[Finding]:
    """[keepalive] conns must name connections (or their children) that exist and can be
    initiated: a typo would silently keep nothing up."""
    names = {c.name for c in _connections(inp.tree)}
    children = {
        child for c in _connections(inp.tree)
        for child in (c.sections["children"].sections if "children" in c.sections else ())
    }
    out = []
    for name in inp.keepalive:
        if name not in names and name not in children:
            known = ", ".join(sorted(names)) or "none"
            out.append(Finding(inp.swand_toml, 0, "error", "keepalive-unknown",
                               f"[keepalive] conns names '{name}', which swanctl.conf does not "
                               f"define (connections: {known})",
                               "fix the name in swand.toml"))
    return out
