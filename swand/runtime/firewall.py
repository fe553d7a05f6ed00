"""FirewallReconciler: keeps sysctls, NAT, MSS clamping and per-SA forward rules true.

Level-triggered: every pass takes its whole input through a `snapshot` callable (pools,
CHILD_SAs and loaded plugins; the daemon's reads the event watcher's SA table, see
`table_snapshot`), the egress interface from RTNL, computes the whole desired state with
the pure core (`swand.core.firewall`, `swand.core.sysctl`) and lets the backend make the
kernel match it -- writing nothing when it already does. Watchers only `poke()`; a
`BoundedFrequencyRunner` runs passes with a minimum interval, a retry backoff and a
periodic full pass (``[firewall] interval``, default 10 s) that repairs drift: a flushed
chain, a deleted jump, a foreign rule inside swand's chains.

Failure is static: a pass that cannot read charon, finds invalid inputs (an egress
interface that does not exist, a pool overlapping the egress subnet) or fails to commit
logs an error and leaves the last good rules in place; so does `stop()`. A restart adopts
the rules it finds (tags are a function of the rule), so nothing is duplicated and there
is no moment without the NAT rule.

Composition (the daemon, `swand.runtime.wiring`)::

    fw = firewall_reconciler(cfg, charon, config_pools=...)   # table_snapshot
    wire(charon, firewall=fw)   # poked by every SaSetChanged and by charon coming back
    await fw.start()      # backend choice (may raise BackendChoiceError), egress watcher,
                          # runner task, first pass requested
    await fw.wait_idle()  # the first complete pass (READY=1 after this)
    fw.poke("reload", full=True)        # after SIGHUP
    fw.last_report                      # FirewallReport of the last pass (status, metrics)
    await fw.stop()                     # rules and sysctls stay

`config_pools` (optional) returns the pools of the loaded swanctl.conf as
`swand.core.firewall.Pool`s (``Pool.from_addrs(name, *addrs)``), so NAT survives the
moment after a charon restart before the loader has loaded the pools again.

`apply_firewall_once(cfg, session)` is the one-shot used by ``swand apply``: no event
watcher runs there, so it reads ``list-sas`` (`vici_snapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from swand.adapters import iptables_legacy as legacy
from swand.adapters import nftables as nft
from swand.adapters.firewall_backend import FirewallBackend
from swand.adapters.netlink import NetlinkWatcher, NetState, read_net_state
from swand.adapters.sysctl import ProcSysctl, SysctlChange
from swand.adapters.vici import ViciSession
from swand.clock import SYSTEM_CLOCK, Clock, TimerHandle
from swand.config import SwandConfig
from swand.core.events import parse_list_sas
from swand.core.firewall import (
    ChildSA,
    DesiredFirewall,
    FirewallInputError,
    FirewallInputs,
    Pool,
    SaRuleCache,
    choose_backend,
    desired_firewall,
    forwarding_child_sas,
    held_child_sas,
    pools_from_vici,
    resolve_mode,
    sas_settling,
    validate,
)
from swand.core.sysctl import accept_ra_key, desired_sysctls
from swand.log import get_logger
from swand.runtime.runner import BoundedFrequencyRunner, PassRequest
from swand.runtime.sa_table import PerSa, SaSource, charon_plugins, live_sas
from swand.runtime.untrusted import report_unparsable

log = get_logger("swand.firewall")

#: how long a CHILD_SA missing from `list-sas` keeps its forward rules while an IKE_SA
#: settles (see `swand.core.firewall.held_child_sas`; the event table needs no hold,
#: see `swand.runtime.sa_table`)
SETTLE_HOLD = 0.5

#: the reasons of a pass that only say an SA (or the egress) changed: such a pass takes
#: the pools charon reported last instead of asking again (a `get-pools` waits behind a
#: metrics poll on the shared connection); any other pass (start, periodic, charon-up,
#: config, reload, retry) re-reads them
SA_CHANGE_REASONS = frozenset({"sa-change", "settling", "netlink"})

#: the reasons of a pass that only say which SAs are up. The sysctls follow the
#: configuration, the pools and the egress, none of which such a pass re-reads, so it
#: leaves them alone: one thread hop less per pass in a storm (each waits for a core
#: among busy charons); every other pass, the periodic one included, sets them and
#: repairs drift
SA_ONLY_REASONS = frozenset({"sa-change", "settling"})

#: a pass computes its rules on the loop when that costs less than ~20 ms (estimated
#: at 10 us per SA with cached rules, 55 us per SA without), on a thread otherwise
INLINE_RULES_US = 20_000


@dataclass(frozen=True)
class FirewallSnapshot:
    """What charon says right now: the inputs of the desired state."""

    pools: tuple[Pool, ...] = ()
    child_sas: tuple[ChildSA, ...] = ()
    plugins: tuple[str, ...] = ()
    #: an IKE_SA is mid-rekey or deleting: a CHILD_SA missing now may be moving
    #: (`swand.core.firewall.sas_settling`)
    settling: bool = False


#: `snapshot(refresh)`: with `refresh` False the pools may be those read last time
SnapshotFn = Callable[[bool], Awaitable[FirewallSnapshot]]


def _forwarding(batch: list[dict[str, Any]]) -> list[tuple[tuple[ChildSA, ...], bool]]:
    """One batch of list-sa events (on the VICI decoder thread): its forwarding CHILD_SAs
    and whether one of its IKE_SAs settles, read through the SA model events and metrics
    read too."""
    sas = parse_list_sas(batch, on_skip=report_unparsable).sas
    return [(forwarding_child_sas(sas, report_unparsable), sas_settling(sas))]


def vici_snapshot(
    session: ViciSession, config_pools: Callable[[], tuple[Pool, ...]] | None = None
) -> SnapshotFn:
    """A snapshot callable over a `swand.adapters.vici.ViciSession`: ``get-pools``,
    ``list-sas`` and ``stats`` (its ``plugins`` list picks the mode for ``auto``).

    `config_pools` (optional, from the loader's parsed swanctl.conf) is merged with what
    charon reports: right after a charon restart, before the loader has loaded the pools
    again, NAT must not disappear for a moment. Every call reads all three (``swand
    apply``, tests); the daemon's `table_snapshot` reads only the pools, and not always.
    """

    async def snapshot(refresh: bool = True) -> FirewallSnapshot:
        pools = await session.request("get-pools")
        # blocking on purpose: with `noblock` charon skips every IKE_SA that is checked
        # out (in an exchange: a rekey, DPD, MOBIKE), and exactly the pass a rekey event
        # pokes would then drop that SA's forward rules until the next pass. A wedged
        # SA costs the session's timeout, and a failed pass keeps the rules (fail static).
        # each batch of list-sa events is read into CHILD_SAs on the decoder thread as it
        # arrives (10,000 SAs: ~0.3 s of parsing the loop does not run)
        parts, _ = await session.streamed("list-sas", "list-sa", parse=_forwarding)
        stats = await session.request("stats")
        plugins = stats.get("plugins") or []
        return FirewallSnapshot(
            pools=_with_config_pools(pools_from_vici(pools, report_unparsable),
                                     config_pools),
            child_sas=tuple(child for children, _ in parts for child in children),
            plugins=tuple(str(p) for p in plugins),
            settling=any(settling for _, settling in parts),
        )

    return snapshot


def table_snapshot(
    source: SaSource, session: ViciSession,
    config_pools: Callable[[], tuple[Pool, ...]] | None = None, *,
    clock: Clock = SYSTEM_CLOCK,
) -> SnapshotFn:
    """The daemon's snapshot: the CHILD_SAs of the event watcher's SA table (`source`,
    `swand.runtime.sa_table`: no ``list-sas``, each IKE_SA's CHILD_SAs read once per
    change), the plugins of its last resync, and ``get-pools`` over `session` on a
    refreshing pass only (the pools of the last one otherwise). `config_pools` as for
    `vici_snapshot`. Waits for the watcher's first resync, fails the pass without it."""
    children = PerSa(lambda sa: forwarding_child_sas((sa,), report_unparsable))
    charon_pools: tuple[Pool, ...] | None = None

    async def snapshot(refresh: bool = True) -> FirewallSnapshot:
        nonlocal charon_pools
        await live_sas(source, clock)  # first resync done (or SaTableNotReady)
        if refresh or charon_pools is None:
            charon_pools = pools_from_vici(await session.request("get-pools"),
                                           report_unparsable)
        return FirewallSnapshot(  # the table as it is now, after the awaits
            pools=_with_config_pools(charon_pools, config_pools),
            child_sas=children(source.table.current()), plugins=charon_plugins(source))

    return snapshot


def _with_config_pools(
    charon_pools: tuple[Pool, ...], config_pools: Callable[[], tuple[Pool, ...]] | None
) -> tuple[Pool, ...]:
    """charon's pools plus those of the loaded swanctl.conf it does not report (yet)."""
    if config_pools is None:
        return charon_pools
    known = {p.name for p in charon_pools}
    return charon_pools + tuple(p for p in config_pools() if p.name not in known)


@dataclass(frozen=True)
class FirewallReport:
    """One pass: what it saw and what it changed (also ``swand apply``'s report)."""

    ok: bool
    mode: str = ""
    egress: str | None = None
    backend: str = ""
    rules: int = 0
    sas: int = 0
    changed_tables: tuple[str, ...] = ()
    inserted: int = 0
    deleted: int = 0
    sysctls_changed: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def effective_egress6(cfg: SwandConfig, state: Any) -> str | None:
    """The interface IPv6 leaves by: ``[ipv6] egress``, else (``auto``) the IPv6 default
    route's, else the IPv4 egress (``[firewall] egress`` or the default route's)."""
    if cfg.ipv6.egress != "auto":
        return cfg.ipv6.egress
    v6 = getattr(state, "egress6", None)
    if v6:
        return str(v6)
    return state.egress if cfg.firewall.egress == "auto" else cfg.firewall.egress


class FirewallPassError(Exception):
    """A pass that must not change anything (the message lists the problems)."""


def make_backend(cfg: SwandConfig) -> FirewallBackend:
    """The backend ``[firewall] backend`` asks for (see `choose_backend`), logged with why.

    Raises BackendChoiceError when it must refuse (legacy rules on an nftables host
    without ``backend = "legacy"``)."""
    name, why = choose_backend(
        cfg.firewall.backend, iptables_variant=legacy.iptables_variant(),
        nft_has_rules=nft.nftables_has_rules(), nft_available=nft.nftables_available(),
        source=cfg.source,
    )
    log.info("firewall backend", backend=name, why=why)
    return nft.NftablesBackend() if name == "nftables" else legacy.LegacyIptablesBackend()


async def remove_other_backend(backend_name: str) -> None:
    """After switching backend, remove what swand left in the other one (best effort: a
    failure is logged, never fatal)."""
    other: FirewallBackend | None = None
    try:
        if backend_name == "nftables":
            other = legacy.LegacyIptablesBackend()
        elif backend_name == "legacy" and nft.nftables_available():
            other = nft.NftablesBackend()
        if other is None:
            return
        report = await other.flush()
        if report.changed:
            log.info("removed rules of the other firewall backend", backend=other.name,
                     tables=list(report.changed_tables))
    except Exception as exc:
        log.warning("could not clean the other firewall backend", error=str(exc))
    finally:
        if other is not None:
            await other.close()


@dataclass
class _Egress:
    """The egress interface (named in swand.toml, or the default route's) and the
    interfaces, as last read from RTNL."""

    name: str | None = None
    interfaces: dict[str, tuple[str, ...]] | None = None
    #: where IPv6 leaves (`effective_egress6`)
    name6: str | None = None
    #: the watcher's egress and interfaces last acted on (the rest of its state is
    #: keepalive's)
    seen: tuple[str | None, dict[str, tuple[str, ...]], str | None] | None = None
    task: asyncio.Task[None] | None = None


class SysctlWriter(Protocol):
    """`swand.adapters.sysctl.ProcSysctl` (a temporary folder or a fake in tests)."""

    def read(self, key: str) -> str | None:
        """The value of `key` (``net/ipv6/conf/eth0/accept_ra``), None when absent."""
        ...

    def apply(self, want: Mapping[str, str]) -> Sequence[SysctlChange]:
        """Make every key hold its value; return what changed."""
        ...


class FirewallReconciler:
    """The single writer of sysctls and firewall rules (see the module docstring)."""

    def __init__(
        self,
        cfg: SwandConfig,
        snapshot: SnapshotFn,
        *,
        backend: FirewallBackend | None = None,
        sysctl: SysctlWriter | None = None,
        min_interval: float = 0.2,
        interval: float | None = None,
        net_state: Callable[[], Awaitable[NetState]] | None = None,
        on_report: Callable[[FirewallReport, PassRequest], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.cfg = cfg
        self._on_report = on_report
        self._snapshot = snapshot
        self._backend = backend
        self._sysctl: SysctlWriter = sysctl if sysctl is not None else ProcSysctl()
        self._net_state = net_state
        self._egress = _Egress()
        self.runner = BoundedFrequencyRunner(
            "firewall", self._pass, min_interval=min_interval,
            max_interval=interval or cfg.firewall.interval,
            backoff_initial=0.5, backoff_max=min(30.0, interval or cfg.firewall.interval),
            clock=clock,
        )
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self.last_report: FirewallReport | None = None
        self.last_good: FirewallReport | None = None
        self.last_desired: DesiredFirewall | None = None
        #: each live CHILD_SA's forward rules, from the last pass
        self._rule_cache = SaRuleCache()
        #: CHILD_SAs with forward rules, and when `list-sas` last listed each
        self._child_seen: dict[ChildSA, float] = {}
        self._settle_timer: TimerHandle | None = None

    # --- lifecycle ----------------------------------------------------------------

    @property
    def backend(self) -> FirewallBackend:
        if self._backend is None:
            self._backend = make_backend(self.cfg)
        return self._backend

    async def start(self) -> None:
        """Pick the backend (raises BackendChoiceError when it must refuse), start
        following the egress interface, start the runner and ask for a first pass."""
        await remove_other_backend(self.backend.name)
        await self._start_egress()
        self._task = asyncio.create_task(self.runner.run(), name="firewall-runner")
        self.poke("start", full=True)

    async def stop(self) -> None:
        """Stop reconciling. The rules and sysctls stay: traffic keeps flowing while swand
        restarts, and the next start adopts them."""
        for task in (self._task, self._egress.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._egress.task = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        if self._backend is not None:
            await self._backend.close()

    def poke(self, reason: str = "poke", *, full: bool = False) -> None:
        """Something changed (an SA event, a reload): reconcile soon. Never blocks."""
        self.runner.poke(reason, full=full)

    async def wait_idle(self) -> None:
        await self.runner.wait_idle()

    async def run_once(self) -> FirewallReport:
        """One pass now (``swand apply``); raises on failure, leaving the rules as they were."""
        if self._egress.task is None:
            await self._start_egress(follow=False)
        await remove_other_backend(self.backend.name)
        await self._pass(PassRequest({"once"}, True))
        assert self.last_report is not None
        return self.last_report

    async def _start_egress(self, follow: bool = True) -> None:
        if self._net_state is not None:
            return

        if not follow:
            self._set_net(await read_net_state())
            return
        watcher = NetlinkWatcher()
        watcher.add_callback(self._on_net)
        self._egress.task = asyncio.create_task(watcher.run(), name="egress-watcher")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.ready.wait(), 5.0)

    def _set_net(self, state: NetState) -> None:
        egress = self.cfg.firewall.egress
        self._egress.name = state.egress if egress == "auto" else egress
        self._egress.interfaces = dict(state.interfaces)
        self._egress.name6 = effective_egress6(self.cfg, state)

    def _on_net(self, state: NetState) -> None:
        seen = (state.egress, state.interfaces, state.egress6)
        if seen == self._egress.seen:
            return
        self._egress.seen = seen
        self._set_net(state)
        self.poke("netlink")

    # --- one pass -----------------------------------------------------------------

    async def _pass(self, request: PassRequest) -> None:
        started = time.perf_counter()
        refresh = request.full or not request.reasons <= SA_CHANGE_REASONS
        sysctls = request.full or not request.reasons <= SA_ONLY_REASONS
        try:
            report = await self._reconcile(refresh, sysctls)
        except Exception as exc:
            report = FirewallReport(ok=False, error=str(exc),
                                    seconds=time.perf_counter() - started)
            self.last_report = report
            if self._on_report is not None:
                self._on_report(report, request)
            raise
        self.last_report = self.last_good = report
        if self._on_report is not None:
            self._on_report(report, request)
        if report.changed_tables or report.sysctls_changed:
            log.info("firewall reconciled", reasons=sorted(request.reasons),
                     **{k: v for k, v in report.as_dict().items() if k not in ("ok", "error")})
        else:
            log.debug("firewall unchanged", rules=report.rules, seconds=report.seconds)

    async def _apply_sysctls(self, snap: FirewallSnapshot, routed6: bool
                             ) -> list[SysctlChange]:
        """The sysctls the pools and the egress ask for (see `SA_ONLY_REASONS`)."""
        egress6 = self._egress.name6
        accept_ra = None
        if egress6 and self.cfg.sysctl.accept_ra and any(
                "ipv6" in p.families for p in snap.pools):
            accept_ra = await asyncio.to_thread(self._sysctl.read, accept_ra_key(egress6))
        want = desired_sysctls(self.cfg.sysctl, snap.pools, egress6=egress6,
                               egress6_accept_ra=accept_ra, proxy_ndp=routed6)
        return list(await asyncio.to_thread(self._sysctl.apply, want))

    def _poke_later(self, delay: float, reason: str) -> None:
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = self.clock.call_later(delay, lambda: self.poke(reason))

    async def _reconcile(self, refresh: bool = True, sysctls: bool = True) -> FirewallReport:
        started = time.perf_counter()
        fw = self.cfg.firewall
        if not fw.enabled:
            return FirewallReport(ok=True, problems=("[firewall] enabled = false",))
        snap = await self._snapshot(refresh)
        if self._net_state is not None:
            state = await self._net_state()
            self._set_net(state)
        egress = self._egress.name
        routed6 = self.cfg.ipv6.mode == "routed"
        problems = validate(fw, pools=snap.pools, egress=egress,
                            interfaces=self._egress.interfaces, source=self.cfg.source,
                            routed6=routed6)
        if problems:
            raise FirewallPassError(
                "firewall not changed, last good rules stay: " + "; ".join(map(str, problems))
            )
        mode = resolve_mode(fw.mode, snap.plugins)
        now = self.clock.monotonic()
        child_seen = held_child_sas(snap.child_sas, self._child_seen, now,
                                    settling=snap.settling, hold=SETTLE_HOLD)
        listed = set(snap.child_sas)
        held = [sa for sa in child_seen if sa not in listed]
        if held:
            log.debug("keeping forward rules of CHILD_SAs missing while an IKE_SA settles",
                      sas=[f"{sa.ike}/{sa.child} reqid {sa.reqid}" for sa in held])
            self._poke_later(SETTLE_HOLD, "settling")
        inputs = FirewallInputs(fw, mode, egress, snap.pools, tuple(child_seen))
        # counting the unseen SAs is itself a lookup per SA: only for sets small enough
        cost_us = 10 * len(child_seen)
        inline = cost_us <= INLINE_RULES_US and (
            cost_us + 55 * self._rule_cache.unseen(inputs) <= INLINE_RULES_US)
        try:
            # pure, and ~55 us per SA the first time it sees one (address parsing, a
            # SHA-256 per rule): 10,000 new SAs would hold the loop for half a second
            if inline:
                desired = desired_firewall(inputs, self._rule_cache)
            else:
                desired = await asyncio.to_thread(desired_firewall, inputs, self._rule_cache)
        except FirewallInputError as exc:
            raise FirewallPassError(f"firewall not changed, last good rules stay: {exc}") \
                from None
        # rules first: forwarding switched on before the NAT exists would leak pool
        # addresses to the internet for a moment
        applied = await self.backend.apply(desired)
        sysctl_changes = await self._apply_sysctls(snap, routed6) if sysctls else []
        for change in sysctl_changes:
            log.info("sysctl set", key=change.key.replace("/", "."), old=change.old,
                     new=change.new)
        self.last_desired = desired
        self._child_seen = child_seen
        return FirewallReport(
            ok=True, mode=mode, egress=egress, backend=applied.backend,
            rules=desired.rule_count, sas=len(snap.child_sas),
            changed_tables=applied.changed_tables, inserted=applied.inserted,
            deleted=applied.deleted,
            sysctls_changed=tuple(c.key.replace("/", ".") for c in sysctl_changes),
            seconds=time.perf_counter() - started,
        )


async def apply_firewall_once(cfg: SwandConfig, session: ViciSession) -> FirewallReport:
    """``swand apply``: one reconcile of sysctls and rules from charon's current state.

    Raises (FirewallPassError, FirewallBackendError, ViciError, ...) with a message that
    says why; on error nothing was changed beyond what a previous table commit did.
    """
    if not cfg.firewall.enabled:
        return FirewallReport(ok=True, problems=("[firewall] enabled = false",))
    fw = FirewallReconciler(cfg, vici_snapshot(session))
    try:
        return await fw.run_once()
    finally:
        await fw.stop()
