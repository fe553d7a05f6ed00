"""Every program swand, the lab, the tests and the install steps run comes from a package
that is installed on a bare Debian 12: one dev.sh installs, one docs/service.md's install
step installs, or one every Debian has. A machine where someone installed packages by
hand hides a missing one (docs/service.md's `git clone` without git); a table of command
-> package, checked against dpkg here, cannot (.ci/fresh-machine proves it for real)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: command -> the bookworm package one installs for it
PACKAGE_OF = {
    **dict.fromkeys(("ip", "ss"), "iproute2"),
    "nft": "nftables",
    **dict.fromkeys(("iptables-save", "iptables-legacy", "iptables-legacy-save",
                     "iptables-legacy-restore", "ip6tables-legacy",
                     "ip6tables-legacy-restore"), "iptables"),
    "tcpdump": "tcpdump",
    "radvd": "radvd",
    "vtysh": "frr",
    "ping": "iputils-ping",
    **dict.fromkeys(("sysctl", "pgrep"), "procps"),
    "charon-systemd": "charon-systemd",
    "swanctl": "strongswan-swanctl",
    "pki": "strongswan-pki",
    "openssl": "openssl",
    "curl": "curl",  # the demo prints a curl command for the metrics
    "promtool": "prometheus",
    "systemd-analyze": "systemd",
    "systemctl": "systemd",
    "debootstrap": "debootstrap",
    "python3": "python3",
    "git": "git",
    **dict.fromkeys(("setpriv", "unshare"), "util-linux"),
    **dict.fromkeys(("mount", "umount"), "mount"),
    **dict.fromkeys(("dpkg", "dpkg-query"), "dpkg"),
    "apt-get": "apt",
    "sh": "dash",
    **dict.fromkeys(("cat", "touch", "chroot", "ln", "install", "nice"), "coreutils"),
}
#: on every Debian 12, even `debootstrap --variant=minbase` (Priority: required)
EVERY_DEBIAN = {"apt", "dpkg", "dash", "coreutils", "util-linux", "mount"}
#: words the scan below finds in data (list literals, names) that happen to be programs
NOT_COMMANDS = {"cc", "dir", "expr", "file", "id", "xauth", "yes", "pki"}

#: where source shells out: a list literal's first string ([*prefix, "ip", ...]), the
#: program `ip netns exec NS` runs, an absolute /usr/sbin path, shutil.which("x"), and
#: `tool = "x" if ...`; a subscript (`timings["pki"]`) is not a list literal
_COMMAND_PATTERNS = (
    re.compile(r'(?<![\w\])])\[\s*(?:\*[^,\[\]]+,\s*)?"([\w./-]+)"'),
    re.compile(r'"exec",\s*[\w.]+,\s*"([\w./-]+)"'),
    re.compile(r'"(/(?:usr/)?s?bin/[\w.-]+)"'),
    re.compile(r'which\(\s*"([\w.-]+)"'),
    re.compile(r'=\s*"([\w.-]+)"\s+if\s'),
)


def _apt_packages(text: str) -> set[str]:
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert m, "APT_PACKAGES=( ... ) not found in dev.sh"
    return set(re.sub(r"#.*", "", m.group(1)).split())


DEV_SH_PACKAGES = _apt_packages((ROOT / "dev.sh").read_text())


def commands_in_source() -> dict[str, str]:
    """Programs the Python code runs (those on this machine's PATH) -> one file running it."""
    found: dict[str, str] = {}
    files = [p for d in ("swand", "tests", "bench") for p in sorted((ROOT / d).rglob("*.py"))]
    for path in files:
        text = path.read_text()
        for pattern in _COMMAND_PATTERNS:
            for m in pattern.finditer(text):
                name = Path(m.group(1)).name
                if name not in NOT_COMMANDS and shutil.which(name):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def service_install_step() -> tuple[list[str], set[str]]:
    """docs/service.md's install block: the commands it runs, the packages it installs."""
    text = (ROOT / "docs/service.md").read_text()
    m = re.search(r"^## Install\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/service.md: no sh block under ## Install"
    lines = [re.sub(r"\s+#.*", "", line).strip()
             for line in m.group(1).replace("\\\n", " ").splitlines()]
    lines = [line for line in lines if line]
    installed: set[str] = set()
    for line in lines:
        if line.startswith("apt-get install"):
            installed |= {w for w in line.split()[2:] if not w.startswith("-")}
    assert installed, "docs/service.md: no apt-get install in the install block"
    return [line.split()[0] for line in lines], installed


def test_the_scan_finds_what_the_lab_runs() -> None:
    found = commands_in_source()
    for name in ("ip", "nft", "iptables-legacy", "tcpdump", "charon-systemd", "sysctl"):
        if shutil.which(name):
            assert name in found, name


def test_every_program_the_code_runs_is_one_dev_sh_installs() -> None:
    found = commands_in_source()
    unknown = {name: path for name, path in found.items() if name not in PACKAGE_OF}
    assert not unknown, f"add to PACKAGE_OF (and its package to dev.sh): {unknown}"
    missing = {name: PACKAGE_OF[name] for name in found
               if PACKAGE_OF[name] not in DEV_SH_PACKAGES | EVERY_DEBIAN}
    assert not missing, f"add to dev.sh's APT_PACKAGES: {missing}"


def test_the_service_install_step_installs_every_program_it_runs() -> None:
    """Failed on a bare Debian 12 (.ci/fresh-machine): `git clone` with no git."""
    commands, installed = service_install_step()
    made_here = {c for c in commands if c.startswith("/opt/swand/")}  # the venv it makes
    unknown = set(commands) - made_here - set(PACKAGE_OF)
    assert not unknown, f"add to PACKAGE_OF: {sorted(unknown)}"
    # a gateway runs systemd (the step installs a unit): systemctl is there
    missing = {c: PACKAGE_OF[c] for c in set(commands) - made_here
               if PACKAGE_OF[c] not in installed | EVERY_DEBIAN | {"systemd"}}
    assert not missing, f"add to docs/service.md's apt-get install: {missing}"


DPKG_INFO = Path("/var/lib/dpkg/info")


def _owners(names: set[str]) -> dict[str, set[str]]:
    """Program file name -> packages that ship a */bin/<name>, from dpkg's file lists
    (one read of them all: `dpkg -S` with patterns takes seconds per program)."""
    owners: dict[str, set[str]] = {}
    for listing in DPKG_INFO.glob("*.list"):
        package = listing.stem.split(":")[0]
        for line in listing.read_text(errors="replace").splitlines():
            folder, _, name = line.rpartition("/")
            if name in names and folder.endswith("bin"):
                owners.setdefault(name, set()).add(package)
    return owners


@pytest.mark.skipif(not DPKG_INFO.is_dir() or shutil.which("dpkg-query") is None,
                    reason="no dpkg on this machine")
def test_the_table_is_what_dpkg_says() -> None:
    """Each program on this machine belongs to its package in PACKAGE_OF (or to one that
    package depends on: python3's binary is python3-minimal's)."""
    files: dict[str, str] = {}  # program, or the file its alternatives link resolves to
    for name in PACKAGE_OF:
        path = shutil.which(name)
        if path is not None:
            files |= {name: name, Path(path).resolve().name: name}
    found: dict[str, set[str]] = {}
    for file, packages in _owners(set(files)).items():
        found.setdefault(files[file], set()).update(packages)
    packages = sorted({PACKAGE_OF[name] for name in found})
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Pre-Depends},${Depends}\n", *packages],
        capture_output=True, text=True, timeout=60, check=False).stdout
    depends = {}
    for line in out.splitlines():
        package, _, deps = line.partition("\t")
        depends[package] = {d.split()[0].split(":")[0] for d in deps.split(",") if d.strip()}
    wrong = {name: (PACKAGE_OF[name], sorted(owners)) for name, owners in found.items()
             if not owners & ({PACKAGE_OF[name]} | depends.get(PACKAGE_OF[name], set()))}
    assert not wrong, f"PACKAGE_OF disagrees with dpkg: {wrong}"
