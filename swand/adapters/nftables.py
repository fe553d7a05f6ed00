"""The nftables backend: ``table inet swand`` through libnftables' JSON API.

Debian's ``python3-nftables`` (the ``nftables`` module, a ctypes wrapper of libnftables)
is not on PyPI; the project's virtualenv is made with ``--system-site-packages`` by
``dev.sh`` so it is importable there (``apt install python3-nftables``).

A pass lists swand's table (JSON: chains, and per rule its handle and comment), plans
with the same pure diff as the legacy backend (`swand.core.firewall.diff_chain`, on the
rules' tags), and sends every change as *one* JSON batch: libnftables turns it into one
netlink transaction, applied atomically or not at all. Nothing is sent when the table
already holds exactly the desired rules. Rule positions are expressed with handles:
deletes by handle; new rules before the kept rule that follows them (``insert`` with its
handle) or, at the end of a chain, appended (``add``).

Everything runs on one worker thread that owns the libnftables context.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import replace
from typing import Any

from swand.adapters.firewall_backend import ApplyReport, FirewallBackendError, ThreadedBackend
from swand.core.backoff import Backoff
from swand.core.firewall import DeleteRule, DesiredFirewall, InsertRule, Rule, diff_chain
from swand.core.nftables import (
    CHAINS_BY_NAME,
    NFT_CHAINS,
    NFT_FAMILY,
    NFT_TABLE,
    chain_matches,
    nft_chains,
    rule_json,
)
from swand.log import get_logger

log = get_logger("swand.nftables")

_TABLE = {"family": NFT_FAMILY, "name": NFT_TABLE}  # the table itself
_IN = {"family": NFT_FAMILY, "table": NFT_TABLE}  # an object inside it


def _short(err: object) -> str:
    """libnftables echoes the whole batch after the error: keep the first line."""
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else "unknown error"


def nftables_available() -> bool:
    """Whether libnftables' Python binding can be imported here."""
    try:
        # inside: python3-nftables is a Debian package that may be missing (then only
        # legacy iptables is available), and this import is the test for it
        import nftables  # noqa: F401
    except ImportError:
        return False
    return True


def nftables_has_rules(ignore: str = f"{NFT_FAMILY} {NFT_TABLE}") -> bool:
    """True when nftables holds a table other than swand's own (``nft list tables``)."""
    nft = shutil.which("nft")
    if not nft:
        return False
    try:
        out = subprocess.run(
            [nft, "list", "tables"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.strip().startswith("table ") and line.strip() != f"table {ignore}"
               for line in out.splitlines())


# --- reading: a raw netlink dump of swand's table ------------------------------------
# libnftables lists 2,000 rules in ~120 ms (it decodes every expression into its cache and
# formats JSON); swand needs only chain definitions and each rule's handle and comment.

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE = 1, 4, 7
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFPROTO_INET = 1
_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
_VERDICTS = {0: "drop", 1: "accept"}


class _DumpInterrupted(Exception):
    pass


def _attrs(buf: bytes, off: int, end: int, only: frozenset[int] | None = None
           ) -> dict[int, bytes]:
    """Top-level netlink attributes (copying only the kinds in `only`, if given)."""
    out: dict[int, bytes] = {}
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4:
            break
        kind &= 0x3FFF
        if only is None or kind in only:
            out[kind] = buf[off + 4: off + length]
        off += (length + 3) & ~3
    return out


_RULE_ATTRS = frozenset({1, 2, 3, 7})  # NFTA_RULE_TABLE, _CHAIN, _HANDLE, _USERDATA


def _dump(msg_type: int, table: str, only: frozenset[int] | None = None
          ) -> list[dict[int, bytes]]:
    """One NFT_MSG_GET* dump of `table` (inet): the top-level attributes of each reply."""
    name = table.encode() + b"\0"
    attr = _NLA.pack(4 + len(name), 1) + name + bytes(-len(name) % 4)  # NFTA_*_TABLE
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0) + attr
    kind = (NFNL_SUBSYS_NFTABLES << 8) | msg_type
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.send(_NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        replies: list[dict[int, bytes]] = []
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, mtype, flags, _, _ = _NLMSG.unpack_from(data, off)
                if mtype == NLMSG_DONE:
                    return replies
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    if err == errno.ENOENT:
                        return []
                    raise OSError(err, os.strerror(err))
                if flags & NLM_F_DUMP_INTR:
                    raise _DumpInterrupted
                # the kernel filters rule dumps by table, but not chain dumps
                attrs = _attrs(data, off + 20, off + length, only)
                if data[off + 16] == NFPROTO_INET and attrs.get(1) == name:
                    replies.append(attrs)
                off += (length + 3) & ~3


def _cstr(value: bytes | None) -> str:
    return (value or b"").split(b"\0", 1)[0].decode(errors="replace")


def _comment(userdata: bytes | None) -> str | None:
    """NFTNL_UDATA_RULE_COMMENT (type 0) from a rule's userdata TLVs."""
    off, data = 0, userdata or b""
    while off + 2 <= len(data):
        kind, length = data[off], data[off + 1]
        if kind == 0:
            return _cstr(data[off + 2: off + 2 + length])
        off += 2 + length
    return None


def read_table_netlink(table: str = NFT_TABLE) -> _Observed:
    """swand's table straight from three netlink dumps (the table, its chains, its rules).

    Sets, maps, stateful objects and flowtables are not dumped (swand has none): the
    table's use count says whether someone added any (`_Observed.has_foreign_objects`)."""
    for _ in range(5):
        try:
            return _read_table_netlink(table)
        except _DumpInterrupted:  # a transaction ran during the dump: read again
            continue
    raise FirewallBackendError(f"nftables table {table}: dump kept being interrupted")


def _read_table_netlink(table: str) -> _Observed:
    obs = _Observed()
    for found in _dump(NFT_MSG_GETTABLE, table):
        obs.exists = True
        obs.table_use = struct.unpack(">I", found[3])[0] if 3 in found else 0  # _USE
    if not obs.exists:
        return obs
    for chain in _dump(NFT_MSG_GETCHAIN, table):
        name = _cstr(chain.get(3))
        info: dict[str, Any] = {"name": name}
        if 4 in chain:  # NFTA_CHAIN_HOOK
            hook = _attrs(chain[4], 0, len(chain[4]))
            info["hook"] = _HOOKS.get(struct.unpack(">I", hook[1])[0]) if 1 in hook else None
            info["prio"] = struct.unpack(">i", hook[2])[0] if 2 in hook else None
            info["type"] = _cstr(chain.get(7))
            if 5 in chain:
                info["policy"] = _VERDICTS.get(struct.unpack(">I", chain[5])[0], "?")
        obs.chains[name] = info
        obs.rules[name] = []
    for rule in _dump(NFT_MSG_GETRULE, table, _RULE_ATTRS):
        comment = _comment(rule.get(7))
        tag = comment if comment and comment.startswith("swand:") else None
        handle = struct.unpack(">Q", rule[3])[0]
        obs.rules.setdefault(_cstr(rule.get(2)), []).append((handle, tag))
    return obs


class _Observed:
    """swand's table as listed: chains (JSON) and their rules as (handle, tag)."""

    def __init__(self) -> None:
        self.exists = False
        self.chains: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, list[tuple[int, str | None]]] = {}
        self.other: list[dict[str, Any]] = []  # sets, maps, ... someone added
        #: the kernel's count of chains, named sets, objects and flowtables in the table
        self.table_use = 0

    @property
    def has_foreign_objects(self) -> bool:
        return self.table_use > len(self.chains)


class NftablesBackend(ThreadedBackend):
    """Programs ``table inet swand`` (see the module docstring)."""

    name = "nftables"
    thread_name = "swand-nft"

    def __init__(self, max_attempts: int = 3) -> None:
        super().__init__()
        self.max_attempts = max_attempts
        self._nft: Any = None

    async def observe(self) -> dict[str, list[str | None]]:
        def observe() -> dict[str, list[str | None]]:
            obs = read_table_netlink()
            return {c: [t for _, t in rules] for c, rules in obs.rules.items()}

        return await self._run(observe)

    # -- worker thread --------------------------------------------------------------

    def _ctx(self) -> Any:
        if self._nft is None:
            try:
                import nftables  # inside: optional, see nftables_available
            except ImportError:
                raise FirewallBackendError(
                    "[firewall] backend = \"nftables\" needs libnftables' Python binding: "
                    "apt install python3-nftables (and a virtualenv with "
                    "--system-site-packages)"
                ) from None
            nft = nftables.Nftables()
            nft.set_json_output(True)
            nft.set_handle_output(True)
            self._nft = nft
        return self._nft

    def _list(self) -> _Observed:
        nft = self._ctx()
        rc, out, err = nft.json_cmd({"nftables": [{"list": {"table": _TABLE}}]})
        obs = _Observed()
        if rc != 0:
            if "No such file or directory" in str(err):
                return obs
            raise FirewallBackendError(f"nft list table {NFT_FAMILY} {NFT_TABLE}: {_short(err)}")
        obs.exists = True
        for item in out.get("nftables", []):
            if "chain" in item:
                chain = item["chain"]
                obs.chains[chain["name"]] = chain
                obs.rules.setdefault(chain["name"], [])
            elif "rule" in item:
                rule = item["rule"]
                comment = rule.get("comment")
                tag = comment if isinstance(comment, str) and comment.startswith("swand:") \
                    else None
                obs.rules.setdefault(rule["chain"], []).append((rule["handle"], tag))
            elif "table" not in item and "metainfo" not in item:
                obs.other.append(item)
        return obs

    def apply_sync(self, desired: DesiredFirewall) -> ApplyReport:
        started = time.perf_counter()
        want = nft_chains(desired)
        backoff = Backoff(0.02, 0.5)
        for attempt in range(1, self.max_attempts + 1):
            obs = read_table_netlink()
            if obs.has_foreign_objects:  # rare: let libnftables name them, with handles
                obs.other = self._list().other
            batch, counts = self._plan(want, obs)
            report = ApplyReport(self.name, rules_desired=sum(len(r) for r in want.values()))
            if not batch:
                return replace(report, seconds=time.perf_counter() - started, attempts=attempt)
            rc, _, err = self._ctx().json_cmd({"nftables": batch})
            if rc == 0:
                return replace(
                    report, changed_tables=(f"{NFT_FAMILY}/{NFT_TABLE}",),
                    inserted=counts["ins"], deleted=counts["del"],
                    chains_created=counts["cc"], chains_deleted=counts["dc"],
                    seconds=time.perf_counter() - started, attempts=attempt,
                )
            # a concurrent change (a handle that vanished): re-read and re-plan
            log.warning("nftables transaction failed, retrying", error=_short(err),
                        attempt=attempt)
            time.sleep(backoff.next_delay())
        raise FirewallBackendError(f"nftables transaction kept failing: {_short(err)}")

    def _plan(self, want: dict[str, tuple[Rule, ...]], obs: _Observed
              ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        counts = {"ins": 0, "del": 0, "cc": 0, "dc": 0}
        batch: list[dict[str, Any]] = []
        if not want:
            if obs.exists:
                batch.append({"delete": {"table": _TABLE}})
                counts["dc"] = len(obs.chains)
            return batch, counts
        if not obs.exists:
            batch.append({"add": {"table": _TABLE}})  # idempotent if it exists, empty
        # foreign objects and chains swand does not want (or that changed their hook)
        for item in obs.other:
            kind, body = next(iter(item.items()))
            if isinstance(body, dict) and "handle" in body:
                batch.append({"delete": {kind: {**_IN, "handle": body["handle"]}}})
        fresh: set[str] = set()
        for name, chain in obs.chains.items():
            nchain = CHAINS_BY_NAME.get(name)
            if name in want and nchain is not None and chain_matches(chain, nchain):
                continue
            batch.append({"flush": {"chain": {**_IN, "name": name}}})
            batch.append({"delete": {"chain": {**_IN, "name": name}}})
            counts["dc"] += 1
        for nchain in NFT_CHAINS.values():
            name = nchain.name
            if name not in want:
                continue
            rules = want[name]
            existing = name in obs.chains and chain_matches(obs.chains[name], nchain)
            if not existing:
                batch.append({"add": {"chain": nchain.json()}})
                counts["cc"] += 1
                fresh.add(name)
                batch += [{"add": {"rule": rule_json(r, name)}} for r in rules]
                counts["ins"] += len(rules)
                continue
            observed = obs.rules.get(name, [])
            ops = diff_chain(name, rules, [t for _, t in observed])
            if not ops:
                continue
            deleted = {op.index for op in ops if isinstance(op, DeleteRule)}
            for index in sorted(deleted, reverse=True):
                batch.append({"delete": {"rule": {**_IN, "chain": name,
                                                   "handle": observed[index][0]}}})
            counts["del"] += len(deleted)
            kept = {observed[i][1]: observed[i][0] for i in range(len(observed))
                    if i not in deleted}
            new = {op.rule.tag for op in ops if isinstance(op, InsertRule)}
            batch += _placed_inserts(name, rules, kept, new)
            counts["ins"] += len(new)
        return batch, counts


def _placed_inserts(chain: str, rules: tuple[Rule, ...], kept: dict[str | None, int],
                    new: set[str]) -> list[dict[str, Any]]:
    """Commands that put each new rule at its place between the kept ones.

    A run of new rules goes *before* the kept rule that follows it (``insert`` with that
    rule's handle; inserts before one handle keep their batch order), or at the end
    (``add``) when no kept rule follows. (libnftables 1.0.6 ignores the handle of a JSON
    ``add``, so "after the preceding rule" cannot be said.)
    """
    out: list[dict[str, Any]] = []
    run: list[Rule] = []
    for r in rules:
        if r.tag in new:
            run.append(r)
            continue
        follower = kept[r.tag]
        out += [{"insert": {"rule": {**rule_json(x, chain), "handle": follower}}} for x in run]
        run.clear()
    out += [{"add": {"rule": rule_json(x, chain)}} for x in run]
    return out
