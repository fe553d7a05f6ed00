"""Small helpers the lab and its tests share: running commands, polling, decoding VICI."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class LabError(Exception):
    """The lab could not be built or operated; the message says what and why."""


def sh(
    argv: Sequence[str], *, check: bool = True, input: str | None = None,
    timeout: float = 60.0, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture text output; on failure raise LabError with its stderr,
    because a bare CalledProcessError hides what went wrong."""
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed ({exc})") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)}: exit {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-3000:]}"
        )
    return proc


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy and return that value.

    Raises TimeoutError naming `message` (a string or a callable giving one, e.g. the
    tail of a charon log) when `timeout` seconds pass. Exceptions from the predicate
    propagate: a broken probe should fail loudly, not look like a slow one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


def decode(value: Any) -> Any:
    """VICI answers carry bytes; turn them (recursively) into str for easy asserts."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [decode(v) for v in value]
    return value


def die_with_parent() -> list[str]:
    """argv prefix making a child get SIGKILL when this process dies (PR_SET_PDEATHSIG
    via util-linux `setpriv`), so a SIGKILLed test run leaves no charon behind. Only from
    the main thread: the signal fires when the *thread* that started the child exits,
    and a worker thread (asyncio.to_thread) may exit long before the test ends."""
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []
