"""A lab charon that also loads the stroke plugin, and starter feeding it ipsec.conf:
the reference side of `swand import`'s differential conformance test.

Why it is built this way:
- stroke reads certificates and keys below the compiled-in /etc/ipsec.d: charon runs
  with the host's `ipsec_d` folder bind-mounted there, in its own mount namespace (`ip
  netns exec` gives one; the 6.0 tree's /etc/ipsec.d likewise), so the machine's
  /etc/ipsec.d is never touched and many instances can run at once.
- starter sends connections only to a daemon it started itself: it runs as `--daemon
  stroke` with a fake daemon (a script writing the pid file, then sleeping) bind-mounted
  over /usr/lib/ipsec/stroke and a private /run, in its own mount namespace, and talks
  to the real charon over the stroke socket (`stroke.plugins.stroke.socket` in the lab's
  strongswan.conf); then it waits for signals.
- starter never says it is done: a sentinel conn (`auto=route`, last in the file) is
  added and routed after all others, so once starter prints stroke's answer about it
  every earlier message was handled (stroke answers each message before starter sends
  the next).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from swand.lab import trixie
from swand.lab.charon import DEFAULT_PLUGINS, Charon
from swand.lab.util import LabError

SENTINEL = "zz-swand-import-sentinel"
SENTINEL_CONF = f"""
conn {SENTINEL}
\tleft=%any
\tright=192.0.2.254
\tleftsubnet=198.51.100.254/32
\trightsubnet=203.0.113.254/32
\tauthby=secret
\tkeyexchange=ikev2
\tauto=route
"""


class StrokeCharon(Charon):
    """charon with the stroke plugin; `ipsec_d` is its /etc/ipsec.d, `secrets` the
    ipsec.secrets it reads."""

    def __init__(self, netns: str, workdir: Path, version: str, tree: Path | None = None,
                 binds: tuple[str, ...] = ()) -> None:
        self.ipsec_d = workdir / "ipsec.d"
        self.secrets_path = workdir / "ipsec.secrets"
        self.stroke_socket = workdir / "charon.ctl"
        for sub in ("cacerts", "certs", "private", "aacerts", "ocspcerts", "acerts", "crls"):
            (self.ipsec_d / sub).mkdir(parents=True, exist_ok=True)
        self.secrets_path.write_text("")
        stroke = (f"plugins {{\n stroke {{\n  socket = unix://{self.stroke_socket}\n"
                  f"  secrets_file = {self.secrets_path}\n }}\n}}\n")
        # charon reads charon.plugins.stroke; starter and the stroke tool, run as daemon
        # "stroke" (see run_starter), read stroke.plugins.stroke
        extra = f"{stroke}}}\nstroke {{\n{stroke}"
        super().__init__(netns, workdir, version, (*DEFAULT_PLUGINS, "stroke"), extra,
                         tree, binds)

    def argv(self, program: str) -> list[str]:
        base = super().argv(program)
        target = "/etc/ipsec.d"
        if self.version == "6.0":
            assert self.tree is not None
            target = f"{self.tree}/etc/ipsec.d"
        # mount in the namespace `ip netns exec` made, then run the rest unchanged
        mount = ["sh", "-c", f"mount --bind '{self.ipsec_d}' '{target}' && exec \"$@\"",
                 "stroke-charon"]
        assert base[:3] == ["ip", "netns", "exec"]
        return [*base[:4], *mount, *base[4:]]

    def stroke(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """The `stroke` tool against this charon (e.g. `rereadall`, `delete NAME`)."""
        return subprocess.run(
            [*Charon.argv(self, "/usr/lib/ipsec/stroke"), *args], env=self.env(),
            capture_output=True, text=True, timeout=timeout, check=False)

    def run_starter(self, conf: Path, timeout: float = 30.0) -> tuple[bool, str]:
        """Feed `conf` (with the sentinel appended by the caller) through starter; wait
        until the sentinel is routed or starter exits. (ok, starter's output)."""
        run_dir = self.workdir / "starter-run"
        (run_dir / "swand-lab").mkdir(parents=True, exist_ok=True)
        lab_root = trixie.LAB_ROOT
        # a private /run (the lab folder, below /run, stays visible through it)
        fake = self.workdir / "fake-daemon"
        fake.write_text("#!/bin/sh\necho $$ > /var/run/stroke.pid\n"
                        "exec sleep 3600 </dev/null >/dev/null 2>&1\n")
        fake.chmod(0o755)
        # a private /run (the lab folder, below /run, stays visible through it); starter
        # "starts" the fake daemon in place of /usr/lib/ipsec/stroke (in this mount
        # namespace only) and then talks to the real charon over the stroke socket
        inner = (f"set -e; mount --bind '{lab_root}' '{run_dir}/swand-lab'; "
                 f"mount --rbind '{run_dir}' /run; "
                 f"mount --bind '{fake}' /usr/lib/ipsec/stroke; "
                 f"exec /usr/lib/ipsec/starter --nofork --daemon stroke --conf '{conf}'")
        if self.version == "6.0":
            assert self.tree is not None
            argv = [*Charon.argv(self, "/bin/sh"), "-c", inner]
        else:
            argv = ["ip", "netns", "exec", self.netns, "sh", "-c", inner]
        proc = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        lines: list[str] = []
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        ok = timed_out = False
        try:
            while not ok:
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                # starter prints stroke's answer to routing the sentinel, whatever it is
                ok = any(SENTINEL in line for line in list(lines))
                if not ok:
                    time.sleep(0.01)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(5)
            self._kill_fake_daemon(run_dir / "stroke.pid")
        out = "".join(lines)
        if timed_out:
            raise LabError(f"starter did not finish {conf} in {timeout:g} s: {out[-1500:]}")
        return ok, out

    @staticmethod
    def _kill_fake_daemon(pid_file: Path) -> None:
        """The fake daemon runs in its own session (starter calls setsid for it)."""
        try:
            pid = int(pid_file.read_text().strip())
            pid_file.unlink()
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tree_has_starter(tree: Path) -> bool:
    return (tree / "usr/lib/ipsec/starter").exists() and (
        tree / "usr/lib/ipsec/plugins/libstrongswan-stroke.so").exists()


__all__ = ["SENTINEL", "SENTINEL_CONF", "StrokeCharon", "tree_has_starter", "trixie"]
