"""charon's plugins: which ones a swanctl.conf needs, and which Debian package ships each.

Why this exists: Debian splits charon's plugins over several packages, and some of them
(libstrongswan-standard-plugins with `openssl` and `gcm`) are only Recommends. Installed
with --no-install-recommends, charon starts fine and then fails much later ("parsing
X509 certificate failed", NO_PROPOSAL_CHOSEN) without naming what is missing. `swand
check` compares what the configuration needs (`needs_of`) with the plugins charon's VICI
`stats` reports as loaded, and names the plugin and the package in one line; the lab does
the same for the plugins its strongswan.conf loads.

Pure: the command layer asks charon and looks at the plugin folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from swand.core.checks import (
    CredentialFile,
    Finding,
    Severity,
    finding_at,
    load_certificate,
    load_private_key,
)
from swand.core.settings import Origin, Section

#: charon's own plugins: packaged the same way in bookworm and trixie
_CHARON_PLUGIN_PACKAGES: dict[str, str] = {
    **dict.fromkeys(("bypass-lan", "counters", "socket-default", "updown"),
                    "strongswan-libcharon"),
    "vici": "strongswan-swanctl",
    # the legacy ipsec.conf path (starter's); the lab loads it for swand import's test
    "stroke": "strongswan-starter",
    **dict.fromkeys(("eap-mschapv2", "xauth-generic"), "libcharon-extauth-plugins"),
    **dict.fromkeys((
        "addrblock", "certexpire", "dhcp", "eap-aka", "eap-gtc", "eap-identity", "eap-md5",
        "eap-radius", "eap-tls", "eap-tnc", "eap-ttls", "error-notify", "farp", "forecast",
        "ha", "kernel-libipsec", "led", "lookip", "tnc-tnccs", "unity", "xauth-eap",
        "xauth-pam"), "libcharon-extra-plugins"),
}
#: charon plugin -> the Debian package that ships it, per release. Verified against
#: `dpkg -S` of the plugin files by tests/unit/test_plugins.py (bookworm on the host,
#: trixie in the lab's cached tree). Packages listed here that dev.sh does not install
#: are not needed by the lab.
DEBIAN_PACKAGES: dict[str, dict[str, str]] = {
    "bookworm": {
        **dict.fromkeys((
            "aes", "attr", "constraints", "dnskey", "drbg", "fips-prf", "gmp", "hmac",
            "kdf", "kernel-netlink", "md5", "mgf1", "nonce", "pem", "pgp", "pkcs1", "pkcs12",
            "pkcs7", "pkcs8", "pubkey", "random", "rc2", "resolve", "revocation", "sha1",
            "sha2", "sshkey", "x509", "xcbc"), "libstrongswan"),
        **dict.fromkeys(("aesni", "agent", "connmark", "gcm", "openssl"),
                        "libstrongswan-standard-plugins"),
        **dict.fromkeys((
            "af-alg", "ccm", "chapoly", "cmac", "ctr", "curl", "curve25519", "gcrypt",
            "ldap", "pkcs11", "rdrand", "test-vectors", "tpm"), "libstrongswan-extra-plugins"),
        **_CHARON_PLUGIN_PACKAGES,
    },
    "trixie": {
        **dict.fromkeys((
            "attr", "constraints", "dnskey", "drbg", "kernel-netlink", "nonce", "openssl",
            "pem", "pkcs1", "pkcs7", "pkcs8", "pubkey", "random", "resolve", "revocation",
            "x509"), "libstrongswan"),
        **dict.fromkeys(("aesni", "agent", "connmark", "gcm", "sshkey"),
                        "libstrongswan-standard-plugins"),
        **dict.fromkeys((
            "aes", "af-alg", "ccm", "chapoly", "cmac", "ctr", "curl", "curve25519", "fips-prf",
            "gcrypt", "gmp", "hmac", "kdf", "ldap", "md5", "mgf1", "pgp", "pkcs11", "pkcs12",
            "rc2", "rdrand", "sha1", "sha2", "test-vectors", "tpm", "xcbc"),
            "libstrongswan-extra-plugins"),
        **_CHARON_PLUGIN_PACKAGES,
    },
}
DEFAULT_RELEASE = "bookworm"
#: where Debian's charon loads its plugins from
PLUGIN_DIR = "/usr/lib/ipsec/plugins"
#: swanctl folders holding private keys
KEY_FOLDERS = ("private", "rsa", "ecdsa", "pkcs8")


def plugin_file(name: str) -> str:
    """The file name of a plugin (`openssl` -> libstrongswan-openssl.so)."""
    return f"libstrongswan-{name}.so"


def package_of(plugin: str, release: str = DEFAULT_RELEASE) -> str | None:
    return DEBIAN_PACKAGES.get(release, DEBIAN_PACKAGES[DEFAULT_RELEASE]).get(plugin)


def install_hint(plugins: Iterable[str], release: str = DEFAULT_RELEASE) -> str:
    """`apt-get install ...` for these plugins, or what to do where Debian ships none."""
    names = list(dict.fromkeys(plugins))
    packages = list(dict.fromkeys(p for p in (package_of(n, release) for n in names) if p))
    unpackaged = [n for n in names if package_of(n, release) is None]
    parts = []
    if packages:
        parts.append(f"apt-get install --no-install-recommends {' '.join(packages)}")
    if unpackaged:
        parts.append(f"Debian {release} ships no {', '.join(unpackaged)} plugin "
                     f"(build strongSwan with it, or configure without it)")
    return "; ".join(parts)


# --- what a configuration needs ---------------------------------------------------------

@dataclass(frozen=True)
class Need:
    """A capability: the plugin sets that provide it (any one set will do) and why."""

    what: str
    alternatives: tuple[tuple[str, ...], ...]
    why: str
    severity: Severity = "error"


def _need(what: str, why: str, *alternatives: str, severity: Severity = "error") -> Need:
    """`alternatives` as "openssl", "pkcs1+gmp": each a set of plugins that suffices."""
    return Need(what, tuple(tuple(a.split("+")) for a in alternatives), why, severity)


#: an `auth` method -> the plugin implementing it
AUTH_PLUGINS = {
    "eap-md5": "eap-md5", "eap-mschapv2": "eap-mschapv2", "eap-tls": "eap-tls",
    "eap-ttls": "eap-ttls", "eap-peap": "eap-peap", "eap-radius": "eap-radius",
    "eap-gtc": "eap-gtc", "eap-aka": "eap-aka", "eap-sim": "eap-sim", "eap-tnc": "eap-tnc",
    "eap-dynamic": "eap-dynamic", "xauth": "xauth-generic", "xauth-generic": "xauth-generic",
    "xauth-pam": "xauth-pam", "xauth-eap": "xauth-eap", "xauth-noauth": "xauth-noauth",
}


#: Every capability swand checks, with the plugins that provide it (first = preferred,
#: named in the fix) and why charon needs it. From strongSwan's plugin list and cipher
#: suite documentation, for Debian's builds (no des, md4, eap-peap, eap-dynamic plugins).
NEEDS: dict[str, Need] = {n.what: n for n in (
    _need("X.509 certificates", "charon parses every certificate it is given", "x509"),
    _need("PEM files", "certificates and keys in PEM must be decoded first", "pem"),
    _need("ECDSA keys", "only the openssl plugin implements ECDSA in Debian's build",
          "openssl"),
    _need("RSA keys", "RSA keys and signatures", "openssl", "pkcs1+gmp", "pkcs1+gcrypt"),
    _need("Ed25519 keys", "EdDSA keys and signatures", "openssl", "curve25519"),
    _need("PKCS#8 keys", "`BEGIN PRIVATE KEY` files and pkcs8/", "pkcs8", "openssl"),
    _need("PKCS#12 files", "pkcs12/ containers", "pkcs12+pkcs7"),
    _need("CRLs", "without it revoked clients still connect (x509crl/, swand client revoke)",
          "revocation"),
    _need("IKE nonces", "every IKE_SA needs nonces", "nonce"),
    _need("IKE key derivation", "prf+ of IKEv2 (a plugin since strongSwan 5.9.6)",
          "kdf", "openssl"),
    _need("AES-CBC", "aes128/aes192/aes256 proposals", "openssl", "aes", "aesni"),
    _need("AES-GCM", "aes*gcm* proposals", "openssl", "gcm+aes", "aesni"),
    _need("AES-CCM", "aes*ccm* proposals", "openssl", "ccm+aes", "aesni"),
    _need("AES-CTR", "aes*ctr proposals", "openssl", "ctr+aes", "aesni"),
    _need("ChaCha20-Poly1305", "chacha20poly1305 proposals", "openssl", "chapoly"),
    _need("3DES", "3des proposals", "openssl"),
    _need("Camellia/Blowfish/CAST", "those proposals", "openssl", "gcrypt"),
    _need("SHA-1", "sha1 integrity/PRF", "openssl", "sha1+hmac"),
    _need("SHA-2", "sha256/384/512 integrity/PRF and certificate signatures",
          "openssl", "sha2+hmac"),
    _need("MD5", "md5 integrity/PRF", "openssl", "md5+hmac"),
    _need("AES-XCBC", "aesxcbc integrity/PRF", "xcbc+aes", "aesni"),
    _need("AES-CMAC", "aescmac integrity/PRF", "cmac+aes", "aesni"),
    _need("ECP groups", "ecp256/384/521 and Brainpool groups", "openssl"),
    _need("MODP groups", "modp* groups", "openssl", "gmp", "gcrypt"),
    _need("X25519", "curve25519/x25519 groups", "openssl", "curve25519"),
    _need("X448", "curve448/x448 groups", "openssl"),
    _need("ML-KEM", "mlkem* key exchanges (charon 6.0)", "openssl", "ml"),
    _need("EAP-Identity", "eap_id = %any: charon asks the client for its EAP identity",
          "eap-identity"),
    _need("MD4/DES", "EAP-MSCHAPv2 hashes with MD4 and DES", "openssl"),
    _need("dhcp pool", "pools = dhcp", "dhcp"),
    _need("radius pool", "pools = radius", "eap-radius"),
    _need("counters", "swand's per-connection traffic counters (swand_* metrics)", "counters",
          severity="warning"),
    *(_need(f"auth {method}", f"auth = {method}", plugin)
      for method, plugin in AUTH_PLUGINS.items()),
)}


_PROPOSAL_NEEDS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(p), needs) for p, needs in (
        (r"^aes\d*gcm", ("AES-GCM",)),
        (r"^aes\d*ccm", ("AES-CCM",)),
        (r"^aes\d*ctr$", ("AES-CTR",)),
        (r"^aes(128|192|256)?$", ("AES-CBC",)),
        (r"^chacha20poly1305", ("ChaCha20-Poly1305",)),
        (r"^3des$", ("3DES",)),
        (r"^(camellia|blowfish|cast128|serpent|twofish)", ("Camellia/Blowfish/CAST",)),
        (r"^(prf)?(sha|sha1|sha1_160)$", ("SHA-1",)),
        (r"^(prf)?(sha2?_?(256|384|512)(_96)?)$", ("SHA-2",)),
        (r"^(prf)?md5", ("MD5",)),
        (r"^(prf)?aesxcbc$", ("AES-XCBC",)),
        (r"^(prf)?aescmac$", ("AES-CMAC",)),
        (r"^(ke\d_)?ecp\d+(bp)?$", ("ECP groups",)),
        (r"^(ke\d_)?modp\d+(s\d+)?$", ("MODP groups",)),
        (r"^(ke\d_)?(curve25519|x25519)$", ("X25519",)),
        (r"^(ke\d_)?(curve448|x448)$", ("X448",)),
        (r"^(ke\d_)?mlkem\d+$", ("ML-KEM",)),
    ))


@dataclass(frozen=True)
class Required:
    """One need of the configuration, and the first place that needs it."""

    need: Need
    origin: Origin | None
    #: a credential file (relative to the swanctl folder) when no setting is the cause
    file: str = ""


def _connections(tree: Section) -> list[Section]:
    conns = tree.sections.get("connections")
    return list(conns.sections.values()) if conns else []


def _tokens(value: str) -> Iterator[str]:
    for proposal in re.split(r"[,\s]+", value):
        yield from (t.lower() for t in proposal.split("-") if t)


def _config_needs(tree: Section) -> Iterator[tuple[str, Origin | None]]:
    for conn in _connections(tree):
        version = conn.settings.get("version")
        if version is None or version.value.strip() in ("0", "2"):
            yield "IKE nonces", None
            yield "IKE key derivation", None
        proposal_settings = [conn.settings.get("proposals")]
        children = conn.sections.get("children")
        for child in children.sections.values() if children else ():
            proposal_settings += [child.settings.get("esp_proposals"),
                                  child.settings.get("ah_proposals")]
        for setting in proposal_settings:
            if setting is None:
                continue
            for token in _tokens(setting.value):
                for pattern, needs in _PROPOSAL_NEEDS:
                    if pattern.match(token):
                        for need in needs:
                            yield need, setting.origin
        for name, rnd in conn.sections.items():
            if not name.startswith(("local", "remote")):
                continue
            auth = rnd.settings.get("auth")
            method = (auth.value.strip().lower() if auth else "")
            if f"auth {method}" in NEEDS:
                yield f"auth {method}", auth.origin if auth else None
            if method == "eap-mschapv2":
                yield "MD4/DES", auth.origin if auth else None
            eap_id = rnd.settings.get("eap_id")
            if eap_id is not None and eap_id.value.strip() == "%any":
                yield "EAP-Identity", eap_id.origin
        pools = conn.settings.get("pools")
        if pools is not None:
            for pool in re.split(r"[,\s]+", pools.value):
                if pool in ("dhcp", "radius"):
                    yield f"{pool} pool", pools.origin


def _credential_needs(files: Iterable[CredentialFile]) -> Iterator[tuple[str, str]]:
    """What charon needs to read each credential file, judged by its content."""
    for f in files:
        folder = f.path.split("/", 1)[0]
        if folder == "pkcs12":
            yield "PKCS#12 files", f.path
            continue
        if folder == "x509crl":
            yield "CRLs", f.path
        if b"-----BEGIN" in f.data:
            yield "PEM files", f.path
        if b"BEGIN PRIVATE KEY" in f.data or b"BEGIN ENCRYPTED PRIVATE KEY" in f.data or \
                folder == "pkcs8":
            yield "PKCS#8 keys", f.path
        key = load_private_key(f.data) if folder in KEY_FOLDERS else None
        if b"BEGIN EC PRIVATE KEY" in f.data or folder == "ecdsa":
            yield "ECDSA keys", f.path
        elif b"BEGIN RSA PRIVATE KEY" in f.data or folder == "rsa":
            yield "RSA keys", f.path
        elif key is not None and _key_need(key):
            yield _key_need(key), f.path
        cert = load_certificate(f.data) if folder != "x509crl" else None
        if cert is None:
            continue
        yield "X.509 certificates", f.path
        yield "SHA-2", f.path
        if _key_need(cert.public_key()):
            yield _key_need(cert.public_key()), f.path


def _key_need(key: object) -> str:
    """The need of a public or private key's algorithm ("" for others)."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ECDSA keys"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA keys"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519 keys"
    return ""


def needs_of(tree: Section, files: Iterable[CredentialFile] = (),
             metrics: bool = True) -> list[Required]:
    """Each need of this configuration once, at the first place that needs it."""
    found: dict[str, Required] = {}
    for what, origin in _config_needs(tree):
        found.setdefault(what, Required(NEEDS[what], origin))
    for what, path in _credential_needs(files):
        found.setdefault(what, Required(NEEDS[what], None, path))
    if metrics:
        found.setdefault("counters", Required(NEEDS["counters"], None))
    return list(found.values())


def unmet(need: Need, loaded: set[str]) -> tuple[str, ...]:
    """() when some alternative is loaded, else the missing plugins of the alternative
    closest to being loaded (the first, preferred one on a tie)."""
    best: tuple[str, ...] | None = None
    for alt in need.alternatives:
        missing = tuple(p for p in alt if p not in loaded)
        if not missing:
            return ()
        if best is None or len(missing) < len(best):
            best = missing
    return best or ()


def missing_plugin_findings(
    required: Iterable[Required], loaded: Iterable[str], *, conf_file: str,
    installed: set[str] | None = None, release: str = DEFAULT_RELEASE,
) -> list[Finding]:
    """One finding per need charon's loaded plugins do not meet, with a one-line fix:
    the package to install, or (the plugin file is there) to load it."""
    have = set(loaded)
    out = []
    for req in required:
        missing = unmet(req.need, have)
        if not missing:
            continue
        names = ", ".join(missing)
        others = [" + ".join(a) for a in req.need.alternatives if a != missing][:2]
        alt = f" (or {' or '.join(others)})" if others else ""
        message = (f"charon has no {names} plugin loaded{alt}: {req.need.what} will fail "
                   f"({req.need.why})")
        not_installed = [p for p in missing if installed is None or p not in installed]
        if not_installed:
            fix = f"{install_hint(not_installed, release)}, then restart charon"
        else:
            fix = (f"the plugin file is installed but charon does not load it: add "
                   f"{names} to charon's `load` in strongswan.conf (or drop its "
                   f"`load = no`), then restart charon")
        severity = req.need.severity
        if req.file:
            out.append(Finding(req.file, 0, severity, "plugin-missing", message, fix))
        else:
            out.append(finding_at(req.origin, severity, "plugin-missing", message, fix,
                                  default_file=conf_file))
    return out
