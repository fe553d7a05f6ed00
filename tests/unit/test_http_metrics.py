"""The /metrics server is bounded: one thread for every connection, a deadline for the
request, a cap on open connections, and idle sockets can never lock a scrape out.
Real sockets on loopback; waits are on conditions (socket reads with timeouts)."""

from __future__ import annotations

import contextlib
import gzip
import resource
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from swand.adapters import http_metrics
from swand.core.metrics import Family

UP = Family("swand_charon_up", "gauge", "1 if charon answers", (), (((), 1.0),))
SAS = Family("swand_ike_sas", "gauge", "IKE SAs", ("state",), ((("ESTABLISHED",), 3.0),))


class _Source:
    def families(self) -> list[Family]:
        return [UP, SAS]

    def scrape_took(self, seconds: float) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http_metrics.MetricsServer]:
    srv = http_metrics.serve("127.0.0.1:0", _Source())
    assert srv is not None
    yield srv
    srv.stop()
    assert not srv.thread.is_alive()


def _request(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return str(r.read().decode())


def test_scrape_is_prometheus_clients_exposition(
        server: http_metrics.MetricsServer) -> None:
    text = _scrape(server.port)
    assert "swand_charon_up 1.0" in text
    assert 'swand_ike_sas{state="ESTABLISHED"} 3.0' in text
    assert "process_resident_memory_bytes" in text


def test_head_gzip_and_openmetrics(server: http_metrics.MetricsServer) -> None:
    head = _request(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    zipped = _request(server.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
    headers, _, body = zipped.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in headers
    assert b"swand_charon_up 1.0" in gzip.decompress(body)
    om = _request(server.port, b"GET /metrics HTTP/1.1\r\n"
                  b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    assert b"application/openmetrics-text" in om and om.endswith(b"# EOF\n")


@pytest.mark.parametrize(("raw", "status"), [
    (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
    (b"nonsense\r\n\r\n", b"400"),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b"431"),
])
def test_bad_requests_get_a_status_and_a_close(
        server: http_metrics.MetricsServer, raw: bytes, status: bytes) -> None:
    assert _request(server.port, raw).split(b" ")[1] == status


def test_a_client_that_never_finishes_its_request_is_closed() -> None:
    srv = http_metrics.serve("127.0.0.1:0", _Source(),
                             http_metrics.Limits(request_timeout=0.2))
    assert srv is not None
    try:
        for raw in (b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"):  # idle, slow loris
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(raw)
                assert s.recv(1) == b""  # closed by the server long before 10 s
        assert srv.timed_out == 2
    finally:
        srv.stop()


@contextlib.contextmanager
def _open_files(wanted: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_idle_connections_do_not_stop_a_scrape(
        server: http_metrics.MetricsServer) -> None:
    """No thread per connection, at most `max_connections` open: the oldest idle ones
    are closed for newcomers, so the scrape that arrives last is answered."""
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    with _open_files(4096):
        try:
            for _ in range(1000):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                idle.append(s)
            assert threading.active_count() <= threads_before
            text = _scrape(server.port)
            assert "swand_charon_up 1.0" in text
            assert server.open_connections <= http_metrics.MAX_CONNECTIONS
            assert server.evicted >= 1000 - http_metrics.MAX_CONNECTIONS
            assert threading.active_count() <= threads_before
        finally:
            for s in idle:
                s.close()
