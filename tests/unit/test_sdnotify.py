"""The sd_notify protocol against a datagram socket the test creates (systemd's side)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swand.adapters.sdnotify import SdNotify


def _receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_status_stopping(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = SdNotify.from_environment({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("3 connections loaded")
    assert _receive(sock) == {"READY": "1", "STATUS": "3 connections loaded"}
    assert n.status("line one\nline two")
    assert _receive(sock) == {"STATUS": "line one line two"}
    assert n.stopping()
    assert _receive(sock) == {"STOPPING": "1"}
    n.close()


def test_reloading_carries_monotonic_usec(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = SdNotify.from_environment({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = _receive(sock)
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    n.ready()
    assert _receive(sock) == {"READY": "1"}
    n.close()


def test_abstract_socket_name() -> None:
    name = f"swand-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = SdNotify.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert _receive(sock) == {"READY": "1"}
        n.close()
    finally:
        sock.close()


def test_watchdog_interval_is_half_and_pings(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = SdNotify.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval() == 15.0
    assert n.watchdog()
    assert _receive(sock) == {"WATCHDOG": "1"}
    n.close()


def test_watchdog_for_another_pid_is_not_ours(listener: tuple[str, socket.socket]) -> None:
    path, _ = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert SdNotify.from_environment(env).watchdog_interval() is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert SdNotify.from_environment(env).watchdog_interval() == 15.0


@pytest.mark.parametrize("usec", ["", "0", "junk", "-5"])
def test_no_watchdog_without_a_valid_usec(listener: tuple[str, socket.socket], usec: str) -> None:
    path, _ = listener
    n = SdNotify.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert n.watchdog_interval() is None


def test_no_op_outside_systemd() -> None:
    n = SdNotify.from_environment({})
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert n.ready() and n.reloading() and n.stopping() and n.status("x") and n.watchdog()


def test_missing_socket_reports_failure_without_raising(tmp_path: Path) -> None:
    n = SdNotify.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False
    assert n.ready() is False  # and again: reconnects, still no exception
