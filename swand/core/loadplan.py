"""Desired state vs what charon has -> the ordered list of VICI steps that reconcile them.

Pure. Inputs: the `DesiredState` from `swand.core.swanctl.translate`, the names charon
reports (`get-conns`, `get-pools`, `get-authorities`, `get-keys`, `get-shared`) and
swand's own `LoadRecord` (what it loaded, with which digest, and the key ids charon
returned). Reconcile, do not replay: an unchanged item produces no step at all.

Order, and why:
1. credential additions (new or changed certificates, keys, tokens, shared keys) first,
   so connections loaded next can authenticate at once;
2. authorities, then pools, then connections (loads), as swanctl --load-all does;
3. unloads of connections (+ `terminate` of their SAs when `terminate_removed`, since
   charon keeps them on unload), then of CHILD_SAs of children removed from kept
   connections, then pools, then authorities;
4. credential removals last: `unload-key` / `unload-shared` by id; a certificate cannot be
   unloaded (no `unload-cert` in VICI), so a removed or replaced certificate needs
   `clear-creds` followed at once by loading every desired credential again
   (`reload-creds`: every credential, then again every connection carrying certs,
   cacerts or pubkeys and every authority, since clear-creds also drops the certificates
   they brought). The executor runs step 4 only when every credential addition
   succeeded: a credential that does not load never costs the last good one.

Credentials swand loaded that charon no longer has (someone's `clear-creds`, e.g. a
`swanctl --load-all --clear`) show as recorded key or shared ids missing: then the plan is
a single `reload-creds` up front instead of steps 1 and 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from swand.core.swanctl import DesiredState, Item, conn_children

#: kinds whose objects charon names (get-conns/get-pools/get-authorities)
NAMED_KINDS = ("authority", "pool", "conn")


@dataclass(frozen=True)
class Observed:
    """The names charon reports (cheap to ask: a few hundred bytes each)."""

    conns: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    authorities: frozenset[str] = frozenset()
    key_ids: frozenset[str] = frozenset()
    shared_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LoadRecord:
    """What swand loaded into this charon: (kind, name) -> digest, and for keys the id
    charon returned (needed to unload it later)."""

    digests: Mapping[tuple[str, str], str] = field(default_factory=dict)
    key_ids: Mapping[str, str] = field(default_factory=dict)
    #: children of each loaded connection, to terminate CHILD_SAs of removed children
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def digest_of(self, kind: str, name: str) -> str | None:
        return self.digests.get((kind, name))


@dataclass(frozen=True)
class Step:
    """One action. `action`: load | unload | terminate | clear-creds | reload-creds |
    unload-key | unload-shared. `kind`/`name` say which object; `item` is the Item to load
    (for load steps)."""

    action: str
    kind: str
    name: str
    item: Item | None = None
    #: charon's id for unload-key / unload-shared, the ike or child name for terminate
    target: str = ""
    why: str = ""

    def __str__(self) -> str:
        label = self.item.label() if self.item else f"{self.kind} '{self.name}'"
        return f"{self.action} {label}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class LoadPlan:
    steps: tuple[Step, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.steps)

    def actions(self) -> list[str]:
        return [str(s) for s in self.steps]


def _named(desired: DesiredState, kind: str) -> Mapping[str, Item]:
    return {"conn": desired.conns, "pool": desired.pools,
            "authority": desired.authorities}[kind]


def _observed_names(observed: Observed, kind: str) -> frozenset[str]:
    return {"conn": observed.conns, "pool": observed.pools,
            "authority": observed.authorities}[kind]


def plan(
    desired: DesiredState,
    observed: Observed,
    record: LoadRecord,
    *,
    terminate_removed: bool = True,
    full: bool = False,
) -> LoadPlan:
    """The steps that make charon match `desired`.

    `full=True` (after a reconnect or charon restart) ignores the record's digests and
    loads everything again.
    """
    steps: list[Step] = []
    rec = LoadRecord() if full else record

    # 1. credential additions. Someone else's clear-creds (or a charon that lost them)
    # shows as recorded key or shared ids missing: then everything is reloaded, since
    # certificates cannot be observed cheaply and clear-creds took them too.
    creds_lost = not full and (
        any(kid not in observed.key_ids for kid in rec.key_ids.values())
        or any(name not in observed.shared_ids
               for (kind, name) in rec.digests if kind == "shared"))
    cert_removed = False
    for (kind, cname), old in rec.digests.items():
        if kind != "cert" or ("cert", cname) in desired.broken:
            continue
        if cname not in desired.certs or desired.certs[cname].digest != old:
            cert_removed = True  # removed or replaced: the old certificate must go
    if creds_lost:
        steps.append(Step("reload-creds", "cred", "*",
                          why="credentials swand loaded are gone from charon"))
    else:
        for item in desired.certs.values():
            if rec.digest_of("cert", item.name) != item.digest:
                steps.append(Step("load", "cert", item.name, item, why=_why(rec, item)))
        for item in desired.keys.values():
            if rec.digest_of("key", item.name) != item.digest:
                steps.append(Step("load", "key", item.name, item, why=_why(rec, item)))
        for item in desired.tokens.values():
            if rec.digest_of("token", item.name) != item.digest:
                steps.append(Step("load", "token", item.name, item, why=_why(rec, item)))
        for item in desired.shared.values():
            if rec.digest_of("shared", item.name) != item.digest or \
                    item.name not in observed.shared_ids:
                steps.append(Step("load", "shared", item.name, item, why=_why(rec, item)))

    # 2. named objects: loads
    for kind in NAMED_KINDS:
        present = _observed_names(observed, kind)
        for item in _named(desired, kind).values():
            if item.name not in present:
                steps.append(Step("load", kind, item.name, item, why="missing in charon"))
            elif rec.digest_of(kind, item.name) != item.digest:
                steps.append(Step("load", kind, item.name, item, why=_why(rec, item)))

    # 3. named objects: unloads (connections first: they use pools and authorities)
    for kind in reversed(NAMED_KINDS):
        wanted = _named(desired, kind)
        for name in sorted(_observed_names(observed, kind)):
            if name in wanted or (kind, name) in desired.broken:
                continue
            steps.append(Step("unload", kind, name, why="not in the configuration"))
            if kind == "conn" and terminate_removed:
                steps.append(Step("terminate", "conn", name, target=name,
                                  why="connection removed"))
        if kind == "conn" and terminate_removed:
            for name, item in wanted.items():
                old_children = rec.children.get(name, ())
                kept = set(conn_children(item))
                for child in old_children:
                    if child not in kept:
                        steps.append(Step("terminate", "child", f"{name}/{child}",
                                          target=child, why="child removed"))

    # 4. credential removals
    wanted_key_ids = {rec.key_ids[n] for n in desired.keys if n in rec.key_ids}
    wanted_key_ids |= {rec.key_ids[f"token:{n}"] for n in desired.tokens
                       if f"token:{n}" in rec.key_ids}
    # keys whose file is broken keep their last good id
    wanted_key_ids |= {rec.key_ids[n] for (k, n) in desired.broken
                       if k == "key" and n in rec.key_ids}
    if cert_removed and not creds_lost:
        steps.append(Step("clear-creds", "cred", "*", why="a certificate was removed or "
                          "replaced (VICI has no unload-cert)"))
        steps.append(Step("reload-creds", "cred", "*", why="right after clear-creds"))
    elif not creds_lost:
        # an id a key load of this same plan returns is skipped by the executor: a key
        # id is only known once charon has parsed the key
        for key_id in sorted(observed.key_ids - wanted_key_ids):
            steps.append(Step("unload-key", "key", key_id, target=key_id,
                              why="not in the configuration"))
        wanted_shared = set(desired.shared) | {n for (k, n) in desired.broken
                                               if k == "shared"}
        for shared_id in sorted(observed.shared_ids - wanted_shared):
            steps.append(Step("unload-shared", "shared", shared_id, target=shared_id,
                              why="not in the configuration"))
    return LoadPlan(tuple(steps))


def _why(rec: LoadRecord, item: Item) -> str:
    return "new" if rec.digest_of(item.kind, item.name) is None else "changed"
