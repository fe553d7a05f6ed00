"""The composition root: builds the adapters and runtime parts, orders start-up and
shutdown, and installs signal handlers (which only enqueue work).

Data flow: watchers (SIGHUP, the `Charon` owner's publications, RTNL, timers) poke
single-writer runners; the config runner owns every VICI write of configuration, the
firewall runner every kernel write. Nothing else writes. `swand.runtime.wiring` connects
charon's publications to the runners, for the daemon and the lab tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from swand import __version__
from swand.adapters.http_metrics import serve
from swand.adapters.sdnotify import SdNotify
from swand.adapters.vici import ViciError
from swand.config import SwandConfig, gateway_name
from swand.core.firewall import Pool, configured_pools
from swand.log import get_logger
from swand.runtime.charon import Charon
from swand.runtime.keepalive import Keepalive
from swand.runtime.loader import ConfigLoader, LoadReport
from swand.runtime.metrics import MetricsCollector, MetricsPoller, MetricsRegistry
from swand.runtime.runner import BoundedFrequencyRunner, PassRequest
from swand.runtime.wiring import firewall_reconciler, ndp_reconciler, route_reconciler, wire

log = get_logger("swand")

class Daemon:
    """`swand run`: everything that keeps charon and the kernel in the configured state."""

    def __init__(self, cfg: SwandConfig, notify: SdNotify | None = None) -> None:
        self.cfg = cfg
        self.notify = notify or SdNotify.from_environment()
        self.registry = MetricsRegistry()
        #: the three VICI connections (events, queries, commands) and restart detection
        self.charon = Charon(cfg.charon.vici, metrics=self.registry)
        self.loader = ConfigLoader(cfg.swanctl.dir,
                                   terminate_removed=cfg.swanctl.terminate_removed)
        self.registry.set_gateway(gateway_name(cfg))
        self.poller = MetricsPoller(cfg.charon.vici, self.registry,
                                    per_peer=cfg.metrics.per_peer, own_events=False,
                                    state_path=cfg.metrics.state_file or None,
                                    session=self.charon.queries)
        self.firewall: Any = None
        if cfg.firewall.enabled:
            self.firewall = firewall_reconciler(cfg, self.charon,
                                                config_pools=self._config_pools,
                                                on_report=self._firewall_report)
        self.ndp: Any = None
        if cfg.firewall.enabled and cfg.ipv6.mode == "routed":
            self.ndp = ndp_reconciler(
                cfg, self.charon,
                on_report=lambda report, _request: self.registry.record_ndp_proxies(
                    "success" if report.ok else "failure",
                    report.entries if report.ok else None))
        self.routes = self._make_routes(cfg)
        self.keepalive: Any = None
        if cfg.keepalive.conns:
            self.keepalive = Keepalive(cfg.charon.vici, cfg.keepalive.conns,
                                       self.charon.events, session=self.charon.commands)
        self.config_runner = BoundedFrequencyRunner(
            "config", self._config_pass, min_interval=0.2,
            max_interval=cfg.charon.interval, backoff_initial=0.25, backoff_max=2.0)
        wire(self.charon, firewall=self.firewall, ndp=self.ndp, routes=self.routes,
             poller=self.poller, config_runner=self.config_runner, keepalive=self.keepalive)
        self._stop = asyncio.Event()
        self._ready = False
        self._reload_pending = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.last_report: LoadReport | None = None

    # -- watchers: they only poke --------------------------------------------------------

    def _config_pools(self) -> tuple[Pool, ...]:
        """Pools as the swanctl files define them: NAT must not vanish in the moment
        between a charon restart and the loader loading the pools again."""
        return configured_pools(self.loader.desired)

    def _firewall_report(self, report: Any, request: PassRequest) -> None:
        """Count firewall passes; a periodic pass that had to change something found
        drift (nothing swand was told about explains the difference)."""
        changed = bool(report.changed_tables or report.sysctls_changed)
        drift = report.ok and changed and request.reasons <= {"periodic", "retry"}
        if drift:
            log.warning("firewall_drift_repaired", tables=list(report.changed_tables),
                        inserted=report.inserted, deleted=report.deleted,
                        sysctls=list(report.sysctls_changed))
        self.registry.record_firewall("success" if report.ok else "failure",
                                      drift_repaired=drift, seconds=report.seconds)

    # -- [routes]: a kernel route per leased virtual IP (swand.runtime.routes) ---------------

    def _make_routes(self, cfg: SwandConfig) -> Any:
        if not cfg.routes.enabled:
            return None

        return route_reconciler(cfg, self.charon, on_report=self._routes_report)

    def _routes_report(self, report: Any, request: PassRequest) -> None:
        drift = report.ok and report.changed and request.reasons <= {"periodic", "retry"}
        if drift:
            log.warning("routes_drift_repaired", added=report.added, removed=report.removed)
        self.registry.record_routes(report, drift_repaired=drift)

    def request_reload(self) -> None:
        """SIGHUP: re-read every file, reload what changed."""
        log.info("reload_requested")
        self._reload_pending = True
        self.notify.reloading("reloading configuration")
        self.config_runner.poke("sighup")

    def request_stop(self) -> None:
        self._stop.set()

    # -- the config writer -----------------------------------------------------------------

    async def _config_pass(self, request: PassRequest) -> None:
        reread = bool(request.reasons & {"start", "sighup"})
        reload_done = self._reload_pending
        self._reload_pending = False
        try:
            report = await self.loader.reconcile(self.charon.commands, reread=reread,
                                                 full=request.full)
        except ViciError as exc:
            if reload_done:
                self.registry.record_reload("failure")
                self._reload_pending = True  # finish the reload once charon answers
            raise RuntimeError(f"charon: {exc}") from exc
        self.last_report = report
        for line in report.failure_lines():
            log.error("config_error", detail=line)
        if report.changed or request.full or reread:
            log.info("config_reconciled", reasons=sorted(request.reasons), full=report.full,
                     changed=report.changed, ok=report.ok, **report.counts(),
                     duration=round(report.duration, 3))
        if reread:
            self.registry.record_reload("success" if report.ok else "failure")
        if self.loader.desired is not None:
            desired = self.loader.desired
            self.registry.set_loaded_items({
                "connection": len(desired.conns), "pool": len(desired.pools),
                "authority": len(desired.authorities), "certificate": len(desired.certs),
                "key": len(desired.keys) + len(desired.tokens),
                "shared_secret": len(desired.shared),
            })
        self.poller.poke()
        if self.firewall is not None and report.changed:
            self.firewall.poke("config")  # pools may have changed
        if not self._ready:
            await self._first_firewall_pass()
            self._ready = True
            self.notify.ready(self._status_line(report))
        elif reload_done:
            self.notify.ready(self._status_line(report))
        else:
            self.notify.status(self._status_line(report))

    async def _first_firewall_pass(self) -> None:
        """READY=1 waits for the first firewall pass too (bounded: a firewall that cannot
        be reconciled is logged and retried; it must not keep the service 'activating')."""
        if self.firewall is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.firewall.wait_idle(), 10.0)

    def _status_line(self, report: LoadReport) -> str:
        errors = report.error_count
        state = "ok" if report.ok else f"{errors} error(s), last good state kept"
        return f"config {state}; charon {'up' if self.charon.up else 'down'}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notify.watchdog()
            await asyncio.sleep(interval)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task_crashed", task=task.get_name(), error=repr(exc))
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        log.info("starting", version=__version__, config=self.cfg.source,
                 vici=self.cfg.charon.vici, swanctl_dir=self.cfg.swanctl.dir,
                 firewall=self.cfg.firewall.enabled)
        metrics_server = None
        if self.cfg.metrics.listen:
            metrics_server = serve(self.cfg.metrics.listen,
                                   MetricsCollector(self.poller, self.registry))
            if metrics_server:
                log.info("metrics_listening", host=metrics_server.host,
                         port=metrics_server.port)
        if self.firewall is not None:
            await self.firewall.start()  # refuses a wrong backend before anything runs
        if self.ndp is not None:
            await self.ndp.start()
        if self.routes is not None:
            await self.routes.start()
        self.config_runner.poke("start")
        self._spawn(self.charon.run(), "charon")
        self._spawn(self.config_runner.run(), "config-runner")
        self._spawn(self.poller.run(), "metrics-poller")
        if self.keepalive is not None:
            self._spawn(self.keepalive.run(), "keepalive")
        interval = self.notify.watchdog_interval()
        if interval:
            self._spawn(self._watchdog(interval), "watchdog")
        started = time.monotonic()
        await self._stop.wait()
        log.info("stopping", uptime=round(time.monotonic() - started, 1))
        self.notify.stopping("stopping; firewall rules and charon state stay in place")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if metrics_server:
            metrics_server.stop()
        closers = [self.poller.close, self.charon.close]
        if self.firewall is not None:
            closers.insert(0, self.firewall.stop)  # rules stay in place
        if self.ndp is not None:
            closers.insert(0, self.ndp.stop)  # NDP proxy entries stay in place
        if self.routes is not None:
            closers.insert(0, self.routes.stop)  # routes stay: charon's SAs do too
        for closer in closers:
            with contextlib.suppress(Exception):
                await closer()
        return 0
