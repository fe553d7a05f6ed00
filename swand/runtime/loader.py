"""The swanctl loader: keeps charon's connections, pools, authorities and credentials
equal to the swanctl folder, sending only what changed.

Usage (the daemon's composition root, `swand apply`)::

    loader = ConfigLoader("/etc/swanctl", terminate_removed=True)
    report = await loader.reconcile(session, reread=True)   # SIGHUP / start
    report = await loader.reconcile(session, reread=False)  # periodic check (cheap)
    if not report.ok: ...   # report.failure_lines(): one line per failure

- `reread=True` parses the folder again. A file that does not parse changes nothing:
  the last good state stays in charon and in the loader, the error is reported.
- Every pass asks charon for the names it has (`get-conns`, `get-pools`,
  `get-authorities`, `get-keys`, `get-shared`: a few hundred bytes) and repairs what
  someone else unloaded (e.g. `swanctl --load-all` from Debian's strongswan.service).
- The first pass loads everything (`full`); later ones do when the caller says charon
  may have lost its state (the daemon: after `swand.runtime.charon.Charon` reports
  charon up again). The loader does not watch charon itself.
- Within one pass, failures are per item; as with swanctl --load-all, a failing authority
  stops pools and connections, a failing pool stops connections (a pool that charon
  refuses to change because it has online leases keeps its old version and does *not*
  stop the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import hashlib
import os
import posixpath
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from swand.adapters.vici import ViciCommandError, ViciError, ViciLimitError
from swand.core import loadplan
from swand.core.loadplan import LoadPlan, LoadRecord, Observed, Step
from swand.core.settings import (
    MAX_FILE_BYTES,
    NotRegularFileError,
    Section,
    SettingsError,
    parse_file,
    read_regular_file,
)
from swand.core.swanctl import (
    CREDENTIAL_FOLDERS,
    CredentialSource,
    DesiredState,
    Item,
    LoadError,
    conn_children,
    referenced_files,
    translate,
)

#: marks a refused unload in ConfigLoader._failed (digests are hex)
_UNLOAD = "unload"
CREDENTIAL_KINDS = frozenset({"cert", "key", "token", "shared"})
CREDENTIAL_REMOVALS = frozenset({"clear-creds", "reload-creds", "unload-key",
                                 "unload-shared"})

#: largest credential file read (a certificate chain or PKCS#12 is far smaller)
MAX_CREDENTIAL_FILE = 4 * 1024 * 1024


class Session(Protocol):
    """The part of `swand.adapters.vici.ViciSession` the loader uses."""

    async def request(self, command: str, message: Mapping[str, Any] | None = None, *,
                      timeout: float = 30.0, check: bool = True,
                      decode: bool = True) -> dict[str, Any]: ...


@runtime_checkable
class PipelinedSession(Session, Protocol):
    """A session that can write many requests back to back (ViciSession)."""

    async def pipelined(self, requests: list[tuple[str, Mapping[str, Any]]], *,
                        timeout: float) -> list[dict[str, Any] | Exception]: ...


# --- the edge: reading the folder -------------------------------------------------------


@contextlib.contextmanager
def collector_paused(*, freeze: bool = True) -> Iterator[None]:
    """No cyclic garbage collection while a folder is parsed and translated, and (with
    `freeze`) what is alive afterwards moved to the permanent generation (as the metrics
    poll does on a large gateway).

    The parse allocates ~100 containers per connection that all stay alive: every
    collection their allocation triggered walked them in vain (and the whole heap, in
    the full ones), 40 % of the parse of 1,000 connections; and once they were old, a
    full collection during the loads that follow cost up to 0.2 s (bench/README.md).
    Frozen, no collection walks them. The parse's garbage is acyclic and freed by
    reference counting (frozen or not), so is a replaced desired state. But a cycle
    elsewhere that is garbage at that moment is never collected once frozen: the daemon
    freezes at its first parse only (start-up), not at every SIGHUP of a long life."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def parse_swanctl_conf(swanctl_dir: str) -> tuple[Section | None, list[LoadError]]:
    """Parse DIR/swanctl.conf: (tree, []) or (None, [the error naming file:line])."""
    try:
        return parse_file(os.path.join(swanctl_dir, "swanctl.conf")), []
    except SettingsError as exc:
        return None, [LoadError(str(exc.origin), "swanctl.conf", exc.message)]
    except OSError as exc:
        path = posixpath.join(swanctl_dir, "swanctl.conf")
        return None, [LoadError(path, "swanctl.conf", exc.strerror or str(exc))]


def _read(path: str) -> bytes:
    """A regular file's bytes (a FIFO is refused, not waited on: it would hang the pass)."""
    data = read_regular_file(path, MAX_CREDENTIAL_FILE)
    if len(data) > MAX_CREDENTIAL_FILE:
        raise OSError(f"larger than {MAX_CREDENTIAL_FILE} bytes")
    return data


#: credential folder -> ((file name, bytes), ...), and path -> why it could not be read
CredentialFolders = tuple[dict[str, tuple[tuple[str, bytes], ...]], dict[str, str]]


def read_credential_folders(swanctl_dir: str) -> CredentialFolders:
    """The credential folders' regular files as swanctl enumerates them (sorted by name,
    other entries skipped; a missing folder is absent), and the reason for each file that
    could not be read. One read serves both the fingerprint and the translation."""
    folders: dict[str, tuple[tuple[str, bytes], ...]] = {}
    unreadable: dict[str, str] = {}
    for folder in CREDENTIAL_FOLDERS:
        path = os.path.join(swanctl_dir, folder)
        try:
            names = sorted(os.listdir(path))
        except OSError:
            continue
        entries: list[tuple[str, bytes]] = []
        for name in names:
            full = os.path.join(path, name)
            try:
                entries.append((name, _read(full)))
            except (NotRegularFileError, IsADirectoryError):
                continue
            except OSError as exc:
                unreadable[full] = exc.strerror or str(exc)
        folders[folder] = tuple(entries)
    return folders, unreadable


def read_credentials(swanctl_dir: str, tree: Section,
                     folders: CredentialFolders | None = None) -> CredentialSource:
    """Snapshot every file the translation may need: the credential folders' regular
    files (`folders`, when already read) and the files the configuration names (each
    read once, however many connections name it)."""
    found, folder_unreadable = folders or read_credential_folders(swanctl_dir)
    unreadable = dict(folder_unreadable)
    files: dict[str, bytes] = {}
    named = tuple(referenced_files(tree, swanctl_dir))
    for path in named:
        try:
            files[path] = _read(path)
        except OSError as exc:
            unreadable[path] = exc.strerror or str(exc)
    return CredentialSource(swanctl_dir, found, files, unreadable, named)


def load_swanctl_dir(swanctl_dir: str) -> tuple[DesiredState | None, list[LoadError]]:
    """Parse and translate a swanctl folder without touching charon (`swand check`,
    `swand apply`). Returns (None, [error]) when swanctl.conf does not parse."""
    with collector_paused():
        tree, errors = parse_swanctl_conf(swanctl_dir)
        if tree is None:
            return None, errors
        return translate(tree, read_credentials(swanctl_dir, tree))


# --- fingerprint: is a reread needed at all? -------------------------------------------

#: `include PATTERN` wherever the parser takes it: at a line's start or after a blank or a
#: brace (`connections { include conns.conf }`); an unquoted pattern ends at a blank, `#`
#: or `}` unless escaped. A match elsewhere (in a value) only adds a file to the hash.
_INCLUDE = re.compile(rb'(?<![^\s{}])include[ \t]+("[^"]*"|(?:\\.|[^"#}\s\\])+)')
_INCLUDE_ESCAPE = re.compile(rb'\\(["#} ])')
_MAX_FINGERPRINT_FILES = 10_000


def config_fingerprint(swanctl_dir: str, folders: CredentialFolders | None = None) -> str:
    """A hash of the configuration's files and credential folders: swanctl.conf and the
    files its `include` lines match (found by a line scan, recursively; the directories'
    mtimes too, so a file added where a glob looks is noticed) and every file of the
    credential folders (`folders`, when already read). Together with `files_fingerprint`
    of the files the configuration names, equal values mean parsing and translating
    again would give the same desired state: an unchanged SIGHUP costs reading files,
    not parsing 1,000 connections."""
    h = hashlib.blake2b(digest_size=16)

    def add(path: str) -> bytes | None:
        try:  # every byte the parser may read (its limit is not the credentials')
            data = read_regular_file(path, MAX_FILE_BYTES)
        except OSError as exc:
            h.update(f"{path}\0!{exc.errno}\0".encode())
            return None
        h.update(f"{path}\0{len(data)}\0".encode())
        h.update(data)
        return data

    seen: set[str] = set()
    pending = [os.path.join(swanctl_dir, "swanctl.conf")]
    while pending and len(seen) < _MAX_FINGERPRINT_FILES:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        data = add(path)
        base = os.path.dirname(path)
        with contextlib.suppress(OSError):
            h.update(f"{base}\0{os.stat(base).st_mtime_ns}\0".encode())
        if not data or b"include" not in data:  # the expression costs 20 ms per 600 kB
            continue
        for match in _INCLUDE.finditer(data):
            raw = match.group(1)
            raw = raw[1:-1] if raw.startswith(b'"') else _INCLUDE_ESCAPE.sub(rb"\1", raw)
            pattern = raw.decode("utf-8", "surrogateescape")
            if not pattern:
                continue
            full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
            with contextlib.suppress(OSError):
                parent = os.path.dirname(full)
                h.update(f"{parent}\0{os.stat(parent).st_mtime_ns}\0".encode())
            pending.extend(sorted(glob.glob(full)))
    found, unreadable = folders or read_credential_folders(swanctl_dir)
    for folder, entries in found.items():
        for name, data in entries:
            h.update(f"{folder}/{name}\0{len(data)}\0".encode())
            h.update(data)
    for path, reason in sorted(unreadable.items()):
        h.update(f"{path}\0!{reason}\0".encode())
    return h.hexdigest()


def files_fingerprint(files: Mapping[str, bytes | None]) -> str:
    """A hash of named files' bytes (None: unreadable)."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        data = files[path]
        h.update(f"{path}\0{-1 if data is None else len(data)}\0".encode())
        h.update(data or b"")
    return h.hexdigest()


def _read_named(paths: list[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in paths:
        try:
            out[path] = _read(path)
        except OSError:
            out[path] = None
    return out


#: what a pass asks charon before it plans
_OBSERVE_COMMANDS = ("get-conns", "get-pools", "get-authorities", "get-keys", "get-shared")

# --- pipelining -------------------------------------------------------------------------

#: at least this many consecutive connection (or pool) loads are pipelined over the
#: loader's VICI connection (in order, so charon keeps the file's order of connections)
PIPELINE_MIN = 16


# --- the report -------------------------------------------------------------------------


@dataclass
class ItemResult:
    action: str
    label: str
    ok: bool
    error: str = ""
    where: str = ""

    def line(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{where}{self.action} {self.label}: {self.error}" if not self.ok else \
            f"{where}{self.action} {self.label}: ok"


@dataclass
class LoadReport:
    """What one reconcile pass did.

    `config_errors`: problems found reading the folder in *this* pass (only passes that
    reread report them). `standing_errors`: the problems of the configuration in use,
    repeated on every pass (a broken swanctl.conf stays broken until edited) so that `ok`
    does not flip back to true on the next periodic check; `failure_lines()` leaves them
    out, so a daemon logging it each pass logs each problem once."""

    config_errors: list[LoadError] = field(default_factory=list)
    results: list[ItemResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    standing_errors: list[LoadError] = field(default_factory=list)
    #: loads charon refused earlier, not retried until the file changes (not in
    #: failure_lines, like standing_errors)
    refused: list[str] = field(default_factory=list)
    parsed: bool = True
    full: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return (not self.config_errors and not self.standing_errors and not self.refused
                and self.parsed and all(r.ok for r in self.results))

    @property
    def error_count(self) -> int:
        """Problems in effect after this pass (standing ones included)."""
        return (max(len(self.config_errors), len(self.standing_errors))
                + sum(1 for r in self.results if not r.ok) + len(self.skipped)
                + len(self.refused))

    @property
    def changed(self) -> int:
        return sum(1 for r in self.results if r.ok)

    def failure_lines(self) -> list[str]:
        """One line per failure, naming file:line or the item."""
        lines = [str(e) for e in self.config_errors]
        lines += [r.line() for r in self.results if not r.ok]
        lines += [f"skipped: {s}" for s in self.skipped]
        return lines

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            key = f"{r.action}{'' if r.ok else '-failed'}"
            out[key] = out.get(key, 0) + 1
        return out


# --- the loader -------------------------------------------------------------------------


def _has_blobs(item: Item) -> bool:
    """Whether a load-conn message carries certs/cacerts/pubkeys."""
    def walk(value: Any) -> bool:
        if isinstance(value, Mapping):
            return any(k.lower() in ("certs", "cacerts", "pubkeys") or walk(v)
                       for k, v in value.items())
        return False
    return walk(item.message)


def _step_label(step: Step) -> str:
    """`load connection 'rw'`, `unload pool 'p'`: what a skipped step would have done."""
    label = step.item.label() if step.item else f"{step.kind} '{step.name}'"
    return f"{step.action} {label}"


def _online_leases(error: str) -> bool:
    """Whether charon refused a pool because it has online leases (it keeps the old
    version: not a failure that stops the connections)."""
    return "lease" in error


def _reply_error(reply: Mapping[str, Any] | Exception) -> str | None:
    """Why one pipelined request failed (None: it succeeded)."""
    if isinstance(reply, Exception):
        return str(reply)
    if reply.get("success") == "no":
        return str(reply.get("errmsg", "failed"))
    return None


def _pipelining(session: Session) -> PipelinedSession | None:
    """The session itself when it can pipeline (a real VICI one; test fakes cannot:
    their steps run one by one)."""
    return session if isinstance(session, PipelinedSession) else None


def _where(item: Item | None) -> str:
    if item is None:
        return ""
    return str(item.origin) if item.origin else item.name


class ConfigLoader:
    """Reconciles one charon with one swanctl folder. Not safe for concurrent passes:
    the daemon's single writer calls `reconcile` (see DESIGN.md "One writer")."""

    def __init__(self, swanctl_dir: str, *, terminate_removed: bool = True) -> None:
        self.swanctl_dir = swanctl_dir
        self.terminate_removed = terminate_removed
        self.desired: DesiredState | None = None
        self.desired_errors: list[LoadError] = []
        self._digests: dict[tuple[str, str], str] = {}
        self._key_ids: dict[str, str] = {}
        self._children: dict[str, tuple[str, ...]] = {}
        #: (kind, name) -> digest of loads (or _UNLOAD for unloads) charon refused: the
        #: periodic check retries them quietly (report.refused), a reread or full pass
        #: reports them again
        self._failed: dict[tuple[str, str], str] = {}
        #: the last reread's parse error, while the last good state is in use
        self._parse_errors: list[LoadError] = []
        self._fingerprint: str | None = None
        self._named_fingerprint: str | None = None
        self._referenced: list[str] = []
        #: folders parsed so far (the first parse freezes the heap, see collector_paused)
        self._parses = 0
        #: a pass has run to its end (loads may have failed): later ones may be partial
        self._loaded_once = False

    @property
    def record(self) -> LoadRecord:
        return LoadRecord(dict(self._digests), dict(self._key_ids), dict(self._children))

    def forget(self) -> None:
        """Assume charon is empty (after a restart): the next pass loads everything."""
        self._digests.clear()
        self._key_ids.clear()
        self._children.clear()

    def reread(self) -> tuple[bool, list[LoadError]]:
        """Parse and translate the folder, unless no input byte changed since the last
        good parse. On a parse error the previous desired state stays (returns False)."""
        folders = read_credential_folders(self.swanctl_dir)
        fingerprint = config_fingerprint(self.swanctl_dir, folders)
        if self.desired is not None and fingerprint == self._fingerprint and \
                files_fingerprint(_read_named(self._referenced)) == self._named_fingerprint:
            return True, list(self.desired_errors)
        with collector_paused(freeze=self._parses == 0):
            self._parses += 1
            tree, parse_errors = parse_swanctl_conf(self.swanctl_dir)
            if tree is None:
                return False, parse_errors
            source = read_credentials(self.swanctl_dir, tree, folders)
            state, errors = translate(tree, source)
        self._referenced = list(source.named or ())
        # what was read *before* parsing, and the very bytes translated: a file changed
        # meanwhile makes the next reread parse again rather than miss the change
        self._fingerprint = fingerprint
        self._named_fingerprint = files_fingerprint(
            {p: source.files.get(p) for p in self._referenced})
        self.desired, self.desired_errors = state, errors
        return True, errors

    async def _observe(self, session: Session) -> Observed:
        """What charon has loaded: five small commands, the last four in one round trip
        where the session pipelines (the first alone: a plain request is sent again on
        a fresh connection when charon restarted meanwhile)."""
        first, *rest = _OBSERVE_COMMANDS
        replies = [await session.request(first)]
        pipelined = _pipelining(session)
        if pipelined is None:
            replies += [await session.request(command) for command in rest]
        else:
            answers = await pipelined.pipelined([(c, {}) for c in rest], timeout=30.0)
            for command, answer in zip(rest, answers, strict=True):
                if isinstance(answer, Exception):
                    raise answer
                if _reply_error(answer) is not None:
                    raise ViciCommandError(command, str(_reply_error(answer)), answer)
                replies.append(answer)
        conns, pools, auths, keys, shared = replies
        return Observed(
            conns=frozenset(conns.get("conns", []) or []),
            pools=frozenset(pools.keys()),
            authorities=frozenset(auths.get("authorities", []) or []),
            key_ids=frozenset(keys.get("keys", []) or []),
            shared_ids=frozenset(shared.get("keys", []) or []),
        )

    async def reconcile(self, session: Session, *, reread: bool = False,
                        full: bool = False) -> LoadReport:
        """One pass. `reread`: parse the folder again first; `full`: load everything
        regardless of the record (the first pass always is)."""
        started = time.monotonic()
        report = LoadReport()
        # charon is asked what it has first: it answers while the folder is parsed (the
        # requests are written before the parse holds the loop)
        observing = asyncio.ensure_future(self._observe(session))
        await asyncio.sleep(0)
        if reread or self.desired is None:
            try:
                ok, errors = self.reread()
            except BaseException:  # no command left running behind a failed pass
                observing.cancel()
                raise
            report.config_errors = list(errors)
            self._parse_errors = [] if ok else list(errors)
            if not ok:
                # the last good state stays: still repair drift with it, if there is one
                report.parsed = False
                if self.desired is None:
                    # charon's answers are not needed, but the commands must finish: a
                    # cancelled one would cost the session its connection
                    with contextlib.suppress(ViciError):
                        await observing
                    report.standing_errors = list(errors)
                    report.duration = time.monotonic() - started
                    return report
        report.standing_errors = self._parse_errors or list(self.desired_errors)
        assert self.desired is not None
        # the first pass loads everything; after that the caller says when charon may
        # have lost our state (the daemon: swand.runtime.charon's charon_up)
        full = full or not self._loaded_once
        if full:
            self.forget()
        report.full = full
        observed = await observing
        if reread or full:
            self._failed.clear()
        the_plan = loadplan.plan(self.desired, observed, self.record,
                                 terminate_removed=self.terminate_removed, full=full)
        # loads/unloads charon refused before are retried quietly: a repeated refusal
        # goes to report.refused (not ok, but not a new failure line every check), a
        # success converges (a pool's leases went offline, a pool a connection needed
        # came back)
        quiet = {
            (s.kind, s.name) for s in the_plan.steps
            if (s.action == "load" and s.item is not None
                and self._failed.get((s.kind, s.name)) == s.item.digest)
            or (s.action == "unload" and self._failed.get((s.kind, s.name)) == _UNLOAD)
        }
        await self.execute(session, the_plan, report, quiet=quiet, reread=reread)
        self._loaded_once = True
        report.duration = time.monotonic() - started
        return report

    async def execute(self, session: Session, the_plan: LoadPlan, report: LoadReport, *,
                      quiet: set[tuple[str, str]] | None = None, reread: bool = True
                      ) -> None:
        """Run a plan: per-item results into `report`; gating as swanctl --load-all.

        `quiet`: (kind, name) of steps charon refused before; refused again, they are
        listed in `report.refused` instead of as failures (and so is what they gate)."""
        assert self.desired is not None
        quiet = quiet or set()
        returned_ids: set[str] = set()
        # gate -> None (open) or whether what closed it was quiet
        gates: dict[str, bool | None] = {"cred": None, "authority": None, "pool": None}
        # an authority that could not even be translated (its cacert missing) fails
        # swanctl's authorities stage just the same
        if any(kind == "authority" for kind, _ in self.desired.broken):
            gates["authority"] = not reread

        def close(gate: str, was_quiet: bool) -> None:
            """A failed load closes its gate: quietly only while every failure was."""
            gates[gate] = was_quiet if gates[gate] is None else \
                bool(gates[gate]) and was_quiet

        def gated(step: Step, gate: str, why: str) -> bool:
            if gates[gate] is None:
                return False
            if gates[gate]:
                report.refused.append(f"{_step_label(step)} (skipped: {why})")
            else:
                report.skipped.append(f"{_step_label(step)} ({why})")
            return True

        steps = list(the_plan.steps)
        terminated = False
        index = 0
        while index < len(steps):
            step = steps[index]
            index += 1
            kind = step.kind
            batch = self._pipeline_batch(session, steps, index - 1)
            if batch and gates["authority"] is None and (
                    kind == "pool" or gates["pool"] is None):
                index += len(batch) - 1
                for error, was_quiet in await self._run_batch(session, batch, report, quiet):
                    if kind == "pool" and not _online_leases(error):
                        close("pool", was_quiet)
                continue
            if kind == "pool" and gated(step, "authority", "an authority failed to load"):
                continue
            if kind == "conn" and (
                    gated(step, "authority", "an authority failed to load")
                    or gated(step, "pool", "a pool failed to load")):
                continue
            if step.action in CREDENTIAL_REMOVALS and gated(
                    step, "cred", "a credential failed to load: the last good credentials "
                    "stay"):
                continue
            if step.action == "unload-key" and step.target in returned_ids:
                continue
            if step.action == "clear-creds" and index < len(steps) and \
                    steps[index].action == "reload-creds":
                index += 1
                await self._replace_credentials(session, report, returned_ids)
                continue
            ok = await self._run_step(session, step, report, returned_ids)
            if step.action == "terminate":
                terminated = True
            elif not ok and step.action == "unload" and kind == "pool" and terminated:
                ok = await self._unload_pool_after_terminate(session, step, report)
            was_quiet = (kind, step.name) in quiet
            if ok:
                self._failed.pop((kind, step.name), None)
                continue
            if step.action == "load" and step.item is not None:
                self._failed[(kind, step.name)] = step.item.digest
            elif step.action == "unload":  # e.g. a pool with online leases
                self._failed[(kind, step.name)] = _UNLOAD
            error = report.results[-1].error if report.results else ""
            if was_quiet and report.results and not report.results[-1].ok:
                failed = report.results.pop()
                report.refused.append(f"{failed.action} {failed.label}")
            if step.action != "load":
                continue
            gate = ("cred" if kind in CREDENTIAL_KINDS else
                    "authority" if kind == "authority" else
                    # "online leases": charon keeps the old pool; the rest goes on
                    "pool" if kind == "pool" and not _online_leases(error) else None)
            if gate is not None:
                close(gate, was_quiet)

    async def _unload_pool_after_terminate(self, session: Session, step: Step,
                                           report: LoadReport) -> bool:
        """A pool whose connection was just removed: the terminated SAs release their
        leases as charon destroys them, a moment after `terminate` returns. Retry for up
        to 2 s before calling the unload refused."""
        if not report.results or not _online_leases(report.results[-1].error):
            return False
        for _ in range(20):
            await asyncio.sleep(0.1)
            try:
                await session.request("unload-pool", {"name": step.name})
            except ViciCommandError:
                continue
            report.results[-1] = ItemResult("unload", report.results[-1].label, True)
            self._digests.pop(("pool", step.name), None)
            return True
        return False

    @staticmethod
    def _pipeline_batch(session: Session, steps: list[Step], start: int) -> list[Step]:
        """The run of connection loads starting at `start`, if long enough to pipeline."""
        if _pipelining(session) is None:
            return []
        kind = steps[start].kind
        if kind not in ("conn", "pool"):
            return []
        end = start
        while end < len(steps) and steps[end].action == "load" and steps[end].kind == kind:
            end += 1
        return steps[start:end] if end - start >= PIPELINE_MIN else []

    async def _run_batch(self, session: Session, batch: list[Step], report: LoadReport,
                         quiet: set[tuple[str, str]]) -> list[tuple[str, bool]]:
        """Pipelined loads of one kind; per-item results as for single steps (an item over
        VICI's limits fails alone, before it would be sent). Returns (error, was quiet)
        of each failure, for the gates."""
        failures: list[tuple[str, bool]] = []
        items = [step.item for step in batch if step.item is not None]
        pipelined = _pipelining(session)
        assert pipelined is not None
        replies = await pipelined.pipelined(
            [(i.command, i.message) for i in items], timeout=30.0 + 0.02 * len(items))
        for item, reply in zip(items, replies, strict=True):
            key = (item.kind, item.name)
            why = _reply_error(reply)
            if why is not None:
                self._failed[key] = item.digest
                failures.append((why, key in quiet))
                if key in quiet:
                    report.refused.append(f"load {item.label()}")
                    continue
                report.results.append(ItemResult("load", item.label(), False, why,
                                                 _where(item)))
            else:
                assert isinstance(reply, Mapping)
                self._failed.pop(key, None)
                self._remember(item, reply, set())
                report.results.append(ItemResult("load", item.label(), True,
                                                 where=_where(item)))
        return failures

    async def _run_step(self, session: Session, step: Step, report: LoadReport,
                        returned_ids: set[str]) -> bool:
        item = step.item
        label = item.label() if item else f"{step.kind} '{step.name}'"
        where = _where(item)
        try:
            if step.action == "load":
                assert item is not None
                reply = await session.request(item.command, item.message)
                self._remember(item, reply, returned_ids)
            elif step.action == "unload":
                command = {"conn": "unload-conn", "pool": "unload-pool",
                           "authority": "unload-authority"}[step.kind]
                await session.request(command, {"name": step.name})
                self._digests.pop((step.kind, step.name), None)
                self._children.pop(step.name, None)
            elif step.action == "terminate":
                key = "ike" if step.kind == "conn" else "child"
                # force: no waiting for the peer's answer to DELETE, so the SA (and its
                # pool lease: a pool removed too is unloaded next) is gone on return;
                # VICI's timeout bounds the wait inside charon
                with contextlib.suppress(ViciCommandError):  # no SA: nothing to end
                    await session.request(
                        "terminate", {key: step.target, "force": "yes", "timeout": "5000"},
                        timeout=15.0)
            elif step.action == "unload-key":
                await session.request("unload-key", {"id": step.target})
            elif step.action == "unload-shared":
                await session.request("unload-shared", {"id": step.target})
            elif step.action == "clear-creds":
                await session.request("clear-creds")
                self._forget_credentials()
            elif step.action == "reload-creds":
                if not await self._reload_credentials(session, report, returned_ids):
                    return False
            else:  # pragma: no cover - plan and executor disagree
                raise AssertionError(step.action)
        except ViciCommandError as exc:
            report.results.append(ItemResult(step.action, label, False, exc.errmsg, where))
            return False
        except ViciLimitError as exc:  # refused before sending: this item only
            report.results.append(ItemResult(step.action, label, False, str(exc), where))
            return False
        except ViciError as exc:
            # a connection-level failure ends the pass; the caller reconnects
            report.results.append(ItemResult(step.action, label, False, str(exc), where))
            raise
        report.results.append(ItemResult(step.action, label, True, where=where))
        return True

    async def _replace_credentials(self, session: Session, report: LoadReport,
                                   returned_ids: set[str]) -> None:
        """`clear-creds` and the reload of everything, written to charon in one go.

        VICI cannot unload a certificate, so a removed one means clearing all
        credentials: in the moment between `clear-creds` and the reload an IKE_SA being
        authenticated would miss its key. Pipelined on one connection, charon runs the
        whole sequence without waiting for swand: the window is charon's own processing
        time (keys come first after the clear, the signing key is what a client waits
        for), not a round trip per credential."""
        items = self._reload_items()
        pipelined = _pipelining(session)
        if pipelined is None:
            await self._run_step(session, Step("clear-creds", "cred", "*"), report,
                                 returned_ids)
            await self._run_step(session, Step("reload-creds", "cred", "*"), report,
                                 returned_ids)
            return
        try:
            replies = await pipelined.pipelined(
                [("clear-creds", {}), *((i.command, i.message) for i in items)],
                timeout=30.0 + 0.05 * len(items))
        except ViciError as exc:
            report.results.append(ItemResult("clear-creds", "cred '*'", False, str(exc)))
            raise
        self._forget_credentials()
        why = _reply_error(replies[0])
        report.results.append(ItemResult("clear-creds", "cred '*'", why is None, why or ""))
        ok = True
        for item, reply in zip(items, replies[1:], strict=True):
            why = _reply_error(reply)
            if why is not None:
                ok = False
                report.results.append(ItemResult("load", item.label(), False, why,
                                                 _where(item)))
            else:
                assert isinstance(reply, Mapping)
                self._remember(item, reply, returned_ids)
        report.results.append(ItemResult("reload-creds", "cred '*'", ok,
                                         "" if ok else "see the failures above"))

    def _reload_items(self) -> list[Item]:
        """What a clear-creds drops, in the order to send it again: keys first (the
        signing key is what a client waits for), then tokens, shared keys, certificates,
        authorities and the connections that brought certificates along."""
        assert self.desired is not None
        return [*self.desired.keys.values(), *self.desired.tokens.values(),
                *self.desired.shared.values(), *self.desired.certs.values(),
                *self.desired.authorities.values(),
                *(c for c in self.desired.conns.values() if _has_blobs(c))]

    def _forget_credentials(self) -> None:
        self._key_ids.clear()
        for key in [k for k in self._digests if k[0] in CREDENTIAL_KINDS]:
            del self._digests[key]

    async def _reload_credentials(self, session: Session, report: LoadReport,
                                  returned_ids: set[str]) -> bool:
        """`_reload_items` one by one (charon lost them, or a session without pipelining)."""
        ok = True
        for item in self._reload_items():
            try:
                reply = await session.request(item.command, item.message)
                self._remember(item, reply, returned_ids)
            except (ViciCommandError, ViciLimitError) as exc:
                ok = False
                why = exc.errmsg if isinstance(exc, ViciCommandError) else str(exc)
                report.results.append(ItemResult("load", item.label(), False, why,
                                                 _where(item)))
        return ok

    def _remember(self, item: Item, reply: Mapping[str, Any], returned_ids: set[str]) -> None:
        self._digests[(item.kind, item.name)] = item.digest
        if item.kind in ("key", "token"):
            key_id = reply.get("id")
            if isinstance(key_id, str) and key_id:
                name = item.name if item.kind == "key" else f"token:{item.name}"
                self._key_ids[name] = key_id
                returned_ids.add(key_id)
        if item.kind == "conn":
            self._children[item.name] = conn_children(item)
