"""swanctl.conf + the swanctl folder's credential files -> the VICI messages
`swanctl --load-all` (5.9.8) would send, as a frozen `DesiredState`.

Pure: the edge (`swand.runtime.loader.read_credentials`) reads every file this module may
need into a `CredentialSource` snapshot; nothing here touches the file system or charon.

swanctl's semantics, mirrored (see strongSwan's src/swanctl/commands/load_*.c):
- connections: every key/value of the connection and of its subsections (local*, remote*,
  children.*) in file order. `local_addrs, remote_addrs, proposals, esp_proposals,
  ah_proposals, local_ts, remote_ts, vips, pools, groups, cert_policy` are comma/space
  separated lists; `certs`, `cacerts`, `pubkeys` name files (relative to `x509/`, `x509ca/`,
  `pubkey/`) sent as blobs — a missing file fails that connection only.
- pools: `addrs` is a value, every other key a list.
- authorities: `cacert` names a file in `x509ca/` sent as a blob; `crl_uris`, `ocsp_uris`
  are lists; everything else as is.
- credentials: the folders loaded wholesale (`x509`, `x509ca`, `x509ocsp`, `x509aa`,
  `x509ac`, `x509crl`, `pubkey` as certificates; `private`, `rsa`, `ecdsa`, `bliss`,
  `pkcs8` as private keys; `pkcs12` containers), encrypted keys and containers decrypted
  with the `secrets.<type>*` sections whose `file` names them (swand never prompts);
  `secrets.{eap,xauth,ntlm,ike,ppk}*` as shared keys (`id*` keys are the owners, `0x`/`0s`
  prefixes hex/base64); `secrets.token*` as tokens.

Errors name file:line and the item, never a secret value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
import secrets as _secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from swand.core.settings import Origin, Section

# --- swanctl's tables -------------------------------------------------------------------

#: connection keys sent as lists (load_conns.c is_list_key, case-insensitive)
CONN_LIST_KEYS = frozenset({
    "local_addrs", "remote_addrs", "proposals", "esp_proposals", "ah_proposals",
    "local_ts", "remote_ts", "vips", "pools", "groups", "cert_policy",
})
#: connection keys naming files sent as blobs -> the folder relative names live in
CONN_FILE_KEYS: Mapping[str, str] = MappingProxyType({
    "certs": "x509", "cacerts": "x509ca", "pubkeys": "pubkey",
})
#: (folder, VICI type, X.509 flag or None) in swanctl's loading order
CERT_FOLDERS: tuple[tuple[str, str, str | None], ...] = (
    ("x509", "X509", "NONE"),
    ("x509ca", "X509", "CA"),
    ("x509ocsp", "X509", "OCSP"),
    ("x509aa", "X509", "AA"),
    ("x509ac", "X509_AC", None),
    ("x509crl", "X509_CRL", None),
    ("pubkey", "PUBKEY", None),
)
#: (folder, VICI key type) in swanctl's loading order
KEY_FOLDERS: tuple[tuple[str, str], ...] = (
    ("private", "any"),
    ("rsa", "rsa"),
    ("ecdsa", "ecdsa"),
    ("bliss", "bliss"),
    ("pkcs8", "any"),
)
CONTAINER_FOLDERS: tuple[str, ...] = ("pkcs12",)
CREDENTIAL_FOLDERS: tuple[str, ...] = (
    *(f for f, _, _ in CERT_FOLDERS), *(f for f, _ in KEY_FOLDERS), *CONTAINER_FOLDERS,
)
#: secret section prefixes, in the order swanctl tests them
SECRET_TYPES: tuple[str, ...] = (
    "eap", "xauth", "ntlm", "ike", "ppk", "private", "rsa", "ecdsa", "bliss", "pkcs8",
    "pkcs12", "token",
)
SHARED_TYPES = frozenset({"eap", "xauth", "ntlm", "ike", "ppk"})

#: the digests of secret-bearing items (keys, shared secrets, tokens) are keyed with this:
#: stable within one process (swand's record lives in memory), and a digest of a short
#: PSK cannot be brute-forced from a log line. Other items' digests are stable everywhere.
_DIGEST_KEY = _secrets.token_bytes(32)
SECRET_KINDS = frozenset({"key", "shared", "token"})


# --- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialSource:
    """The bytes the edge read for one translation.

    `folders`: credential folder name -> ((file name, bytes), ...) of its regular files,
    sorted by name (a missing folder is simply absent). `files`: absolute path -> bytes of
    each file the configuration names. `unreadable`: absolute path -> reason (strerror) for
    the named files that could not be read.
    """

    swanctl_dir: str
    folders: Mapping[str, tuple[tuple[str, bytes], ...]] = field(
        default_factory=dict, repr=False)
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    unreadable: Mapping[str, str] = field(default_factory=dict)
    #: `referenced_files` of the tree, when the edge computed them already (else None)
    named: tuple[str, ...] | None = field(default=None, repr=False)


# --- outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One object loaded by one VICI command.

    `kind`: conn | pool | authority | cert | key | shared | token. `name`: unique within
    the kind (connection name, `x509/file.pem`, secret section). `message` may hold secret
    bytes: it is never printed (repr=False) and never logged.
    """

    kind: str
    name: str
    command: str
    message: Mapping[str, Any] = field(repr=False, compare=False)
    origin: Origin | None
    digest: str

    def label(self) -> str:
        """How a report names this item (`connection 'rw'`, `x509/moon.pem`)."""
        return _label(self.kind, self.name)


@dataclass(frozen=True)
class LoadError:
    """A problem naming where (file:line, or a credential's path) and what."""

    where: str
    item: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.item}: {self.message}" if self.where else \
            f"{self.item}: {self.message}"


@dataclass(frozen=True)
class DesiredState:
    """Everything swanctl --load-all would load, per kind, in swanctl's order.

    `broken`: (kind, name) of objects the file defines but that could not be translated
    (a missing certificate, a secret without value): a reconciler keeps whatever charon
    has for them rather than unloading it.
    """

    conns: Mapping[str, Item] = field(default_factory=dict)
    pools: Mapping[str, Item] = field(default_factory=dict)
    authorities: Mapping[str, Item] = field(default_factory=dict)
    certs: Mapping[str, Item] = field(default_factory=dict)
    keys: Mapping[str, Item] = field(default_factory=dict)
    shared: Mapping[str, Item] = field(default_factory=dict)
    tokens: Mapping[str, Item] = field(default_factory=dict)
    broken: frozenset[tuple[str, str]] = frozenset()

    def credentials(self) -> Iterator[Item]:
        """Certificates, keys, tokens and shared keys in swanctl's loading order."""
        yield from self.certs.values()
        yield from self.keys.values()
        yield from self.tokens.values()
        yield from self.shared.values()

    def items(self) -> Iterator[Item]:
        yield from self.credentials()
        yield from self.authorities.values()
        yield from self.pools.values()
        yield from self.conns.values()


# --- helpers ----------------------------------------------------------------------------


def _label(kind: str, name: str) -> str:
    return {
        "conn": f"connection '{name}'", "pool": f"pool '{name}'",
        "authority": f"authority '{name}'", "shared": f"secret '{name}'",
        "token": f"token '{name}'",
    }.get(kind, name)


def split_list(value: str) -> list[str]:
    """swanctl's enumerator_create_token(value, ",", " "), as 5.9.8 behaves: tokens split
    on commas, spaces trimmed, empty tokens dropped; a token *starting* with ' or " runs to
    the matching quote (separators inside kept, quotes dropped) and a new token begins
    right after it; an unmatched or inner quote is an ordinary character."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] == " ":
            i += 1
        if i >= n:
            break
        if value[i] in "'\"":
            end = value.find(value[i], i + 1)
            if end >= 0:
                out.append(value[i + 1:end])
                i = end + 1
                if i < n and value[i] == ",":
                    i += 1
                continue
        end = value.find(",", i)
        if end < 0:
            end = n
        token = value[i:end].rstrip(" ")
        if token:
            out.append(token)
        i = end + 1
    return out


def is_road_warrior(conn: Section) -> bool:
    """Whether a connection serves road warriors: it hands its clients virtual IPs from
    pools (`pools` non-empty as swanctl sends it). Where clients dial from does not
    decide it (`remote_addrs` may name the range roaming clients come from), nor how they
    authenticate (EAP clients roam too), nor a pinned client id (still a road warrior)."""
    return bool(split_list(conn.get("pools") or ""))


def digest(command: str, message: Mapping[str, Any], *, secret: bool = False) -> str:
    """A content hash of one command: equal iff the bytes sent would be equal (keyed per
    process when the message holds a secret).

    repr() of the plain dicts/lists/str/bytes the translation builds is exact (types and
    order show) and runs in C: hashing 1,000 connections costs milliseconds."""
    text = repr((command, message)).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, key=_DIGEST_KEY if secret else b"",
                           digest_size=12).hexdigest()


def _item(kind: str, name: str, command: str, message: dict[str, Any],
          origin: Origin | None) -> Item:
    return Item(kind, name, command, message, origin,
                digest(command, message, secret=kind in SECRET_KINDS))


def _resolve(swanctl_dir: str, folder: str, token: str) -> str:
    if posixpath.isabs(token):
        return token
    return posixpath.join(swanctl_dir, folder, token)


def referenced_files(tree: Section, swanctl_dir: str) -> list[str]:
    """Absolute paths of every file the configuration names (certs, cacerts, pubkeys,
    authorities' cacert): what the edge must read besides the credential folders."""
    paths: list[str] = []
    conns = tree.sections.get("connections")
    if conns is not None:
        for conn in conns.sections.values():
            for sec in _walk(conn):
                for key, setting in sec.settings.items():
                    folder = CONN_FILE_KEYS.get(key.lower())
                    if folder is None:
                        continue
                    for token in split_list(setting.value):
                        if not _is_inline_blob(token):
                            paths.append(_resolve(swanctl_dir, folder, token))
    auths = tree.sections.get("authorities")
    if auths is not None:
        for auth in auths.sections.values():
            cacert = auth.settings.get("cacert")
            if cacert is not None:
                paths.append(_resolve(swanctl_dir, "x509ca", cacert.value))
    return list(dict.fromkeys(paths))


def _walk(section: Section) -> Iterator[Section]:
    yield section
    for sub in section.sections.values():
        yield from _walk(sub)


def _is_inline_blob(token: str) -> bool:
    return token[:2].lower() in ("0x", "0s")


def _inline_blob(token: str) -> bytes:
    """`0x<hex>` / `0s<base64>` literal, as swanctl decodes it (empty if malformed)."""
    body = token[2:]
    try:
        if token[:2].lower() == "0x":
            return binascii.unhexlify(body.replace(":", ""))
        return base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _named_file(src: CredentialSource, folder: str, token: str, origin: Origin | None,
                what: str) -> bytes:
    """The bytes of a file the configuration names (relative to `folder`); a missing or
    unreadable one fails the object that names it."""
    path = _resolve(src.swanctl_dir, folder, token)
    data = src.files.get(path)
    if data is None:
        reason = src.unreadable.get(path, "No such file or directory")
        raise _Fail(origin, f"loading {what} '{path}' failed: {reason}")
    return data


# --- connections, pools, authorities ----------------------------------------------------


class _Fail(Exception):
    def __init__(self, origin: Origin | None, message: str) -> None:
        super().__init__(message)
        self.origin = origin
        self.message = message


def _conn_section(sec: Section, src: CredentialSource) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    for key, setting in sec.settings.items():
        lower = key.lower()
        if lower in CONN_LIST_KEYS:
            msg[key] = split_list(setting.value)
        elif lower in CONN_FILE_KEYS:
            msg[key] = [
                _inline_blob(token) if _is_inline_blob(token) else
                _named_file(src, CONN_FILE_KEYS[lower], token, setting.origin,
                            f"{key} certificate")
                for token in split_list(setting.value)]
        else:
            msg[key] = setting.value
    for name, sub in sec.sections.items():
        msg[name] = _conn_section(sub, src)
    return msg


def _pool_message(sec: Section) -> dict[str, Any]:
    return {
        key: (s.value if key == "addrs" else split_list(s.value))
        for key, s in sec.settings.items()
    }


def _authority_message(sec: Section, src: CredentialSource) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    for key, s in sec.settings.items():
        if key == "cacert":
            msg[key] = _named_file(src, "x509ca", s.value, s.origin, "ca certificate")
        elif key in ("crl_uris", "ocsp_uris"):
            msg[key] = split_list(s.value)
        else:
            msg[key] = s.value
    return msg


# --- credentials ------------------------------------------------------------------------


def _decryption_secrets(tree: Section, folder: str, name: str) -> list[str]:
    """Passphrases from `secrets.<folder>*` sections whose `file` is `name`
    (case-insensitive, as swanctl compares), every key starting with `secret`."""
    found: list[str] = []
    secrets_sec = tree.sections.get("secrets")
    if secrets_sec is None:
        return found
    for sname, sec in secrets_sec.sections.items():
        if not sname.startswith(folder):
            continue
        file_setting = sec.settings.get("file")
        if file_setting is None or file_setting.value.lower() != name.lower():
            continue
        found.extend(s.value for k, s in sec.settings.items() if k.startswith("secret"))
    return found


def _is_encrypted(data: bytes) -> bool:
    """Whether a private key file is encrypted, told from its framing alone (parsing an
    8192-bit RSA key with its consistency check would cost seconds): PEM says ENCRYPTED in
    its label or headers; in DER an encrypted PKCS#8 starts with the algorithm SEQUENCE
    where plain PKCS#1 / SEC1 / PKCS#8 start with a version INTEGER."""
    if b"-----BEGIN" in data:
        return b"Proc-Type: 4,ENCRYPTED" in data or b"BEGIN ENCRYPTED PRIVATE KEY" in data
    if len(data) < 4 or data[0] != 0x30:
        return False
    length = data[1]
    offset = 2 + (length & 0x7F if length & 0x80 else 0)
    return offset < len(data) and data[offset] == 0x30


# cryptography is imported where a key must be decrypted or a PKCS#12 container opened:
# importing it costs `swand apply` ~30 ms of start-up, and most folders need neither


def _key_to_vici(key: Any) -> tuple[str, bytes]:
    """A decrypted key as swanctl sends it: the specific type and its DER encoding."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    der = serialization.Encoding.DER
    none = serialization.NoEncryption()
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa", key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL,
                                        none)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa", key.private_bytes(
            der, serialization.PrivateFormat.TraditionalOpenSSL, none)
    kind = ("ed25519" if isinstance(key, ed25519.Ed25519PrivateKey)
            else "ed448" if isinstance(key, ed448.Ed448PrivateKey) else "any")
    return kind, key.private_bytes(der, serialization.PrivateFormat.PKCS8, none)


def _decrypt_key(data: bytes, passwords: list[str]) -> Any | None:
    from cryptography.hazmat.primitives import serialization

    loader = (serialization.load_pem_private_key if b"-----BEGIN" in data
              else serialization.load_der_private_key)
    for pw in passwords:
        try:
            return loader(data, password=pw.encode("utf-8", "surrogateescape"),
                          unsafe_skip_rsa_key_validation=True)
        except (TypeError, ValueError):
            continue
    return None


def _translate_key(tree: Section, folder: str, vici_type: str, name: str, data: bytes,
                   out: dict[str, Item], errors: list[LoadError],
                   broken: set[tuple[str, str]]) -> None:
    rel = f"{folder}/{name}"
    if _is_encrypted(data):
        passwords = _decryption_secrets(tree, folder, name)
        key = _decrypt_key(data, passwords)
        if key is None:
            why = ("configured decryption secret invalid" if passwords else
                   f"encrypted, and no secrets.{folder}* section with file = {name} "
                   "holds its passphrase (swand does not prompt)")
            errors.append(LoadError(rel, "private key", why))
            broken.add(("key", rel))
            return
        key_type, der = _key_to_vici(key)
        out[rel] = _item("key", rel, "load-key", {"type": key_type, "data": der}, None)
        return
    out[rel] = _item("key", rel, "load-key", {"type": vici_type, "data": data}, None)


def _translate_pkcs12(tree: Section, name: str, data: bytes, certs: dict[str, Item],
                      keys: dict[str, Item], errors: list[LoadError],
                      broken: set[tuple[str, str]]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    rel = f"pkcs12/{name}"
    parsed = None
    for pw in _decryption_secrets(tree, "pkcs12", name):
        try:
            parsed = pkcs12.load_pkcs12(data, pw.encode("utf-8", "surrogateescape"))
            break
        except (TypeError, ValueError):
            continue
    if parsed is None:
        errors.append(LoadError(rel, "PKCS#12 container",
                                "cannot be decrypted with a secrets.pkcs12* section whose "
                                f"file = {name} (swand does not prompt)"))
        broken.add(("cert", rel))
        return
    # strongSwan's PKCS#12 parser yields the additional certificates before the key's
    chain = [c.certificate for c in parsed.additional_certs] + (
        [parsed.cert.certificate] if parsed.cert else [])
    for i, cert in enumerate(chain):
        der = cert.public_bytes(serialization.Encoding.DER)
        certs[f"{rel}#cert{i}"] = _item("cert", f"{rel}#cert{i}", "load-cert",
                                        {"type": "X509", "flag": "NONE", "data": der}, None)
    if parsed.key is not None:
        key_type, der = _key_to_vici(parsed.key)
        keys[f"{rel}#key0"] = _item("key", f"{rel}#key0", "load-key",
                                    {"type": key_type, "data": der}, None)


def _shared_data(value: str) -> bytes:
    if _is_inline_blob(value):
        return _inline_blob(value)
    return value.encode("utf-8", "surrogateescape")


def _translate_secrets(tree: Section, shared: dict[str, Item], tokens: dict[str, Item],
                       errors: list[LoadError], broken: set[tuple[str, str]]) -> None:
    secrets_sec = tree.sections.get("secrets")
    if secrets_sec is None:
        return
    # tokens first: swanctl loads them before the shared secrets
    for sname, sec in secrets_sec.sections.items():
        if sname.startswith("token"):
            token = {k: s.value for k, s in sec.settings.items()}
            tokens[sname] = _item("token", sname, "load-token", token, sec.origin)
    for sname, sec in secrets_sec.sections.items():
        stype = next((t for t in SECRET_TYPES if sname.startswith(t)), None)
        if stype is None:
            errors.append(LoadError(str(sec.origin), f"secret '{sname}'",
                                    "unsupported secret type, ignored (the section name "
                                    f"must start with one of {', '.join(SECRET_TYPES)})"))
            continue
        if stype not in SHARED_TYPES:
            continue
        value = sec.settings.get("secret")
        if value is None:
            errors.append(LoadError(str(sec.origin), f"secret '{sname}'",
                                    "missing secret, ignored"))
            broken.add(("shared", sname))
            continue
        owners = [s.value for k, s in sec.settings.items() if k.startswith("id")]
        msg: dict[str, Any] = {"id": sname, "type": stype, "data": _shared_data(value.value),
               "owners": owners}
        shared[sname] = _item("shared", sname, "load-shared", msg, sec.origin)


# --- entry point ------------------------------------------------------------------------


def translate(tree: Section, src: CredentialSource) -> tuple[DesiredState, list[LoadError]]:
    """The whole swanctl folder as VICI messages, plus every problem found.

    An object with a problem is left out (and listed in `DesiredState.broken`) while the
    rest is translated, as swanctl loads whatever it can.
    """
    errors: list[LoadError] = []
    broken: set[tuple[str, str]] = set()
    certs: dict[str, Item] = {}
    keys: dict[str, Item] = {}
    shared: dict[str, Item] = {}
    tokens: dict[str, Item] = {}

    # files of the folders that could not be read: swanctl skips them with a message
    named = set(src.named if src.named is not None else
                referenced_files(tree, src.swanctl_dir))
    for path, reason in sorted(src.unreadable.items()):
        folder = posixpath.basename(posixpath.dirname(path))
        if path in named or folder not in CREDENTIAL_FOLDERS or \
                posixpath.dirname(posixpath.dirname(path)) != src.swanctl_dir.rstrip("/"):
            continue  # a file named by the configuration: reported with its user
        rel = f"{folder}/{posixpath.basename(path)}"
        errors.append(LoadError(rel, "credential file", f"cannot be read: {reason}"))
        kind = "cert" if any(folder == f for f, _, _ in CERT_FOLDERS) else "key"
        broken.add((kind, rel))
    for folder, vtype, flag in CERT_FOLDERS:
        for name, data in src.folders.get(folder, ()):
            rel = f"{folder}/{name}"
            msg: dict[str, Any] = {"type": vtype}
            if flag is not None:
                msg["flag"] = flag
            msg["data"] = data
            certs[rel] = _item("cert", rel, "load-cert", msg, None)
    for folder, vtype in KEY_FOLDERS:
        for name, data in src.folders.get(folder, ()):
            _translate_key(tree, folder, vtype, name, data, keys, errors, broken)
    for name, data in src.folders.get("pkcs12", ()):
        _translate_pkcs12(tree, name, data, certs, keys, errors, broken)
    _translate_secrets(tree, shared, tokens, errors, broken)

    authorities: dict[str, Item] = {}
    sec = tree.sections.get("authorities")
    for name, auth in (sec.sections.items() if sec else ()):
        try:
            authorities[name] = _item("authority", name, "load-authority",
                                      {name: _authority_message(auth, src)}, auth.origin)
        except _Fail as fail:
            errors.append(LoadError(str(fail.origin or auth.origin), _label("authority", name),
                                    fail.message))
            broken.add(("authority", name))

    pools: dict[str, Item] = {}
    sec = tree.sections.get("pools")
    for name, pool in (sec.sections.items() if sec else ()):
        pools[name] = _item("pool", name, "load-pool", {name: _pool_message(pool)},
                            pool.origin)

    conns: dict[str, Item] = {}
    sec = tree.sections.get("connections")
    for name, conn in (sec.sections.items() if sec else ()):
        try:
            conns[name] = _item("conn", name, "load-conn", {name: _conn_section(conn, src)},
                                conn.origin)
        except _Fail as fail:
            errors.append(LoadError(str(fail.origin or conn.origin), _label("conn", name),
                                    fail.message))
            broken.add(("conn", name))

    state = DesiredState(
        conns=MappingProxyType(conns), pools=MappingProxyType(pools),
        authorities=MappingProxyType(authorities), certs=MappingProxyType(certs),
        keys=MappingProxyType(keys), shared=MappingProxyType(shared),
        tokens=MappingProxyType(tokens), broken=frozenset(broken),
    )
    return state, errors


def conn_children(item: Item) -> tuple[str, ...]:
    """Names of the CHILD_SA configs of a load-conn item."""
    body: object = next(iter(item.message.values()), None)
    children = body.get("children", {}) if isinstance(body, Mapping) else {}
    return tuple(children) if isinstance(children, Mapping) else ()
