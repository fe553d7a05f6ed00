"""structlog set-up: key/value lines, JSON when stdout is not a TTY, console otherwise.

Library loggers (stdlib `logging`) are routed through the same renderer so one stream
carries everything. A `redact` processor is the last line of defence for secrets: any
event key that names a secret, at any depth of a logged dict or list and in any case, has
its value replaced before rendering. A process that never calls `configure_logging`
(every command but `swand run`) gets the same processors on stderr, so a log line never
mixes into a command's own output on stdout (`swand flush --json`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

#: event keys whose values must never reach a log line (compared in lower case; any key
#: starting with "secret" too, as swanctl.conf's `secret1`: settings.is_secret_key)
SECRET_KEYS = frozenset({"secret", "data", "password", "passphrase", "psk", "key_data", "pin"})
REDACTED = "<redacted>"


def _is_secret(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lower = key.lower()
    return lower in SECRET_KEYS or lower.startswith("secret")


def _redact(value: Any) -> Any:
    """A copy of `value` with the values of secret keys replaced (the caller's dicts,
    maybe a VICI message about to be sent, are left as they are)."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if type(value) is tuple:
        return tuple(_redact(v) for v in value)
    return value  # a set cannot hold a dict


def redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if _is_secret(key):
            event[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event[key] = _redact(value)
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    redact_secrets,
]


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr looked up per logger, not once: it follows redirections (tests)
    return structlog.PrintLogger(sys.stderr)


# until configure_logging runs (only `swand run` calls it): redacted, on stderr, at
# configure_logging's default level
structlog.configure(
    processors=[*_SHARED, structlog.processors.format_exc_info,
                structlog.dev.ConsoleRenderer(colors=False)],
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    logger_factory=_stderr_logger,
)


def configure_logging(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog and the stdlib root logger once, at start."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*_SHARED, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=_SHARED, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if numeric < logging.INFO else numeric)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
