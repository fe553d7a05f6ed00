"""swand.log: the redaction of secrets is the last line of defence, so it must cover every
place a secret can sit in a log event and every process that logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from swand.log import configure_logging, get_logger, redact_secrets

SECRET = "s3cret-psk-value"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("json", "debug", stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_secret_key_is_redacted_at_the_top_and_the_rest_kept(
        json_lines: io.StringIO) -> None:
    get_logger("t").info("loaded", psk=SECRET, conn="rw")
    (event,) = events(json_lines)
    assert event["psk"] == "<redacted>" and event["conn"] == "rw"
    assert event["event"] == "loaded"


def test_secrets_inside_a_logged_vici_message_are_redacted(
        json_lines: io.StringIO) -> None:
    """A VICI message dict (load-shared, load-key) logged whole: its secrets sit below
    the top level, in lists of sections too, and may be bytes."""
    message = {"id": "ike-1", "type": "ike", "data": SECRET.encode(),
               "owners": ["gw", "client"],
               "nested": [{"Password": SECRET}, {"secret": [SECRET]}]}
    get_logger("t").warning("request", message=message, pin=(SECRET,))
    text = json_lines.getvalue()
    assert SECRET not in text, text
    (event,) = events(json_lines)
    assert event["pin"] == "<redacted>"
    assert event["message"]["owners"] == ["gw", "client"]
    assert event["message"]["data"] == "<redacted>"
    assert event["message"]["nested"] == [{"Password": "<redacted>"},
                                          {"secret": "<redacted>"}]


def test_key_names_are_matched_whatever_their_case(json_lines: io.StringIO) -> None:
    get_logger("t").info("x", PSK=SECRET, Passphrase=SECRET)
    assert SECRET not in json_lines.getvalue()


def test_swanctl_conf_secret_keys_are_matched(json_lines: io.StringIO) -> None:
    """swanctl.conf takes `secret`, `secret1`, `secret-old`... (settings.is_secret_key):
    a secrets section logged as a dict must not show any of them."""
    get_logger("t").info("x", section={"id": "gw", "secret1": SECRET, "Secret-2": SECRET})
    assert SECRET not in json_lines.getvalue()
    (event,) = events(json_lines)
    assert event["section"]["id"] == "gw"


def test_redaction_leaves_the_callers_dict_alone() -> None:
    """Processors get the caller's values: a nested dict must not be edited in place
    (it may be the very VICI message about to be sent)."""
    message = {"data": b"key bytes", "type": "rsa"}
    out = redact_secrets(None, "info", {"event": "x", "message": message})
    assert out["message"] == {"data": "<redacted>", "type": "rsa"}
    assert message == {"data": b"key bytes", "type": "rsa"}


def test_every_process_that_logs_redacts_and_keeps_stdout_for_its_output() -> None:
    """Commands other than `swand run` never call configure_logging: their log lines
    (firewall backend choice, retries) must still be redacted and must not land in
    stdout, where `swand flush --json` prints its report."""
    code = ("from swand.log import get_logger; "
            "get_logger('t').debug('chatter'); "
            f"get_logger('t').warning('probe', psk={SECRET!r}, conn='rw')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=30)
    assert proc.stdout == ""
    assert "probe" in proc.stderr and "<redacted>" in proc.stderr
    assert SECRET not in proc.stderr
    assert "chatter" not in proc.stderr  # the default level, as configure_logging's
