"""charon 6.0 for the lab: a Debian trixie tree built once with debootstrap and cached.

The tree is built into a temporary folder next to the cache and renamed into place, under
an flock, so parallel test runs never see (or build) half a tree. Nothing is ever mounted
into the cached tree from the host's point of view: every chrooted charon/swanctl runs in
its own mount namespace (`ip netns exec` makes one) and mounts /dev, /proc, /sys and the
lab folder there; the mounts die with the process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from swand.lab.util import LabError, sh

CACHE_DIR = Path(os.environ.get("SWAND_LAB_CACHE", "/var/cache/swand-lab"))
#: a ready tree can be named directly (CI may build it in an earlier step)
TREE_ENV = "SWAND_LAB_TRIXIE"
MIRROR = os.environ.get("SWAND_LAB_MIRROR", "http://deb.debian.org/debian")
#: the host's Debian 12 set (charon-systemd, swanctl, standard/extra/extauth plugins,
#: starter), so both versions load the same plugins; a changed list makes the cache
#: rebuild
PACKAGES = ",".join((
    "charon-systemd", "strongswan-swanctl", "libcharon-extra-plugins",
    "libcharon-extauth-plugins", "libstrongswan-standard-plugins",
    "libstrongswan-extra-plugins", "iproute2",
    # starter and the stroke plugin: the reference side of swand import's conformance test
    "strongswan-starter",
    # /etc/services and /etc/protocols: traffic selectors like [tcp/ssh] or [icmp]
    "netbase",
))
STAMP = ".swand-lab-packages"
#: where the lab folder root is bind-mounted inside the tree (same path as on the host,
#: so every path in strongswan.conf means the same file on both sides)
LAB_ROOT = Path("/run/swand-lab")
#: why the build failed in this process (every later 6.0 lab fails with it at once)
_build_error: str | None = None
#: files that prove the tree is complete
REQUIRED = (
    "usr/sbin/charon-systemd",
    "usr/sbin/swanctl",
    "usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
    "usr/lib/ipsec/plugins/libstrongswan-vici.so",
)


def tree_ok(tree: Path, stamped: bool = True) -> bool:
    """Complete, and (for the cache) built from today's package list."""
    if not all((tree / f).exists() for f in REQUIRED):
        return False
    if not stamped:
        return True
    try:
        return (tree / STAMP).read_text().strip() == PACKAGES
    except OSError:
        return False


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace (deepest first)."""
    prefix = str(path.resolve()).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything below `path` and refuses if it cannot, so a
    leftover bind mount of /dev can never make it delete the host's files."""
    for point in mounts_under(path):
        sh(["umount", "-l", point], check=False)
    left = mounts_under(path)
    if left:
        raise LabError(f"refusing to remove {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


def trixie_tree(build: bool = True, log: bool = True) -> Path:
    """Return a complete trixie tree, building and caching it if needed.

    Raises LabError with the reason when there is none and it cannot be built (no
    debootstrap, no network, ...): tests needing charon 6.0 fail with that message.
    """
    global _build_error
    named = os.environ.get(TREE_ENV)
    if named:
        tree = Path(named)
        if not tree_ok(tree, stamped=False):
            raise LabError(f"${TREE_ENV}={named} is not a complete trixie tree "
                           f"(needs {', '.join(REQUIRED)})")
        _prepare(tree)
        return tree
    tree = CACHE_DIR / "trixie"
    if tree_ok(tree):
        _prepare(tree)
        return tree
    if _build_error is not None:  # failed once in this process: do not retry per test
        raise LabError(_build_error)
    if not build:
        raise LabError(f"no trixie tree at {tree} (build it with `python -m swand.lab "
                       "build-trixie`)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "trixie.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder finishes first; then reuse
        if tree_ok(tree):
            _prepare(tree)
            return tree
        if not shutil.which("debootstrap"):
            raise LabError("charon 6.0 needs a trixie tree, and debootstrap is not installed "
                           "(apt-get install debootstrap)")
        sweep_old_trees()
        for stale in CACHE_DIR.glob("trixie.tmp-*"):  # we hold the lock: nobody builds
            remove_tree(stale)
        tmp = CACHE_DIR / f"trixie.tmp-{os.getpid()}"
        started = time.monotonic()
        if log:
            print(f"swand.lab: building trixie tree in {tree} (about 30 s)", flush=True)
        try:
            sh(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "trixie",
                str(tmp), MIRROR], timeout=1800)
            if not tree_ok(tmp, stamped=False):
                raise LabError(f"debootstrap finished but {tmp} lacks {', '.join(REQUIRED)}")
            (tmp / STAMP).write_text(PACKAGES + "\n")
            _strip(tmp)
            _prepare(tmp)
            if tree.exists():  # an outdated or incomplete tree: swap, then delete
                old = CACHE_DIR / f"trixie.old-{os.getpid()}"
                os.rename(tree, old)
                os.rename(tmp, tree)
                if not _in_use(old):  # a running 6.0 lab keeps its old tree until next time
                    remove_tree(old)
            else:
                os.rename(tmp, tree)
        except LabError as exc:
            _build_error = f"cannot build the trixie tree for charon 6.0: {exc}"
            raise LabError(_build_error) from exc
        finally:
            remove_tree(tmp)
        if log:
            print(f"swand.lab: trixie tree built in {time.monotonic() - started:.1f} s",
                  flush=True)
    return tree


def _in_use(tree: Path) -> bool:
    """Is any process chrooted into `tree`?"""
    prefix = str(tree)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root").startswith(prefix):
                    return True
            except OSError:
                continue
    return False


def sweep_old_trees() -> None:
    """Remove outdated trees (trixie.old-*) nobody runs in any more, and failed builds."""
    for old in CACHE_DIR.glob("trixie.old-*"):
        if not _in_use(old):
            remove_tree(old)


def _strip(tree: Path) -> None:
    """Drop apt's downloaded archives and lists: 60 MB nobody reads again."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (tree / sub).glob("*"):
            if p.is_file():
                p.unlink()


def _prepare(tree: Path) -> None:
    """Mount points the chrooted processes need (idempotent, no mounts made here)."""
    for sub in ("dev", "proc", "sys", "tmp", str(LAB_ROOT).lstrip("/")):
        (tree / sub).mkdir(parents=True, exist_ok=True)


def chroot_prefix(tree: Path, binds: tuple[str, ...] = ()) -> list[str]:
    """argv prefix that, run inside `ip netns exec` (a private mount namespace), mounts
    what charon needs into the tree and execs the rest of argv chrooted. `exec` keeps
    the pid, so the caller's pid is charon's own.

    `binds`: more host folders to show at the same path inside, read-only (e.g. a
    corpus of swanctl folders for the trixie swanctl); mount points outside /tmp are
    created in the tree as empty folders."""
    t = str(tree)
    steps = [
        "set -e",
        f"mount --bind /dev {t}/dev",
        f"mount -t proc proc {t}/proc",
        f"mount --rbind /sys {t}/sys",
        f"mount --bind {LAB_ROOT} {t}{LAB_ROOT}",
        # a private /tmp: mount points for binds below /tmp (pytest's tmp_path) are made
        # there, not in the shared tree
        f"mount -t tmpfs -o mode=1777 tmpfs {t}/tmp",
    ]
    for b in binds:
        path = os.path.realpath(b)
        if not os.path.isdir(path) or "'" in path:
            raise LabError(f"cannot bind {b!r} into the trixie tree: not a folder")
        steps += [f"mkdir -p '{t}{path}'", f"mount --bind '{path}' '{t}{path}'",
                  f"mount -o remount,bind,ro '{t}{path}'"]
    script = "; ".join(steps) + f'; exec chroot {t} "$@"'
    return ["sh", "-c", script, "chroot-charon"]
