"""Shared fixtures for the unit tests.

`strongswan_settings`: libstrongswan's own settings parser as an oracle. A worker
process loads /usr/lib/ipsec/libstrongswan.so.0 with ctypes, parses a file with
`settings_t.load_files()` and walks the result with the section and key/value
enumerators (exactly what swanctl does), so swand's parser can be compared with the
real thing without a charon. The worker is restarted when libstrongswan exits the
process (flex aborts on some inputs). Skipped where libstrongswan is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

LIBSTRONGSWAN = "/usr/lib/ipsec/libstrongswan.so.0"

# Runs in the worker; layout of settings_t/enumerator_t from libstrongswan 5.9's headers.
_WORKER = r"""
import ctypes, json, os, resource, sys, tempfile
# libstrongswan follows include cycles until it runs out of descriptors: keep that short
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
lib = ctypes.CDLL(sys.argv[1])
P = ctypes.c_void_p
lib.library_init.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
lib.library_init.restype = ctypes.c_bool
lib.settings_create.argtypes = [ctypes.c_char_p]
lib.settings_create.restype = P
fd, empty = tempfile.mkstemp(suffix=".conf")  # an empty strongswan.conf, gone at once
os.close(fd)
lib.library_init(empty.encode(), b"swanctl")
os.unlink(empty)
GET_STR, SECTIONS, KVS, LOAD_FILES, DESTROY = 0, 11, 12, 14, 18
PSTR = ctypes.POINTER(ctypes.c_char_p)

def method(obj, idx, restype, *argtypes):
    table = ctypes.cast(obj, ctypes.POINTER(P))
    fn = ctypes.CFUNCTYPE(restype, P, *argtypes)(table[idx])
    return lambda *a: fn(obj, *a)

def text(raw):
    return raw.decode("utf-8", "surrogateescape")

def fmt(path):
    return path.encode("utf-8", "surrogateescape").replace(b"%", b"%%")

def enumerate_(settings, idx, path, n):
    e = method(settings, idx, P, ctypes.c_char_p)(fmt(path))
    out = []
    ptrs = [ctypes.c_char_p() for _ in range(n)]
    step = method(e, 0, ctypes.c_bool, *([PSTR] * n))
    while step(*[ctypes.byref(p) for p in ptrs]):
        out.append([text(p.value) for p in ptrs] if n > 1 else text(ptrs[0].value))
    method(e, 2, None)()
    return out

def tree(settings, path, depth, budget):
    budget[0] -= 1
    node = {"kv": enumerate_(settings, KVS, path, 2), "sec": {}}
    if depth >= MAXDEPTH or budget[0] <= 0:
        node["truncated"] = True
        return node
    for name in enumerate_(settings, SECTIONS, path, 1):
        node["sec"][name] = tree(settings, f"{path}.{name}" if path else name, depth + 1, budget)
    return node

for line in sys.stdin:
    req = json.loads(line)
    MAXDEPTH = req.get("maxdepth", 12)
    settings = lib.settings_create(None)
    ok = method(settings, LOAD_FILES, ctypes.c_bool, ctypes.c_char_p, ctypes.c_bool)(
        req["path"].encode("utf-8", "surrogateescape"), False)
    result = {"ok": bool(ok)}
    if ok:
        result["tree"] = tree(settings, "", 0, [req.get("budget", 5000)])
    method(settings, DESTROY, None)()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
"""


class StrongswanSettings:
    """Parse files with libstrongswan in a worker process."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER, LIBSTRONGSWAN],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="surrogateescape",
            )
        return self.proc

    def parse(self, path: str | os.PathLike[str], maxdepth: int = 12) -> dict[str, Any]:
        """{"ok": bool, "tree": {"kv": [[k, v]...], "sec": {name: tree}}} or
        {"crashed": True} when libstrongswan ended the worker."""
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        request = {"path": os.fspath(path), "maxdepth": maxdepth}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            proc.wait(timeout=5)
            self.proc = None
            return {"crashed": True}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


@pytest.fixture(scope="session")
def strongswan_settings() -> Iterator[StrongswanSettings]:
    if not os.path.exists(LIBSTRONGSWAN):
        pytest.skip("libstrongswan is not installed")
    oracle = StrongswanSettings()
    yield oracle
    oracle.close()


def as_tree(section: Any, maxdepth: int = 12, budget: int = 5000) -> dict[str, Any]:
    """A swand Section in the oracle's shape (same depth limit and node budget, same
    depth-first order), for comparison."""
    left = [budget]

    def walk(node: Any, depth: int) -> dict[str, Any]:
        left[0] -= 1
        out: dict[str, Any] = {"kv": [[key, value] for key, value in node.items()], "sec": {}}
        if depth >= maxdepth or left[0] <= 0:
            out["truncated"] = True
            return out
        for child in node:
            out["sec"][child.name] = walk(child, depth + 1)
        return out

    return walk(section, 0)


@pytest.fixture(scope="session")
def section_as_tree() -> Any:
    return as_tree
