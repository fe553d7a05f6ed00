"""Conformance of swand's loader with `swanctl --load-all` (strongSwan 5.9.8) over the
strongSwan test-scenario corpus (the `corpus` fixture: `$SWAND_CORPUS`, default
`<repo>/../shared/corpus/strongswan-testing`; skipped without it unless
`SWAND_REQUIRE_CORPUS=1`, as in CI): 465 swanctl folders.

Two levels:
- `test_messages_match_swanctl` (no root): swanctl talks to a recording fake VICI socket;
  swand's translation must produce the very same load-* commands and messages.
- `test_conformance` (lab): `swanctl --load-all` into one charon, `swand apply
  --no-firewall` (in-process) into another; `--list-conns/--list-pools/--list-certs/
  --list-authorities --raw` (sorted), the ids of VICI `get-keys`/`get-shared`, and
  success/failure must agree.

Files the scenarios name but strongSwan's suite generates at run time get stand-ins of the
right kind and encoding (`.der` is DER, else PEM), the same for both loaders; an encrypted
key or PKCS#12 named by a secret is encrypted with that secret.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swand.config import SwandConfig
from swand.core.settings import Section, SettingsError, parse_file
from swand.core.swanctl import CONN_FILE_KEYS, split_list, translate
from swand.lab.fake_vici import RecordingVici
from swand.runtime.loader import read_credentials

#: raise as disagreements get fixed; the aim is every folder
MESSAGE_THRESHOLD = 465
#: per charon version (swanctl of the same version as the reference)
CHARON_THRESHOLD = {"5.9": 465, "6.0": 465}


def corpus_folders(corpus: Path) -> list[Path]:
    only = os.environ.get("SWAND_CORPUS_FILTER", "")  # substring, to debug a few folders
    return sorted(p.parent for p in corpus.rglob("swanctl.conf")
                  if p.parent.name == "swanctl" and only in str(p))


def _threshold(full: int, tried: int) -> int:
    """With SWAND_CORPUS_FILTER every folder tried must agree."""
    return tried if os.environ.get("SWAND_CORPUS_FILTER") else full


# --- stand-in credentials ---------------------------------------------------------------

_material: dict[str, Any] = {}


def _stand_in_material() -> dict[str, Any]:
    """One CA, one leaf (ECDSA P-256, quick) and one RSA key, made once per run."""
    if _material:
        return _material
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    end = start + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("stand-in.test")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _material.update(ca=ca, ca_key=ca_key, leaf=leaf, leaf_key=leaf_key,
                     rsa_key=rsa.generate_private_key(65537, 2048))
    return _material


def create_stand_ins(swanctl_dir: Path, tree: Section) -> list[str]:
    """Write every file the configuration names but the folder lacks; return them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    m = _stand_in_material()
    made: list[str] = []

    def encoding(name: str) -> serialization.Encoding:
        return serialization.Encoding.DER if name.endswith(".der") else \
            serialization.Encoding.PEM

    def missing(folder: str, name: str) -> Path | None:
        if os.path.isabs(name):
            return None
        path = swanctl_dir / folder / name
        if path.exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        made.append(f"{folder}/{name}")
        return path

    conns = tree.sections.get("connections")
    stack = list(conns.sections.values()) if conns else []
    while stack:
        sec = stack.pop()
        stack.extend(sec.sections.values())
        for key, setting in sec.settings.items():
            folder = CONN_FILE_KEYS.get(key.lower())
            if folder is None:
                continue
            for token in split_list(setting.value):
                if token[:2].lower() in ("0x", "0s"):
                    continue
                path = missing(folder, token)
                if path is None:
                    continue
                if folder == "pubkey":
                    path.write_bytes(m["leaf_key"].public_key().public_bytes(
                        encoding(token), serialization.PublicFormat.SubjectPublicKeyInfo))
                else:
                    cert = m["leaf"] if folder == "x509" else m["ca"]
                    path.write_bytes(cert.public_bytes(encoding(token)))
    auths = tree.sections.get("authorities")
    for auth in auths.sections.values() if auths else ():
        cacert = auth.settings.get("cacert")
        if cacert is not None:
            path = missing("x509ca", cacert.value)
            if path is not None:
                path.write_bytes(m["ca"].public_bytes(encoding(cacert.value)))
    secrets = tree.sections.get("secrets")
    for name, sec in secrets.sections.items() if secrets else ():
        file_setting = sec.settings.get("file")
        folder = next((t for t in ("private", "rsa", "ecdsa", "pkcs8", "pkcs12")
                       if name.startswith(t)), None)
        if file_setting is None or folder is None:
            continue
        path = missing(folder, file_setting.value)
        if path is None:
            continue
        secret = sec.settings.get("secret")
        password = secret.value.encode() if secret else b""
        protect = (serialization.BestAvailableEncryption(password) if password
                   else serialization.NoEncryption())
        enc = encoding(file_setting.value)
        if folder == "pkcs12":
            path.write_bytes(pkcs12.serialize_key_and_certificates(
                b"stand-in", m["leaf_key"], m["leaf"], [m["ca"]], protect))
        elif folder == "rsa":
            path.write_bytes(m["rsa_key"].private_bytes(
                enc, serialization.PrivateFormat.TraditionalOpenSSL, protect))
        elif folder == "ecdsa":
            path.write_bytes(m["leaf_key"].private_bytes(
                enc, serialization.PrivateFormat.TraditionalOpenSSL, protect))
        else:
            path.write_bytes(m["leaf_key"].private_bytes(
                enc, serialization.PrivateFormat.PKCS8, protect))
    return made


def prepared(folder: Path, into: Path) -> tuple[Path, Section | None]:
    """Copy a corpus folder to `into/swanctl` and add stand-ins; returns (dir, tree)."""
    target = into / "swanctl"
    shutil.copytree(folder, target)
    try:
        tree = parse_file(target / "swanctl.conf")
    except SettingsError:
        return target, None
    create_stand_ins(target, tree)
    return target, tree


# --- level 1: messages, against swanctl on a recording socket ---------------------------


def _as_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _as_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_bytes(v) for v in value]
    return value


def _public_key(data: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a private key in any encoding (or the bytes as they
    are when they are no key): swanctl re-encodes the keys it can parse (PKCS#1/SEC1 DER
    with the specific type), swand sends the file (type `any` for private/ and pkcs8/),
    and charon ends up with the same key either way."""
    from cryptography.hazmat.primitives import serialization

    loader = (serialization.load_pem_private_key if b"-----BEGIN" in data
              else serialization.load_der_private_key)
    try:
        key = loader(data, None, unsafe_skip_rsa_key_validation=True)
    except (TypeError, ValueError):
        return data
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def comparable(commands: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """load-* commands only; credentials sorted (swanctl uses readdir order); private keys
    compared by their public key (see `_public_key`)."""
    out: list[tuple[str, Any]] = []
    for command, msg in commands:
        if command.startswith("get-"):
            continue
        out.append((command, {"key": _public_key(bytes(msg["data"]))}
                    if command == "load-key" else _as_bytes(dict(msg))))
    creds = sorted((c for c in out if c[0] in ("load-cert", "load-key")), key=repr)
    return creds + [c for c in out if c[0] not in ("load-cert", "load-key")]


def swand_commands(swanctl_dir: Path, tree: Section) -> list[tuple[str, Any]]:
    state, _ = translate(tree, read_credentials(str(swanctl_dir), tree))
    return [(i.command, i.message) for i in state.items()]


@pytest.mark.timeout(600)
def test_messages_match_swanctl(tmp_path: Path, corpus: Path) -> None:
    if shutil.which("swanctl") is None:
        pytest.fail("swanctl is not installed (dev.sh installs strongswan-swanctl)")
    fake = RecordingVici(tmp_path / "fake.vici")
    agree, disagree = 0, []
    try:
        for i, folder in enumerate(corpus_folders(corpus)):
            work = tmp_path / f"f{i}"
            work.mkdir()
            swanctl_dir, tree = prepared(folder, work)
            fake.log.clear()
            subprocess.run(
                ["swanctl", "--load-all", "--noprompt", "--uri", f"unix://{fake.path}",
                 "--file", str(swanctl_dir / "swanctl.conf")],
                capture_output=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
            theirs = comparable(fake.log)
            mine = comparable(swand_commands(swanctl_dir, tree)) if tree else []
            if mine == theirs:
                agree += 1
            else:
                disagree.append(str(folder.relative_to(corpus)))
            shutil.rmtree(work)
    finally:
        fake.close()
    print(f"\nmessage conformance: {agree} of {agree + len(disagree)} folders agree")
    for name in disagree:
        print(f"  disagrees: {name}")
    assert agree >= _threshold(MESSAGE_THRESHOLD, agree + len(disagree)), disagree


# --- level 2: two real charons ----------------------------------------------------------


def _vici(path: Path, command: str, msg: dict | None = None,
          event: str | None = None) -> Any:
    """One blocking VICI command; the decoded reply (str values). With `event`, the list
    of streamed event messages instead (what `swanctl --list-* --raw` prints)."""
    from vici.protocol import Message, Packet, Transport

    from swand.lab import decode

    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    try:
        sock.connect(str(path))
        transport = Transport(sock)
        if event:
            transport.send(Packet.register_event(event))
            Packet.parse(transport.receive())
        transport.send(Packet.request(command, Message.serialize(msg) if msg else None))
        events = []
        while True:
            reply = Packet.parse(transport.receive())
            if reply.response_type == Packet.EVENT:
                events.append(decode(dict(Message.deserialize(reply.payload))))
                continue
            break
        return events if event else decode(dict(Message.deserialize(reply.payload)))
    finally:
        sock.close()


def reset_charon(sock: Path) -> None:
    """Unload everything a previous folder loaded (connections first), clear credentials."""
    for name in _vici(sock, "get-conns").get("conns", []):
        _vici(sock, "unload-conn", {"name": name})
    for name in _vici(sock, "get-pools"):
        _vici(sock, "unload-pool", {"name": name})
    for name in _vici(sock, "get-authorities").get("authorities", []):
        _vici(sock, "unload-authority", {"name": name})
    _vici(sock, "clear-creds")
    for key in _vici(sock, "get-shared").get("keys", []):
        _vici(sock, "unload-shared", {"id": key})


def observe(sock: Path) -> dict[str, Any]:
    """What a charon reports, sorted: the messages `swanctl --list-conns/--list-pools/
    --list-certs/--list-authorities --raw` print (fetched over VICI in-process: eight
    swanctl processes per folder would triple the test's run time), and the ids of
    `get-keys` / `get-shared`."""
    return {
        "--list-conns": sorted(repr(e) for e in _vici(sock, "list-conns", event="list-conn")),
        "--list-pools": sorted(repr(kv) for kv in _vici(sock, "get-pools").items()),
        "--list-certs": sorted(repr(e) for e in _vici(sock, "list-certs", event="list-cert")),
        "--list-authorities": sorted(repr(e) for e in _vici(
            sock, "list-authorities", event="list-authority")),
        "get-keys": sorted(_vici(sock, "get-keys").get("keys", [])),
        "get-shared": sorted(_vici(sock, "get-shared").get("keys", [])),
    }


def _iter_diff(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    for key in a:
        if a[key] != b[key]:
            only_a = [x for x in a[key] if x not in b[key]][:2]
            only_b = [x for x in b[key] if x not in a[key]][:2]
            yield f"{key}: swanctl-only {str(only_a)[:300]} swand-only {str(only_b)[:300]}"


@pytest.mark.lab
@pytest.mark.timeout(900)
def test_conformance(make_lab: Any, charon_version: str, corpus: Path) -> None:
    """Per charon version, with swanctl of that version as the reference (6.0: the
    trixie tree's, chrooted like its charon)."""
    from swand.commands.apply import apply_once

    lab = make_lab(clients=0, start_charons=False, charon=charon_version)
    ref, mine = lab.add_host("ref"), lab.add_host("swand")
    scratch = ref.workdir / "corpus"  # below the lab root: a chrooted swanctl sees it
    scratch.mkdir()
    agree, disagree = 0, []
    started = time.monotonic()
    for i, folder in enumerate(corpus_folders(corpus)):
        work = scratch / f"f{i}"
        work.mkdir()
        swanctl_dir, _ = prepared(folder, work)
        for host in (ref, mine):
            reset_charon(host.vici_socket)
        proc = ref.swanctl("--load-all", "--noprompt", "--file",
                           str(swanctl_dir / "swanctl.conf"), check=False, timeout=60)
        cfg = SwandConfig().with_overrides(vici=mine.vici_uri, swanctl_dir=str(swanctl_dir),
                                           firewall_enabled=False)
        _, failures = asyncio.run(apply_once(cfg, firewall=None))
        theirs_ok, mine_ok = proc.returncode == 0, not failures
        a, b = observe(ref.vici_socket), observe(mine.vici_socket)
        name = str(folder.relative_to(corpus))
        if a == b and theirs_ok == mine_ok:
            agree += 1
        else:
            why = list(_iter_diff(a, b))
            if theirs_ok != mine_ok:
                why.append(f"swanctl rc {proc.returncode} ({proc.stderr.strip()[-200:]!r}) "
                           f"vs swand {failures[:3]}")
            disagree.append((name, why))
        shutil.rmtree(work)
    elapsed = time.monotonic() - started
    print(f"\ncharon {charon_version} conformance: {agree} of {agree + len(disagree)} "
          f"folders agree ({elapsed:.0f} s)")
    for name, why in disagree:
        print(f"  disagrees: {name}")
        for line in why:
            print(f"    {line}")
    threshold = CHARON_THRESHOLD[charon_version]
    assert agree >= _threshold(threshold, agree + len(disagree)), \
        [n for n, _ in disagree]


def test_list_values_split_like_swanctl(tmp_path: Path) -> None:
    """Differential check of the comma-list tokenizer against swanctl itself: random
    values (commas, blanks, single quotes) in a list key and a file-list key."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    if shutil.which("swanctl") is None:
        pytest.fail("swanctl is not installed (dev.sh installs strongswan-swanctl)")
    fake = RecordingVici(tmp_path / "fake.vici")
    folder = tmp_path / "swanctl"
    (folder / "x509").mkdir(parents=True)
    for name in ("a", "b", "ab", "a b", "'a", "a'", "b'a"):
        (folder / "x509" / name).write_bytes(f"file {name}".encode())

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet="ab, '", max_size=12), st.text(alphabet="ab, '", max_size=8))
    def check(value: str, files: str) -> None:
        conf = folder / "swanctl.conf"
        conf.write_text(f"connections {{\n c {{\n  proposals = {value}\n"
                        f"  local {{\n   certs = {files}\n  }}\n }}\n}}\n")
        fake.log.clear()
        subprocess.run(["swanctl", "--load-conns", "--uri", f"unix://{fake.path}",
                        "--file", str(conf)], capture_output=True, timeout=30, check=False)
        theirs = [m for c, m in fake.log if c == "load-conn"]
        tree = parse_file(conf)
        state, _ = translate(tree, read_credentials(str(folder), tree))
        mine = [dict(i.message) for i in state.conns.values()]
        assert _as_bytes(mine) == _as_bytes([dict(m) for m in theirs]), (value, files)

    try:
        check()
    finally:
        fake.close()


def test_broken_authority_stops_pools_and_connections_like_swanctl(tmp_path: Path) -> None:
    """swanctl --load-all stops after a failing authorities stage; so does swand."""
    from swand.runtime.loader import ConfigLoader

    fake = RecordingVici(tmp_path / "fake.vici")
    folder = tmp_path / "swanctl"
    folder.mkdir()
    (folder / "swanctl.conf").write_text(
        "authorities { ca { cacert = missing.pem } }\n"
        "pools { p { addrs = 10.0.0.0/24 } }\nconnections { c { version = 2 } }\n")
    try:
        subprocess.run(["swanctl", "--load-all", "--noprompt", "--uri", f"unix://{fake.path}",
                        "--file", str(folder / "swanctl.conf")], capture_output=True,
                       timeout=30, check=False)
        theirs = [c for c, _ in fake.log if c.startswith("load-")]
        fake.log.clear()

        async def swand() -> Any:
            from swand.adapters.vici import ViciSession

            async with await ViciSession.connect(f"unix://{fake.path}") as session:
                return await ConfigLoader(str(folder)).reconcile(session, reread=True)

        report = asyncio.run(swand())
        mine = [c for c, _ in fake.log if c.startswith("load-")]
    finally:
        fake.close()
    assert theirs == mine == []
    assert not report.ok
    assert "authority 'ca'" in report.failure_lines()[0]
    assert any("connection 'c'" in line for line in report.failure_lines())
