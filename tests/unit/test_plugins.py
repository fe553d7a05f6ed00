"""charon's plugins: the plugin -> Debian package table is what dpkg says, dev.sh installs
every package the lab's charon loads a plugin from, and `swand check` names a plugin the
configuration needs and charon lacks, with the package, in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swand.core import plugins
from swand.core.checks import CredentialFile
from swand.core.settings import parse_text
from swand.lab import configs, trixie
from swand.lab.charon import DEFAULT_PLUGINS, RELEASES
from swand.lab.pki import LabCA

ROOT = Path(__file__).resolve().parents[2]
#: what charon-systemd Depends on (so a tree built from trixie.PACKAGES has them)
CHARON_DEPENDS = {"libstrongswan", "strongswan-libcharon", "strongswan-swanctl"}


def _dev_sh_packages() -> set[str]:
    text = (ROOT / "dev.sh").read_text()
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert m, "APT_PACKAGES=( ... ) not found in dev.sh"
    return set(re.sub(r"#.*", "", m.group(1)).split())


def lab_charon_packages(release: str = "bookworm") -> set[str]:
    """Every package the lab's charon needs: the daemon, swanctl, and its plugins'."""
    unknown = [p for p in DEFAULT_PLUGINS if plugins.package_of(p, release) is None]
    assert not unknown, f"plugins without a {release} package in the table: {unknown}"
    return {"charon-systemd", "strongswan-swanctl"} | {
        str(plugins.package_of(p, release)) for p in DEFAULT_PLUGINS}


def _dpkg_owners(root: Path) -> dict[str, str]:
    """plugin -> package, from dpkg's database under `root` (/ or the trixie tree)."""
    folder = root / plugins.PLUGIN_DIR.lstrip("/")
    files = sorted(folder.glob("libstrongswan-*.so"))
    if not files:
        pytest.skip(f"no strongSwan plugins in {folder}")
    argv = ["dpkg", "-S", *(f"{plugins.PLUGIN_DIR}/{f.name}" for f in files)]
    if root != Path("/"):
        argv.insert(1, f"--root={root}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    owners = {}
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        name = Path(path).name[len("libstrongswan-"):-len(".so")]
        owners[name] = package.split(":")[0]
    return owners


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg on this machine")
def test_bookworm_table_is_what_dpkg_says() -> None:
    owners = _dpkg_owners(Path("/"))
    table = plugins.DEBIAN_PACKAGES["bookworm"]
    assert {p: table.get(p) for p in owners} == owners


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="no dpkg on this machine")
def test_trixie_table_is_what_dpkg_says_in_the_labs_tree() -> None:
    named = os.environ.get(trixie.TREE_ENV)  # the tree the lab uses when one is named
    tree = Path(named) if named else trixie.CACHE_DIR / "trixie"
    if not trixie.tree_ok(tree, stamped=False):
        pytest.skip(f"no trixie tree at {tree} (python -m swand.lab build-trixie)")
    owners = _dpkg_owners(tree)
    table = plugins.DEBIAN_PACKAGES["trixie"]
    assert {p: table.get(p) for p in owners} == owners


def test_dev_sh_installs_every_package_the_labs_charon_loads_plugins_from() -> None:
    """A Recommends (libstrongswan-standard-plugins) skipped by --no-install-recommends
    can never hide again: each plugin of the lab's `load` maps to a package dev.sh lists."""
    missing = lab_charon_packages() - _dev_sh_packages()
    assert not missing, f"add to dev.sh's APT_PACKAGES: {sorted(missing)}"


def test_the_trixie_tree_holds_every_package_the_labs_charon_loads_plugins_from() -> None:
    missing = lab_charon_packages("trixie") - set(trixie.PACKAGES.split(",")) - CHARON_DEPENDS
    assert not missing, f"add to swand/lab/trixie.py PACKAGES: {sorted(missing)}"


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="no dpkg on this machine")
def test_charon_systemd_depends_on_what_the_trixie_check_takes_for_granted() -> None:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", "charon-systemd"],
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        pytest.skip("charon-systemd is not installed")
    depends = {d.split()[0] for d in proc.stdout.split(",")}
    assert CHARON_DEPENDS - {"strongswan-libcharon"} <= depends | {"strongswan-libcharon"}
    assert "strongswan-libcharon" in depends


def test_docs_install_step_lists_every_charon_package() -> None:
    text = (ROOT / "docs/service.md").read_text()
    m = re.search(r"```sh\n(?:apt-get update\n)?"
                  r"apt-get install --no-install-recommends (.*?)\n(?!\s)", text, re.S)
    assert m, "docs/service.md: apt-get install step not found"
    listed = set(m.group(1).replace("\\", " ").split())
    missing = lab_charon_packages() - listed
    assert not missing, f"add to docs/service.md's install step: {sorted(missing)}"


def test_the_labs_gateway_configuration_needs_only_plugins_the_lab_loads() -> None:
    ca = LabCA()
    gw = ca.issue("gateway", dns=("vpn.lab.test",), server=True)
    files = (CredentialFile("x509ca/ca.pem", ca.cert_pem),
             CredentialFile("x509/gateway.pem", gw.cert_pem),
             CredentialFile("private/gateway.pem", gw.key_pem))
    tree = parse_text(configs.gateway_conf(), "swanctl.conf")
    required = plugins.needs_of(tree, files)
    assert {r.need.what for r in required} >= {"ECDSA keys", "X.509 certificates", "PEM files"}
    assert plugins.missing_plugin_findings(required, DEFAULT_PLUGINS, conf_file="c") == []
    assert set(RELEASES.values()) <= set(plugins.DEBIAN_PACKAGES)


GATEWAY = """connections {
    rw {
        proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048
        pools = pool4, dhcp
        local { auth = pubkey }
        remote { auth = eap-mschapv2
                 eap_id = %any }
        children { rw { esp_proposals = chacha20poly1305-x25519 } }
    }
}
"""


def _needs(text: str, files: tuple[CredentialFile, ...] = ()) -> set[str]:
    return {r.need.what for r in plugins.needs_of(parse_text(text, "swanctl.conf"), files,
                                                  metrics=False)}


def test_what_a_configuration_needs() -> None:
    assert _needs(GATEWAY) == {
        "IKE nonces", "IKE key derivation", "AES-GCM", "SHA-2", "ECP groups", "AES-CBC",
        "MODP groups", "ChaCha20-Poly1305", "X25519", "auth eap-mschapv2", "MD4/DES",
        "EAP-Identity", "dhcp pool"}
    ca = LabCA()
    rsa_free = (CredentialFile("x509ca/ca.pem", ca.cert_pem),
                CredentialFile("x509crl/ca.crl", b"\x30\x00"))
    assert _needs("", rsa_free) == {"ECDSA keys", "X.509 certificates", "PEM files",
                                    "SHA-2", "CRLs"}


def _findings(loaded: set[str], installed: set[str] | None = None) -> list[str]:
    ca = LabCA()
    files = (CredentialFile("x509ca/ca.pem", ca.cert_pem),)
    required = plugins.needs_of(parse_text(GATEWAY, "/etc/swanctl/swanctl.conf"), files)
    return [str(f) for f in plugins.missing_plugin_findings(
        required, loaded, conf_file="/etc/swanctl/swanctl.conf", installed=installed)]


def test_without_standard_plugins_each_need_names_openssl_and_its_package() -> None:
    """The issue's fresh machine: charon without libstrongswan-standard-plugins."""
    loaded = set(DEFAULT_PLUGINS) - {"openssl", "gcm", "aesni", "agent"}
    found = _findings(loaded)
    ecdsa = [f for f in found if "ECDSA keys" in f]
    assert len(ecdsa) == 1
    assert ecdsa[0].startswith("x509ca/ca.pem: error: charon has no openssl plugin loaded")
    assert "apt-get install --no-install-recommends libstrongswan-standard-plugins" in ecdsa[0]
    assert any("ECP groups" in f and "swanctl.conf:3" in f for f in found)
    gcm = [f for f in found if "AES-GCM" in f]
    assert gcm and "(or gcm + aes or aesni)" in gcm[0]
    assert all("\n" not in f for f in found)
    assert _findings(set(DEFAULT_PLUGINS) | {"dhcp"}) == []


def test_an_installed_plugin_charon_does_not_load_is_told_to_load_it() -> None:
    loaded = set(DEFAULT_PLUGINS) - {"openssl"}
    found = _findings(loaded, installed=set(DEFAULT_PLUGINS) | {"dhcp"})
    assert found and all("charon does not load it" in f for f in found), found


def test_plugins_debian_does_not_ship_say_so() -> None:
    hint = plugins.install_hint(["eap-peap"])
    assert hint.startswith("Debian bookworm ships no eap-peap plugin")
    assert plugins.install_hint(["openssl", "gcm", "eap-mschapv2"]) == (
        "apt-get install --no-install-recommends libstrongswan-standard-plugins "
        "libcharon-extauth-plugins")


def test_check_says_charon_is_unreachable_and_still_checks_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from swand.cli import main

    sw = tmp_path / "swanctl"
    sw.mkdir()
    (sw / "swanctl.conf").write_text("connections {\n  rw {\n    proposals = bogus\n  }\n}\n")
    code = main(["check", "--swanctl-dir", str(sw), "--vici", f"unix://{tmp_path}/no.vici"])
    out = capsys.readouterr().out
    assert code == 1  # the bogus proposal is still found
    assert "unknown algorithm keyword 'bogus'" in out
    assert f"unix://{tmp_path}/no.vici: warning: charon does not answer" in out
    assert "its plugins were not checked" in out


def test_the_lab_names_a_missing_plugin_and_its_package_in_one_line(tmp_path: Path) -> None:
    from swand.lab.charon import Charon

    charon = Charon("swl-none", tmp_path)
    err = str(charon.missing_plugins_error(["openssl", "gcm"], "no file in /x"))
    assert err == ("charon 5.9 in swl-none lacks plugin openssl, gcm (no file in /x): "
                   "apt-get install --no-install-recommends libstrongswan-standard-plugins "
                   "(./dev.sh setup installs them)")
