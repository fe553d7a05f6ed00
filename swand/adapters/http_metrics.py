"""The /metrics HTTP endpoint: a small bounded asyncio server on its own thread.

The collector converts `swand.core.metrics.Family` values (whatever the source returns)
into prometheus-client families on each scrape. The source must only read memory (an
immutable snapshot the loop swapped in): collectors run on the HTTP thread, so they never
call VICI or touch the event loop.

Why not prometheus-client's `start_http_server`: it starts a thread per connection and
never times out a client, so idle sockets pile up; under systemd's TasksMax ~150 of them
make scrapes fail and can starve the daemon's own worker threads. This server keeps
prometheus-client's exposition (`choose_encoder`, gzip, `name[]` filters) but runs every
connection on one thread's event loop, with a deadline for the request, a deadline for
writing the answer, and a cap on open connections: when the cap is reached the connection
that has waited longest without sending a request is closed for the new one, so idle
sockets can never lock a scrape out.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
from prometheus_client.registry import Collector

from swand.core.metrics import Family

#: seconds a client has to send its request line and headers
REQUEST_TIMEOUT = 5.0
#: seconds a client has to take the answer
WRITE_TIMEOUT = 10.0
#: open connections at most (Prometheus needs one per scrape)
MAX_CONNECTIONS = 32
#: bytes of request line and headers at most
MAX_REQUEST_HEAD = 8192
#: the kernel's queue of connections not yet accepted (they cost no thread and no fd of
#: swand's; a full queue makes clients retry their SYN a second later)
BACKLOG = 1024


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


@dataclass(frozen=True)
class Limits:
    request_timeout: float = REQUEST_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


class _Connection:
    """One client: its transport, and whether its request has arrived (being served)."""

    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.writer = writer
        self.task = task
        self.serving = False

    def abort(self) -> None:
        self.writer.transport.abort()


def _answer(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
            extra: tuple[tuple[str, str], ...] = (), head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


def respond(registry: CollectorRegistry, head: bytes) -> bytes:
    """The whole HTTP answer to one request head (request line and headers)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _answer("400 Bad Request", b"bad request\n")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return _answer("405 Method Not Allowed", b"GET or HEAD\n", extra=(("Allow", "GET, HEAD"),))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    params = parse_qs(urlsplit(target).query)
    collector: Collector = registry
    if "name[]" in params:
        collector = registry.restricted_registry(params["name[]"])
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    body = encoder(collector)
    extra: tuple[tuple[str, str], ...] = ()
    if gzip_accepted(headers.get("accept-encoding", "")):
        body = gzip.compress(body)
        extra = (("Content-Encoding", "gzip"),)
    return _answer("200 OK", body, content_type, extra, head_only=method == "HEAD")


class MetricsServer:
    """/metrics on one thread running its own event loop (never the daemon's)."""

    def __init__(self, sock: socket.socket, registry: CollectorRegistry,
                 limits: Limits = Limits()) -> None:
        self.host, self.port = sock.getsockname()[:2]
        self.registry = registry
        self.limits = limits
        #: insertion order = age: the oldest idle connection is evicted first
        self._connections: dict[_Connection, None] = {}
        #: connections closed for newer ones at the cap, or for missing their deadline
        self.evicted = 0
        self.timed_out = 0
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._sock = sock
        self.thread = threading.Thread(target=self._run, name="swand-metrics", daemon=True)
        self.thread.start()
        self._ready.wait()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def stop(self) -> None:
        stopping = self._stopping
        if stopping is not None and self.thread.is_alive():
            self._loop.call_soon_threadsafe(stopping.set)
        self.thread.join(timeout=5)

    # --- the server thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._sock,
                                            limit=MAX_REQUEST_HEAD, backlog=BACKLOG)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            tasks = [c.task for c in self._connections if c.task is not None]
            for conn in list(self._connections):
                conn.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    def _admit(self, conn: _Connection) -> bool:
        """Make room under the cap: close the oldest connection still waiting for its
        request; if every one is being served, refuse the new one."""
        if len(self._connections) < self.limits.max_connections:
            self._connections[conn] = None
            return True
        for old in self._connections:
            if not old.serving:
                del self._connections[old]
                old.abort()
                self.evicted += 1
                self._connections[conn] = None
                return True
        return False

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer, asyncio.current_task())
        if not self._admit(conn):
            self.evicted += 1
            conn.abort()
            return
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                              self.limits.request_timeout)
            except TimeoutError:
                self.timed_out += 1
                return
            except asyncio.LimitOverrunError:
                answer = _answer("431 Request Header Fields Too Large", b"too large\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            else:
                conn.serving = True
                answer = respond(self.registry, head[:-4])
            writer.write(answer)
            try:
                await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
            except TimeoutError:
                self.timed_out += 1
        except ConnectionError:
            pass
        finally:
            self._connections.pop(conn, None)
            conn.abort()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for `host` (IPv4 or IPv6) and `port`."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def serve(listen: str, source: FamilySource, limits: Limits = Limits()) -> MetricsServer | None:
    """Start serving /metrics on `listen` (returns None when listen is empty).

    Raises OSError (address in use, permission) naming the address.
    """
    where = parse_listen(listen)
    if where is None:
        return None
    host, port = where
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise OSError(exc.errno, f"metrics: cannot listen on {listen}: {exc.strerror}") from exc
    return MetricsServer(sock, build_registry(source), limits)
