"""The /metrics HTTP endpoint: prometheus-client's server on its own thread.

The collector converts `swand.core.metrics.Family` values (whatever the source returns)
into prometheus-client families on each scrape. The source must only read memory (an
immutable snapshot the loop swapped in): collectors run on the HTTP thread, so they never
call VICI or touch the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from swand.core.metrics import Family


class FamilySource(Protocol):
    def families(self) -> list[Family]: ...
    def scrape_took(self, seconds: float) -> None: ...


def to_client_family(fam: Family) -> Metric:
    cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
    out = cls(fam.name, fam.help, labels=list(fam.labels))
    for labels, value in fam.samples:
        out.add_metric(list(labels), float(value))
    return out


class SnapshotCollector:
    """A prometheus-client custom collector over a FamilySource."""

    def __init__(self, source: FamilySource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            for fam in self.source.families():
                yield to_client_family(fam)
        finally:
            self.source.scrape_took(time.perf_counter() - started)

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families vary with charon's state


def build_registry(source: FamilySource, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    if process:
        ProcessCollector(registry=registry)  # process_resident_memory_bytes etc.
    return registry


def render(source: FamilySource, process: bool = False) -> bytes:
    """The exposition text a scrape would return (tests, `swand status --metrics`)."""
    return generate_latest(build_registry(source, process=process))


def parse_listen(listen: str) -> tuple[str, int] | None:
    """`host:port` / `[v6]:port` / `:port` -> (host, port); "" -> None (metrics off)."""
    listen = listen.strip()
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"[metrics] listen must be host:port or empty, got {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread
    host: str
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(listen: str, source: FamilySource) -> MetricsServer | None:
    """Start serving /metrics on `listen` (returns None when listen is empty).

    Raises OSError (address in use, permission) naming the address.
    """
    where = parse_listen(listen)
    if where is None:
        return None
    host, port = where
    try:
        server, thread = start_http_server(port, addr=host, registry=build_registry(source))
    except OSError as exc:
        raise OSError(exc.errno, f"metrics: cannot listen on {listen}: {exc.strerror}") from exc
    return MetricsServer(server, thread, host, server.server_address[1])
