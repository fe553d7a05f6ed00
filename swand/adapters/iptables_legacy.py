"""The legacy-iptables backend: python-iptables' libiptc for writing, a raw table dump for
reading, one worker thread for both.

Why this shape (measured, see bench/README.md "Firewall"):

- *Reading.* python-iptables turns every rule into Rule/Match objects (~125 us each: a
  drift check over 2,000 rules would take 0.25 s). swand only needs the tag of each rule
  in its chains and the built-in chains it jumps from, so a pass reads the table with the
  same two getsockopt calls libiptc uses (``IPT_SO_GET_INFO`` / ``GET_ENTRIES``) and walks
  the blob with ``struct``: chain boundaries from the hook offsets and ERROR heads, the
  tag from the ``comment`` match. An unchanged pass ends there and writes nothing.
- *Writing.* Building each rule with python-iptables' Rule API costs ~0.5 ms (libxtables
  parsing per option). Rules of one shape differ only in addresses, reqid and tag, so the
  Rule API builds one *template* entry per shape (with sentinel reqid and tag), and every
  rule of that shape is the template's bytes with those fields patched (a few
  microseconds). The finished entries go through libiptc (``iptc_insert_entry``,
  ``iptc_delete_num_entry``, ``iptc_commit``) via python-iptables' handle, so the table is
  swapped atomically, one commit per table per pass, like ``iptables-restore --noflush``.
- *Concurrency.* python-iptables is not thread-safe and takes no xtables lock: everything
  runs on one dedicated thread (``iptc`` is imported there, lazily), under an flock on
  ``/run/xtables.lock`` (the lock iptables-legacy takes), around read-plan-commit. A commit
  that loses a race (EAGAIN) is retried from the read with backoff.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from swand.adapters.firewall_backend import ApplyReport, FirewallBackendError, ThreadedBackend
from swand.core.backoff import Backoff
from swand.core.firewall import (
    HOOKS,
    OWNED_PREFIX,
    TABLES,
    TAG_LENGTH,
    TAG_PREFIX,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DesiredFirewall,
    Family,
    InsertRule,
    Match,
    ObservedTable,
    Rule,
    TablePlan,
    plan,
)
from swand.log import get_logger

log = get_logger("swand.iptables")

XTABLES_LOCK = "/run/xtables.lock"


# --- backend detection ----------------------------------------------------------------


def iptables_variant(iptables: str = "iptables") -> str | None:
    """``nf_tables`` or ``legacy`` (from ``iptables --version``), None when not installed."""
    path = shutil.which(iptables)
    if not path:
        return None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "nf_tables" in out:
        return "nf_tables"
    return "legacy" if "legacy" in out or out else None


# --- xtables lock ---------------------------------------------------------------------


@contextlib.contextmanager
def xtables_lock(path: str = XTABLES_LOCK, timeout: float = 5.0) -> Iterator[None]:
    """The flock iptables(-legacy) takes, so swand never interleaves with an admin's
    ``iptables`` command (python-iptables itself takes no lock)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.005, 0.1)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FirewallBackendError(
                        f"{path}: another program has held the xtables lock for "
                        f"{timeout:g} s"
                    ) from None
                time.sleep(backoff.next_delay())
        yield
    finally:
        os.close(fd)  # closing releases the flock


# --- reading: the kernel's table blob -------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.getsockopt.argtypes = [
    ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)
]

SO_GET_INFO = 64  # IPT_SO_GET_INFO == IP6T_SO_GET_INFO
SO_GET_ENTRIES = 65
HOOK_NAMES = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_GETINFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry, underflow, n, size


@dataclass(frozen=True)
class _Layout:
    """Where the fields swand reads sit in this family's entry struct."""

    entry_size: int  # XT_ALIGN(sizeof(ipt_entry / ip6t_entry))
    offsets_at: int  # target_offset (u16), next_offset (u16)
    src: int
    addr_len: int
    af: int
    level: int


LAYOUTS: dict[Family, _Layout] = {
    # struct ipt_ip: src, dst, smsk, dmsk (4 each) ... ; then nfcache, offsets
    "ipv4": _Layout(112, 88, 0, 4, socket.AF_INET, socket.IPPROTO_IP),
    # struct ip6t_ip6: src, dst, smsk, dmsk (16 each) ... 136 bytes; then nfcache, offsets
    "ipv6": _Layout(168, 140, 0, 16, socket.AF_INET6, socket.IPPROTO_IPV6),
}
_OFFSETS = struct.Struct("=HH")
_MATCH_HEAD = struct.Struct("=H29sB")  # match_size, name, revision (then 32-byte aligned data)


def ipv6_available() -> bool:
    """False on a kernel without IPv6 (``ipv6.disable=1``): no ip6tables there."""
    return os.path.exists("/proc/sys/net/ipv6")


def _tables_present(family: Family) -> set[str]:
    """Tables that exist in this namespace; reading another one would load its module."""
    name = "/proc/net/ip_tables_names" if family == "ipv4" else "/proc/net/ip6_tables_names"
    try:
        with open(name) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        return set()


def _getsockopt(sock: socket.socket, level: int, opt: int,
                buf: ctypes.Array[ctypes.c_char]) -> None:
    size = ctypes.c_uint32(ctypes.sizeof(buf))
    if _libc.getsockopt(sock.fileno(), level, opt, buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _get_info(sock: socket.socket, lay: _Layout, table: str) -> tuple[int, ...]:
    info = ctypes.create_string_buffer(table.encode(), _GETINFO.size)
    _getsockopt(sock, lay.level, SO_GET_INFO, info)
    return _GETINFO.unpack(info.raw)[1:]


_sockets = threading.local()


def _socket(family: Family) -> socket.socket:
    """A raw socket per family and thread, kept open: opening one costs more than reading
    a small table. (A socket belongs to the network namespace it was opened in; the worker
    thread never changes namespace.)"""
    socks = getattr(_sockets, "by_family", None)
    if socks is None:
        socks = _sockets.by_family = {}
    sock = socks.get(family)
    if sock is None:
        sock = socks[family] = socket.socket(
            LAYOUTS[family].af, socket.SOCK_RAW, socket.IPPROTO_RAW
        )
    return sock


def read_table_info(family: Family, table: str) -> tuple[int, int]:
    """(num_entries, size) of one table: a cheap fingerprint of "nobody wrote meanwhile"."""
    values = _get_info(_socket(family), LAYOUTS[family], table)
    return values[11], values[12]


#: a built-in chain's (hook entry offset, underflow offset, name) in a table blob
Hook = tuple[int, int, str]


def read_table_blob(family: Family, table: str
                    ) -> tuple[tuple[int, int], bytes, tuple[Hook, ...]]:
    """(num_entries, size), the raw entries, and the hook offsets of one table -- the two
    getsockopt calls libiptc's iptc_init makes, without building its rule cache."""
    lay = LAYOUTS[family]
    sock = _socket(family)
    for attempt in range(5):
        valid, *rest = _get_info(sock, lay, table)
        hook_entry, underflow, (num, size) = rest[0:5], rest[5:10], rest[10:12]
        buf = ctypes.create_string_buffer(40 + size)
        ctypes.memmove(buf, table.encode(), len(table))
        struct.pack_into("=I", buf, 32, size)
        try:
            _getsockopt(sock, lay.level, SO_GET_ENTRIES, buf)
            break
        except OSError as exc:  # the table changed size between the two calls
            if exc.errno != errno.EAGAIN or attempt == 4:
                raise
    blob = ctypes.string_at(ctypes.addressof(buf) + 40, size)
    hooks = tuple(
        (hook_entry[h], underflow[h], HOOK_NAMES[h]) for h in range(5) if valid & (1 << h)
    )
    return (num, size), blob, hooks


def parse_tags(family: Family, blob: bytes, hooks: tuple[Hook, ...], wanted_builtins: set[str],
               ) -> dict[str, tuple[str | None, ...]]:
    """Tags per chain for swand's chains and the given built-in chains.

    Built-in chains run from their hook entry to their policy rule (the underflow); a user
    chain starts after its ERROR head and ends with an implicit RETURN (not a rule).
    """
    lay = LAYOUTS[family]
    starts = {entry: name for entry, _, name in hooks}
    underflows = {under for _, under, _ in hooks}
    chains: dict[str, list[str | None]] = {}
    current: list[str | None] | None = None
    user_chain = False
    off, end = 0, len(blob)
    unpack = _OFFSETS.unpack_from
    at = lay.offsets_at
    entry_size = lay.entry_size
    find = blob.find
    prefix = TAG_PREFIX.encode()
    while off < end:
        target_off, next_off = unpack(blob, off + at)
        if off in starts:
            name = starts[off]
            current = chains.setdefault(name, []) if name in wanted_builtins else None
            user_chain = False
        t = off + target_off
        if blob[t + 2: t + 8] == b"ERROR\0":
            if user_chain and current:
                current.pop()  # the implicit RETURN that ends a user chain
            chain = blob[t + 32: t + 62].split(b"\0", 1)[0].decode(errors="replace")
            if chain == "ERROR":
                break  # end of table
            current = chains.setdefault(chain, []) if chain.startswith(OWNED_PREFIX) else None
            user_chain = True
        elif off in underflows and not user_chain:
            current = None  # a built-in chain's policy
        elif current is not None:
            # the tag is the data of a `comment` match: 32 bytes after its header
            tag = None
            p = find(prefix, off + entry_size + 32, t)
            while p != -1:
                if blob[p - 30: p - 22] == b"comment\0":
                    tag = blob[p: p + TAG_LENGTH].decode(errors="replace")
                    break
                p = find(prefix, p + 1, t)
            current.append(tag)
        off += next_off
    return {k: tuple(v) for k, v in chains.items()}


# --- writing: entries from templates --------------------------------------------------

_REQID_SENTINEL = (0x5A17C0DE, 0x3B0BCAFE)
_TAG_SENTINEL = TAG_PREFIX + "Z" * (TAG_LENGTH - len(TAG_PREFIX))


@dataclass
class _Template:
    blob: bytes
    tag_at: tuple[int, ...]
    reqid_at: tuple[int, ...]


class _EntryFactory:
    """Builds libiptc entries; one Rule-API build per rule *shape*, bytes patching after."""

    def __init__(self, iptc: Any, family: Family) -> None:
        self.iptc = iptc
        self.family = family
        self.layout = LAYOUTS[family]
        self._templates: dict[Rule, _Template] = {}

    def entry(self, rule: Rule) -> ctypes.Array[ctypes.c_ubyte]:
        reqid = _reqid_of(rule)
        shape = replace(rule, src=None, dst=None, chain="", matches=_with_reqid(
            rule.matches, str(_REQID_SENTINEL[0]) if reqid is not None else None))
        tpl = self._templates.get(shape)
        if tpl is None:
            tpl = self._templates[shape] = self._template(shape, reqid is not None)
        buf = bytearray(tpl.blob)
        lay = self.layout
        n = lay.addr_len
        for i, net in ((0, rule.src), (1, rule.dst)):
            if net:
                addr, mask = _addr_mask(net, n)
                buf[lay.src + i * n: lay.src + (i + 1) * n] = addr
                buf[lay.src + (2 + i) * n: lay.src + (3 + i) * n] = mask
        tag = rule.tag.encode()
        for at in tpl.tag_at:
            buf[at: at + TAG_LENGTH] = tag
        if reqid is not None:
            for at in tpl.reqid_at:
                struct.pack_into("=I", buf, at, reqid)
        return (ctypes.c_ubyte * len(buf)).from_buffer(buf)

    def _build(self, rule: Rule, tag: str) -> bytes:
        """One entry through python-iptables' Rule API, always as IPv4.

        libxtables registers an extension for both families when its .so loads for the
        first one, and python-iptables then dies ("already registered") when an IPv6 rule
        asks for the same extension. Matches and targets swand uses have the same layout
        in both families (except MASQUERADE's range), so IPv6 entries are the IPv4 entry's
        matches and target behind an ip6t_entry header (`_to_ipv6`).
        """
        iptc = self.iptc
        r = iptc.Rule()
        if rule.in_iface:
            r.in_interface = rule.in_iface
        if rule.out_iface:
            r.out_interface = rule.out_iface
        if rule.proto:
            r.protocol = rule.proto
        policy_elem: dict[str, str] = {}
        for m in rule.matches:
            match = r.create_match(m.name)
            for opt, value in m.options:
                if m.name == "policy" and opt in _POLICY_ELEM_OPTIONS:
                    policy_elem[opt] = value  # see _patch_policy
                    continue
                parts = value.split(" ")
                match.set_parameter(opt, parts if len(parts) > 1 else value)
            if m.name != "policy":
                match.final_check()  # completes the data (e.g. tcp's protocol checks)
        r.create_match("comment").set_parameter("comment", tag)
        if self.family == "ipv6" and rule.target == "MASQUERADE":
            r.target = r.create_target("ACCEPT")  # placeholder, replaced in _to_ipv6
        else:
            r.target = r.create_target(rule.target)
            for opt, value in rule.target_options:
                r.target.set_parameter(opt, value)
            r.target.final_check()  # MASQUERADE's rangesize is set here
        v4 = bytearray(r.rule)
        if policy_elem:
            _patch_policy(v4, policy_elem)
        return bytes(v4) if self.family == "ipv4" else _to_ipv6(bytes(v4), rule)

    def _template(self, shape: Rule, has_reqid: bool) -> _Template:
        a = self._build(shape, _TAG_SENTINEL)
        tag_at = _find_all(a, _TAG_SENTINEL.encode())
        reqid_at: tuple[int, ...] = ()
        if has_reqid:
            b = self._build(
                replace(shape, matches=_with_reqid(shape.matches, str(_REQID_SENTINEL[1]))),
                _TAG_SENTINEL,
            )
            reqid_at = _find_all(a, struct.pack("=I", _REQID_SENTINEL[0]))
            # every byte that differs between the two builds must be a sentinel we patch
            patched = {at + k for at in reqid_at for k in range(4)}
            differ = {i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y}
            if not differ <= patched or not reqid_at:
                raise FirewallBackendError(f"cannot template rule shape {shape.spec!r}")
        if len(tag_at) != 1:
            raise FirewallBackendError(f"cannot template rule shape {shape.spec!r}")
        return _Template(a, tag_at, reqid_at)


_V4_HEAD = struct.Struct("=4s4s4s4s16s16s16s16sHBB")  # struct ipt_ip
_V6_HEAD = struct.Struct("=16s16s16s16s16s16s16s16sHBBB3x")  # struct ip6t_ip6 (136)
_IP6T_F_PROTO = 0x01
_IP6T_F_GOTO = 0x04
_IPT_F_GOTO = 0x02
#: MASQUERADE for IPv6: struct nf_nat_range (flags, min/max addr, min/max proto), all 0
_MASQUERADE6 = struct.pack("=H29sB", 32 + 40, b"MASQUERADE", 0) + bytes(40)


_POLICY_ELEM_OPTIONS = frozenset({"reqid", "proto"})
_IPPROTO = {"esp": 50, "ah": 51, "ipcomp": 108}
# struct xt_policy_elem: 4 x 16-byte addresses, spi, reqid, proto, mode, match, invert
_POLICY_ELEM = struct.Struct("=64xIIBBBB")
_POLICY_LEN_AT = 4 * 76 + 2  # xt_policy_info: pol[4], u16 flags, u16 len
_SPEC_PROTO, _SPEC_REQID = 1 << 2, 1 << 5  # struct xt_policy_spec bit fields


def _patch_policy(v4: bytearray, elem: dict[str, str]) -> None:
    """Write the first policy element (``--reqid``, ``--proto``) into the policy match.

    python-iptables cannot express it: libxt_policy counts elements in its final check,
    and python-iptables' final check re-parses the match from its printed form, which omits
    an element that was not counted yet -- so the reqid silently disappears. The element
    is a plain struct (xt_policy.h) and is written here directly.
    """
    lay = LAYOUTS["ipv4"]
    target_off, _ = _OFFSETS.unpack_from(v4, lay.offsets_at)
    off = lay.entry_size
    while off < target_off:
        size, name, _ = _MATCH_HEAD.unpack_from(v4, off)
        if name.rstrip(b"\0") == b"policy":
            data = off + 32
            match = 0
            reqid = proto = 0
            if "reqid" in elem:
                reqid, match = int(elem["reqid"]), match | _SPEC_REQID
            if "proto" in elem:
                proto, match = _IPPROTO[elem["proto"]], match | _SPEC_PROTO
            _POLICY_ELEM.pack_into(v4, data, 0, reqid, proto, 0, match, 0)
            struct.pack_into("=H", v4, data + _POLICY_LEN_AT, 1)
            return
        off += size
    raise FirewallBackendError("policy match not found in the built entry")


def _to_ipv6(v4: bytes, rule: Rule) -> bytes:
    """An ip6t_entry with the matches and target of an ipt_entry (see `_build`)."""
    v4l, v6l = LAYOUTS["ipv4"], LAYOUTS["ipv6"]
    _, _, _, _, iif, oif, iifm, oifm, proto, flags, invflags = _V4_HEAD.unpack_from(v4, 0)
    target_off, _ = _OFFSETS.unpack_from(v4, v4l.offsets_at)
    matches = v4[v4l.entry_size: target_off]
    target = _MASQUERADE6 if rule.target == "MASQUERADE" else v4[target_off:]
    v6flags = (_IP6T_F_PROTO if proto else 0) | (_IP6T_F_GOTO if flags & _IPT_F_GOTO else 0)
    head = bytearray(v6l.entry_size)
    _V6_HEAD.pack_into(head, 0, bytes(16), bytes(16), bytes(16), bytes(16), iif, oif, iifm,
                       oifm, proto, 0, v6flags, invflags)
    new_target_off = v6l.entry_size + len(matches)
    _OFFSETS.pack_into(head, v6l.offsets_at, new_target_off, new_target_off + len(target))
    return bytes(head) + matches + target


def _reqid_of(rule: Rule) -> int | None:
    for m in rule.matches:
        for opt, value in m.options:
            if m.name == "policy" and opt == "reqid":
                return int(value)
    return None


def _with_reqid(matches: tuple[Match, ...], reqid: str | None) -> tuple[Match, ...]:
    if reqid is None:
        return matches
    return tuple(
        Match(m.name, tuple((o, reqid if (m.name, o) == ("policy", "reqid") else v)
                            for o, v in m.options))
        for m in matches
    )


def _find_all(hay: bytes, needle: bytes) -> tuple[int, ...]:
    out: list[int] = []
    i = hay.find(needle)
    while i != -1:
        out.append(i)
        i = hay.find(needle, i + 1)
    return tuple(out)


def _addr_mask(net: str, n: int) -> tuple[bytes, bytes]:
    addr, _, plen = net.partition("/")
    packed = socket.inet_pton(socket.AF_INET if n == 4 else socket.AF_INET6, addr)
    bits = int(plen) if plen else n * 8
    mask = ((1 << bits) - 1) << (n * 8 - bits) if bits else 0
    return packed, mask.to_bytes(n, "big")


# --- the backend ----------------------------------------------------------------------


class _TableEdits:
    """libiptc's calls that only edit a handle's copy of a table in memory, bound so
    that they keep the GIL (`ctypes.PyDLL`). python-iptables binds them with
    `ctypes.CDLL`, which releases the GIL around each call and must win it back after:
    while the event loop runs Python (a storm's events), each of a pass's hundreds of
    inserts queues for it behind the loop (300 calls of a trivial C function on a
    thread: 0.03 ms holding the GIL, 10.6 ms releasing it beside one busy thread; on a
    storm's saturated cores, more). These calls take microseconds and make no system
    call; `iptc_init` and `iptc_commit`, which read and replace the kernel's table,
    still release it."""

    def __init__(self, iptc: Any, family: Family) -> None:
        module = iptc.ip4tc if family == "ipv4" else iptc.ip6tc
        lib = ctypes.PyDLL(module._libiptc._name)
        prefix = "iptc_" if family == "ipv4" else "ip6tc_"

        def bind(name: str) -> Any:
            fn = getattr(lib, prefix + name)
            fn.restype = ctypes.c_int
            return fn

        self.insert_entry = bind("insert_entry")
        self.delete_num_entry = bind("delete_num_entry")
        self.create_chain = bind("create_chain")
        self.flush_entries = bind("flush_entries")
        self.delete_chain = bind("delete_chain")


@dataclass
class _Worker:
    """State that lives on the worker thread only."""

    iptc: Any = None
    factories: dict[Family, _EntryFactory] = field(default_factory=dict)
    edits: dict[Family, _TableEdits] = field(default_factory=dict)


class LegacyIptablesBackend(ThreadedBackend):
    """Programs swand's chains in the legacy iptables tables (see the module docstring).

    All methods are coroutines that hand the work to one dedicated thread.
    """

    name = "legacy"
    thread_name = "swand-iptc"

    def __init__(self, *, lock_path: str = XTABLES_LOCK, lock_timeout: float = 5.0,
                 max_attempts: int = 5) -> None:
        super().__init__()
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self.max_attempts = max_attempts
        self._w = _Worker()
        self._thread: int | None = None

    async def observe(self) -> dict[tuple[Family, str], ObservedTable]:
        return await self._run(self._observe_locked)

    # -- worker thread --------------------------------------------------------------

    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._thread is None:
            self._thread = me
        elif self._thread != me:  # pragma: no cover - a programming error
            raise RuntimeError("python-iptables used outside its worker thread")

    def _load(self) -> Any:
        self._check_thread()
        if self._w.iptc is None:
            import iptc  # lazily, on this thread: it loads libxtables and kernel modules
            import iptc.ip4tc
            import iptc.ip6tc

            self._w.iptc = iptc
        return self._w.iptc

    def _observe_locked(self) -> dict[tuple[Family, str], ObservedTable]:
        self._check_thread()
        with xtables_lock(self.lock_path, self.lock_timeout):
            return {k: v[0] for k, v in self._observe(set()).items()}

    def _observe(self, wanted: set[tuple[Family, str]]
                 ) -> dict[tuple[Family, str], tuple[ObservedTable, tuple[int, int]]]:
        out: dict[tuple[Family, str], tuple[ObservedTable, tuple[int, int]]] = {}
        families: tuple[Family, ...] = ("ipv4", "ipv6") if ipv6_available() else ("ipv4",)
        for family in families:
            present = _tables_present(family)
            for table in TABLES:
                key = (family, table)
                if table not in present and key not in wanted:
                    continue
                builtins = {b for (t, _), b in HOOKS.items() if t == table}
                try:
                    info, blob, hooks = read_table_blob(family, table)
                except OSError as exc:
                    if key in wanted:
                        raise FirewallBackendError(
                            f"cannot read {family} table {table!r}: {exc.strerror}"
                        ) from None
                    continue
                chains = parse_tags(family, blob, hooks, builtins)
                out[key] = (ObservedTable(family, table, chains), info)
        return out

    def apply_sync(self, desired: DesiredFirewall) -> ApplyReport:
        """One read-plan-commit pass (on the worker thread, under the xtables lock)."""
        self._check_thread()
        started = time.perf_counter()
        backoff = Backoff(0.01, 0.5)
        for attempt in range(1, self.max_attempts + 1):
            try:
                with xtables_lock(self.lock_path, self.lock_timeout):
                    report = self._pass(desired)
                return replace(report, seconds=time.perf_counter() - started, attempts=attempt)
            except _Retry as exc:
                if attempt == self.max_attempts:
                    raise FirewallBackendError(
                        f"iptables commit kept failing: {exc}"
                    ) from None
                delay = backoff.next_delay()
                log.warning("iptables commit raced, retrying", error=str(exc),
                            attempt=attempt, retry_in=delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pass(self, desired: DesiredFirewall) -> ApplyReport:
        if not ipv6_available():
            # a kernel booted with ipv6.disable=1 has no ip6tables: IPv4 must still work
            desired = DesiredFirewall({k: v for k, v in desired.tables.items()
                                       if k[0] != "ipv6"})
        observed = self._observe(set(desired.tables))
        plans = plan(desired, [o for o, _ in observed.values()])
        report = ApplyReport(self.name, rules_desired=desired.rule_count)
        if not plans:
            return report
        iptc = self._load()
        changed: list[str] = []
        counts = {"ins": 0, "del": 0, "cc": 0, "dc": 0}
        for p in plans:
            self._commit_plan(iptc, p, observed.get((p.family, p.table)), counts)
            changed.append(f"{p.family}/{p.table}")
        return replace(report, changed_tables=tuple(changed), inserted=counts["ins"],
                       deleted=counts["del"], chains_created=counts["cc"],
                       chains_deleted=counts["dc"])

    def _commit_plan(self, iptc: Any, p: TablePlan,
                     observed: tuple[ObservedTable, tuple[int, int]] | None,
                     counts: dict[str, int]) -> None:
        cls = iptc.Table if p.family == "ipv4" else iptc.Table6
        try:
            table = cls(p.table, autocommit=False)
            table.refresh()
        except iptc.IPTCError as exc:
            raise FirewallBackendError(f"cannot open {p.family} table {p.table}: {exc}") from None
        # the handle must describe the very table the plan was made from
        if observed is not None and read_table_info(p.family, p.table) != observed[1]:
            raise _Retry(f"{p.family}/{p.table} changed while planning")
        lib = table._iptc
        handle = table._handle
        factory = self._w.factories.get(p.family)
        if factory is None:
            factory = self._w.factories[p.family] = _EntryFactory(iptc, p.family)
        edits = self._w.edits.get(p.family)
        if edits is None:
            edits = self._w.edits[p.family] = _TableEdits(iptc, p.family)

        def check(rv: int, what: str) -> None:
            if rv != 1:
                err = _errno(iptc)
                raise FirewallBackendError(
                    f"{p.family}/{p.table}: {what}: {table.strerror()} (errno {err})"
                )

        for op in p.ops:
            if isinstance(op, DeleteRule):
                check(edits.delete_num_entry(op.chain.encode(), op.index, handle),
                      f"delete rule {op.index} of {op.chain}")
                counts["del"] += 1
            elif isinstance(op, InsertRule):
                entry = factory.entry(op.rule)
                check(edits.insert_entry(op.chain.encode(), entry, op.index, handle),
                      f"insert into {op.chain} at {op.index}")
                counts["ins"] += 1
            elif isinstance(op, CreateChain):
                check(edits.create_chain(op.chain.encode(), handle),
                      f"create chain {op.chain}")
                counts["cc"] += 1
            elif isinstance(op, DeleteChain):
                check(edits.flush_entries(op.chain.encode(), handle), f"flush {op.chain}")
                check(edits.delete_chain(op.chain.encode(), handle),
                      f"delete chain {op.chain}")
                counts["dc"] += 1
        if lib.iptc_commit(handle) != 1:
            err = _errno(iptc)
            message = table.strerror()
            table.refresh()  # the handle is unusable after a failed commit
            if err == errno.EAGAIN or "again" in str(message).lower():
                raise _Retry(f"{p.family}/{p.table}: {message}")
            raise FirewallBackendError(f"{p.family}/{p.table}: commit failed: {message}")


def _errno(iptc: Any) -> int:
    """libiptc reports through errno; python-iptables' libc handle reads it."""
    return int(iptc.ip4tc._get_errno_loc()[0])


class _Retry(Exception):
    """The table changed under us; read again and re-plan."""
