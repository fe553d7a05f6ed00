"""One charon-systemd per lab host: its strongswan.conf, its process, its VICI socket.

Why these settings:
- `load` lists plugins explicitly (no `resolve`: it would rewrite the host's
  /etc/resolv.conf; no `stroke`: no /var/run/charon.ctl shared between instances).
- `kernel-libipsec` because this kernel has XFRM but no ESP; conns use `encap = yes`.
- The VICI socket and the file log live in the host's lab folder, so instances never
  share a path; charon-systemd writes no pid file, and its journal logger is off so the
  machine's journal is not flooded.
- Fast retransmits so DPD and dead-peer tests take seconds, not minutes.
- A plugin named in `load` but missing (its package not installed) does not stop charon:
  it starts and fails much later, on a certificate or a proposal. So the plugin files are
  checked before charon starts and its VICI `stats` plugin list once it answers, and a
  missing one is a LabError naming the plugin and its Debian package in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import vici

from swand.core import plugins as charon_plugins
from swand.lab import trixie
from swand.lab.util import LabError, decode, die_with_parent

VERSIONS = ("5.9", "6.0")
#: the Debian release each lab charon comes from (for the package of a missing plugin)
RELEASES = {"5.9": "bookworm", "6.0": "trixie"}

#: plugins present in both 5.9.8 (bookworm) and 6.0.1 (trixie)
DEFAULT_PLUGINS: tuple[str, ...] = (
    "random", "nonce", "openssl", "pem", "pkcs1", "pkcs7", "pkcs8", "pkcs12", "x509",
    "pubkey", "sshkey", "revocation", "constraints", "curve25519", "sha1", "sha2", "md5",
    "hmac", "kdf", "drbg", "aes", "gcm", "gmp", "attr", "kernel-libipsec", "kernel-netlink",
    "socket-default", "vici", "counters", "eap-identity", "eap-md5", "eap-mschapv2",
    "eap-tls", "xauth-generic",
)


def render_strongswan_conf(
    *, vici_uri: str, log_path: Path, plugins: tuple[str, ...] | list[str] = DEFAULT_PLUGINS,
    extra: str = "",
) -> str:
    """strongswan.conf for one lab charon. `extra` is appended inside `charon { }`."""
    return f"""# written by swand.lab
charon-systemd {{
    journal {{
        default = -1
    }}
}}
charon {{
    load = {" ".join(plugins)}
    retransmit_tries = 2
    retransmit_timeout = 1.0
    retransmit_base = 1.2
    filelog {{
        lab {{
            path = {log_path}
            time_format = %H:%M:%S
            ike_name = yes
            append = yes
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            knl = 1
        }}
    }}
    plugins {{
        vici {{
            socket = {vici_uri}
        }}
    }}
{extra}
}}
swanctl {{
    socket = {vici_uri}
    plugins {{
        vici {{
            socket = {vici_uri}
        }}
    }}
}}
"""


class Charon:
    """A charon-systemd process in a network namespace (5.9 from the host, 6.0 from the
    cached trixie tree, chrooted). Not started on construction; `start()` waits until
    VICI answers."""

    def __init__(
        self, netns: str, workdir: Path, version: str = "5.9",
        plugins: tuple[str, ...] | list[str] = DEFAULT_PLUGINS, extra_conf: str = "",
        tree: Path | None = None, binds: tuple[str, ...] | list[str] = (),
    ) -> None:
        if version not in VERSIONS:
            raise LabError(f"charon version must be one of {', '.join(VERSIONS)}, got "
                           f"{version!r}")
        self.netns = netns
        self.workdir = workdir
        self.version = version
        self.tree = tree
        #: host folders shown read-only at the same path to a chrooted (6.0) charon and
        #: swanctl; the 5.9 ones see the whole host anyway
        self.binds = tuple(binds)
        if version == "6.0":
            if not workdir.resolve().is_relative_to(trixie.LAB_ROOT):
                raise LabError(f"charon 6.0 runs chrooted and sees only {trixie.LAB_ROOT} of "
                               f"the host; its folder {workdir} must be below it")
            if tree is None:
                self.tree = trixie.trixie_tree()
        self.conf_path = workdir / "strongswan.conf"
        self.log_path = workdir / "charon.log"
        self.stdout_path = workdir / "charon.stdout"
        self.socket_path = workdir / "charon.vici"
        self.vici_uri = f"unix://{self.socket_path}"
        self.swanctl_dir = workdir / "swanctl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.plugins = tuple(plugins)
        self.conf_path.write_text(render_strongswan_conf(
            vici_uri=self.vici_uri, log_path=self.log_path, plugins=plugins,
            extra=extra_conf,
        ))

    # --- process ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def argv(self, program: str) -> list[str]:
        """Command line running `program` (/usr/sbin/...) in the namespace, chrooted for
        6.0."""
        base = ["ip", "netns", "exec", self.netns]
        if self.version == "6.0":
            assert self.tree is not None
            return [*base, *trixie.chroot_prefix(self.tree, self.binds), program]
        return [*base, program]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["STRONGSWAN_CONF"] = str(self.conf_path)
        env["SWANCTL_DIR"] = str(self.swanctl_dir)
        return env

    def missing_plugins_error(self, missing: list[str], how: str) -> LabError:
        """One line: which plugins, why, and the package that ships them."""
        release = RELEASES[self.version]
        packages = sorted({pkg for name in missing
                           if (pkg := charon_plugins.package_of(name, release))})
        if self.version == "6.0" and packages:
            fix = (f"the trixie tree {self.tree} lacks them: add {' '.join(packages)} to "
                   "swand/lab/trixie.py PACKAGES (the cached tree is rebuilt)")
        else:
            fix = charon_plugins.install_hint(missing, release)
            if packages:
                fix += " (./dev.sh setup installs them)"
        return LabError(f"charon {self.version} in {self.netns} lacks plugin "
                        f"{', '.join(missing)} ({how}): {fix}")

    def check_plugin_files(self) -> None:
        """Every plugin of `load` has its file (charon would start without it)."""
        root = self.tree if self.version == "6.0" and self.tree is not None else Path("/")
        folder = root / charon_plugins.PLUGIN_DIR.lstrip("/")
        missing = [p for p in self.plugins
                   if not (folder / charon_plugins.plugin_file(p)).exists()]
        if missing:
            raise self.missing_plugins_error(missing, f"no file in {folder}")

    def check_plugins_loaded(self) -> None:
        """Every plugin of `load` is in charon's `stats` list (a file that exists can
        still fail to load, e.g. a library it links to is missing)."""
        with self.session(timeout=5.0) as s:
            loaded = set(decode(s.stats()).get("plugins", []))
        missing = [p for p in self.plugins if p not in loaded]
        if missing:
            raise LabError(
                f"charon {self.version} in {self.netns} did not load plugin "
                f"{', '.join(missing)} although named in `load` (a plugin it needs, e.g. "
                f"openssl, missing or not loaded?): the reason is in {self.log_path}")

    def spawn(self) -> None:
        """Start charon without waiting (the lab starts many, then waits for all)."""
        if self.pid is not None:
            raise LabError(f"charon in {self.netns} already runs (pid {self.pid})")
        self.check_plugin_files()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket would look alive to a poller
        out = open(self.stdout_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [*die_with_parent(), *self.argv("/usr/sbin/charon-systemd")], env=self.env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        """Poll the VICI socket every 50 ms until `version` answers; return it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise LabError(f"charon in {self.netns} exited ({code}) before VICI answered;"
                               f" {self.tail()}")
            try:
                with self.session(timeout=1.0) as s:
                    version: dict[str, str] = decode(s.version())
            except OSError:
                pass
            else:
                self.check_plugins_loaded()
                return version
            if time.monotonic() > deadline:
                raise LabError(f"charon in {self.netns}: VICI {self.vici_uri} not answering "
                               f"after {timeout:g} s; {self.tail()}")
            time.sleep(0.05)

    def start(self, timeout: float = 15.0) -> dict[str, str]:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if charon does not exit within `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc.wait()

    def kill9(self) -> None:
        """SIGKILL, as a crash would: the socket file stays behind, SAs are not deleted."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self, timeout: float = 15.0) -> dict[str, str]:
        self.stop()
        return self.start(timeout)

    # --- VICI ------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, timeout: float | None = 10.0) -> Iterator[vici.Session]:
        """A blocking `vici.Session` on this charon's socket (closed afterwards). The
        timeout keeps a test from hanging on a wedged charon."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.socket_path))
            yield vici.Session(sock)
        finally:
            sock.close()

    def tail(self, lines: int = 15) -> str:
        """Last lines of the charon log (or its stdout), for error messages."""
        for path in (self.log_path, self.stdout_path):
            try:
                text = path.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            if text:
                return f"last lines of {path}:\n" + "\n".join(text[-lines:])
        return "no charon log yet"


def start_all(charons: list[Charon], timeout: float = 15.0) -> list[dict[str, str]]:
    """Spawn every charon first, then wait for each: start-up runs in parallel."""
    for c in charons:
        c.spawn()
    return [c.wait_ready(timeout) for c in charons]
