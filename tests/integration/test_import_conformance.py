"""Differential conformance of `swand import` with starter/stroke over strongSwan's
ipsec.conf corpus (the `ipsec_corpus` fixture: `$SWAND_IPSEC_CORPUS`, default
`<repo>/../shared/corpus/strongswan-ipsec-conf`; skipped without it unless
`SWAND_REQUIRE_CORPUS=1`): 546 ipsec.conf files of strongSwan 5.5.3's test scenarios.

For each file: starter feeds it (with its ipsec.secrets and an ipsec.d of stand-in
credentials) to one charon through the stroke plugin; `swand import` converts the same
files and swand's loader (`swand apply`, in-process) loads the folder into a second
charon. Both charons are then asked over VICI: `list-conns` (every field), `list-certs`
(types); and what they loaded from the secrets and pools: the private key types, the
shared secrets (type and owner ids) and the pool sizes. VICI's get-keys/get-shared/
get-pools list only what VICI loaded, so stroke's side comes from stroke: its log
(`loaded RSA private key from ...`, `loaded IKE secret for ...`) and `stroke leases`.
A file agrees when both report the same. It counts as refused with a reason when both
refuse it (starter: fatal errors; swand import: an `error` line, which names why), or
when they differ and swand import's report has a `todo` line saying what needs a person
(lines about strongswan.conf tuning alone do not count).

The stroke charon restarts for every file: reusing one through `stroke delete` and
`rereadall` would carry stroke's state from file to file (the certificates it loaded
for conns, `ca` sections, secrets), which neither VICI nor stroke lists completely, so
a leftover could not be told from a difference; a start takes about 60 ms. swand's
charon is emptied over VICI. WORKERS pairs of charons check files at once: a file's
time is mostly waiting on charon and starter, not CPU.

Placeholders (`PH_IP_MOON` ...) get the addresses of strongSwan's test network; missing
credentials get stand-ins like test_conformance's (`.der` DER, else PEM; keys of the
type the secrets entry names).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_conformance import (  # type: ignore[import-not-found]
    _stand_in_material,
    _vici,
    reset_charon,
)

from swand.commands.import_ import run_import, write_folder
from swand.config import SwandConfig
from swand.core.ipsecconf import ImportSyntaxError, parse_ipsec_conf
from swand.lab.stroke import SENTINEL, SENTINEL_CONF, StrokeCharon, tree_has_starter

#: per charon version: files that must agree or be refused with a reason (raise as fixed)
THRESHOLD = {"5.9": 546, "6.0": 546}

#: strongSwan's test network (testing/hosts/*)
ADDRESSES = {
    "PH_IP_MOON1": "10.1.0.1", "PH_IP_MOON": "192.168.0.1",
    "PH_IP_SUN1": "10.2.0.1", "PH_IP_SUN": "192.168.0.2",
    "PH_IP_ALICE": "10.1.0.10", "PH_IP_VENUS": "10.1.0.20", "PH_IP_BOB": "10.2.0.10",
    "PH_IP_CAROL1": "10.3.0.1", "PH_IP_CAROL": "192.168.0.100",
    "PH_IP_DAVE1": "10.3.0.2", "PH_IP_DAVE": "192.168.0.200",
    "PH_IP_WINNETOU": "192.168.0.150",
}
_PLACEHOLDER = re.compile("|".join(sorted(ADDRESSES, key=len, reverse=True)))


def corpus_files(corpus: Path) -> list[Path]:
    only = os.environ.get("SWAND_CORPUS_FILTER", "")  # substring, to debug a few files
    return sorted(p for p in corpus.rglob("ipsec.conf") if only in str(p))


def prepare(etc: Path, into: Path) -> Path:
    """Copy a corpus etc/ (placeholders replaced) to `into` with an ipsec.d of stand-in
    credentials for every file ipsec.conf and ipsec.secrets name; returns ipsec.conf."""
    into.mkdir(parents=True)
    for name in ("ipsec.conf", "ipsec.secrets"):
        src = etc / name
        if src.exists():
            text = src.read_text(errors="surrogateescape")
            (into / name).write_text(_PLACEHOLDER.sub(lambda m: ADDRESSES[m.group(0)], text),
                                     errors="surrogateescape")
    ipsec_d = into / "ipsec.d"
    for sub in ("cacerts", "certs", "private", "aacerts", "ocspcerts", "acerts", "crls"):
        (ipsec_d / sub).mkdir(parents=True)
    stand_ins(into, ipsec_d)
    return into / "ipsec.conf"


def stand_ins(etc: Path, ipsec_d: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    m = _stand_in_material()

    def enc(name: str) -> serialization.Encoding:
        return serialization.Encoding.DER if name.endswith(".der") else \
            serialization.Encoding.PEM

    (ipsec_d / "cacerts" / "strongswanCert.pem").write_bytes(
        m["ca"].public_bytes(serialization.Encoding.PEM))
    ids = cert_ids(etc / "ipsec.conf")
    conf = (etc / "ipsec.conf").read_text(errors="replace")
    for key, value in re.findall(r"^\s+(\w+)\s*=\s*\"?([^\"#\n]*)", conf, re.M):
        value = value.strip()
        if key in ("leftcert", "rightcert", "leftcert2", "rightcert2") and \
                not os.path.isabs(value):
            path = ipsec_d / "certs" / value
            cert = m["ca"] if value == "strongswanCert.pem" else \
                leaf_for(value, ids.get(value, ()))
            path.write_bytes(cert.public_bytes(enc(value)))
        elif key in ("leftsigkey", "rightsigkey", "leftrsasigkey", "rightrsasigkey") and \
                not value.startswith(("%", "0x", "0s", "dns:", "ssh:")) and \
                not os.path.isabs(value):
            (ipsec_d / "certs" / value).write_bytes(m["leaf_key"].public_key().public_bytes(
                enc(value), serialization.PublicFormat.SubjectPublicKeyInfo))
        elif key == "cacert" and not os.path.isabs(value):
            (ipsec_d / "cacerts" / value).write_bytes(m["ca"].public_bytes(enc(value)))
        elif key in ("leftca", "rightca", "leftca2", "rightca2") and "=" in value:
            try:
                ca = ca_for(value)
            except ValueError:  # not a DN cryptography can build
                continue
            slug = re.sub(r"[^A-Za-z0-9]+", "-", value).strip("-")
            (ipsec_d / "cacerts" / f"{slug}.pem").write_bytes(
                ca.public_bytes(serialization.Encoding.PEM))
    secrets = etc / "ipsec.secrets"
    if not secrets.exists():
        return
    for line in secrets.read_text(errors="replace").splitlines():
        found = re.match(r"^[^#]*:\s*(RSA|ECDSA|BLISS|PKCS8|PKCS12|P12)\s+(\S+)"
                         r"(?:\s+\"?([^\"]*)\"?)?", line)
        if not found:
            continue
        kind, name, password = found.groups()
        if os.path.isabs(name) or name.startswith("%"):
            continue
        pw = (password or "").encode()
        protect = (serialization.BestAvailableEncryption(pw) if pw and pw != b"%prompt"
                   else serialization.NoEncryption())
        path = ipsec_d / "private" / name
        if kind in ("PKCS12", "P12"):
            path.write_bytes(pkcs12.serialize_key_and_certificates(
                b"stand-in", m["leaf_key"], m["leaf"], [m["ca"]], protect))
        else:
            key = m["leaf_key"] if kind == "ECDSA" else m["rsa_key"]
            fmt = serialization.PrivateFormat.PKCS8 if kind == "PKCS8" else \
                serialization.PrivateFormat.TraditionalOpenSSL
            path.write_bytes(key.private_bytes(enc(name), fmt, protect))


def cert_ids(conf: Path) -> dict[str, tuple[str, ...]]:
    """certificate file -> the ids the conns using it claim: stroke replaces an id its
    certificate does not confirm by the certificate's subject, so stand-ins must carry
    them (a real gateway's certificates do)."""
    try:
        parsed = parse_ipsec_conf(str(conf))
    except ImportSyntaxError:
        return {}
    out: dict[str, set[str]] = {}
    for sec in [*parsed.conns.values()]:
        values = parsed.effective(sec)
        for side in ("left", "right"):
            for suffix in ("", "2"):
                cert, ident = values.get(f"{side}cert{suffix}"), values.get(f"{side}id{suffix}")
                if cert and cert.value and ident and ident.value:
                    out.setdefault(cert.value, set()).add(ident.value)
    return {k: tuple(sorted(v)) for k, v in out.items()}


_leaves: dict[tuple[str, tuple[str, ...]], Any] = {}


def _name(dn: str) -> Any:
    from cryptography import x509

    return x509.Name.from_rfc4514_string(", ".join(reversed(
        [p.strip() for p in dn.split(",")])))


def ca_for(dn: str) -> Any:
    """A self-signed stand-in CA with subject `dn` (for leftca/rightca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    m = _stand_in_material()
    name = _name(dn)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(m["ca_key"].public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(m["ca"].not_valid_before_utc)
            .not_valid_after(m["ca"].not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(m["ca_key"], hashes.SHA256()))


def leaf_for(file: str, ids: tuple[str, ...]) -> Any:
    """A stand-in leaf (the shared key) whose subject or subjectAltNames are `ids`; one
    per file name, as stroke tells certificates apart by content."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    if (file, ids) in _leaves:
        return _leaves[file, ids]
    m = _stand_in_material()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in")])
    sans: list[x509.GeneralName] = [x509.DNSName("stand-in.test")]
    for ident in ids:
        text = ident.lstrip("@")
        if "=" in text:
            with contextlib.suppress(ValueError):
                subject = _name(text)
        elif "@" in text:
            sans.append(x509.RFC822Name(text))
        else:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(text)))
            except ValueError:
                if text and "%" not in text and "*" not in text:
                    sans.append(x509.DNSName(text))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(m["ca"].subject)
            .public_key(m["leaf_key"].public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(m["leaf"].not_valid_before_utc)
            .not_valid_after(m["leaf"].not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(m["ca_key"], hashes.SHA256()))
    _leaves[file, ids] = cert
    return cert


# --- observing ----------------------------------------------------------------------------


def observe(sock: Path) -> dict[str, Any]:
    """What a charon reports; key order ignored (stroke and VICI build the dicts in a
    different order), list order kept."""
    conns = [e for e in _vici(sock, "list-conns", event="list-conn") if SENTINEL not in e]
    certs = _vici(sock, "list-certs", event="list-cert")
    return {
        "list-conns": sorted(json.dumps(e, sort_keys=True) for e in conns),
        # a set: charon 6.0's stroke lists a raw public key twice
        "list-certs": sorted({repr((c.get("type"), c.get("flag"))) for c in certs}),
    }


def _ids(owners: list[str]) -> str:
    """Owner ids as charon prints them (`@moon` is moon, quotes go), space separated and
    sorted by word (stroke logs them space separated, and a DN has spaces); none: %any."""
    words = " ".join(o.strip().strip('"').removeprefix("@") for o in owners).split()
    return " ".join(sorted(words)) if words else "%any"


#: stroke's log of what it loaded from ipsec.secrets (stroke_cred.c), and `stroke leases`
_STROKE_KEY = re.compile(r"loaded (\w+) private key from")
_STROKE_SHARED = re.compile(r"loaded (\w+) secret for (.*)$", re.M)
_STROKE_POOL = re.compile(r"Leases in pool '.*', usage: \d+/(\d+)")


def stroke_credentials(log: str, leases: str) -> dict[str, Any]:
    """The private key types, shared secrets (type and owners) and pool sizes stroke
    loaded: VICI's get-keys/get-shared/get-pools only list VICI's own."""
    return {
        "keys": sorted(set(_STROKE_KEY.findall(log))),
        "shared": sorted({f"{t.upper()} {_ids(ids.split())}"
                          for t, ids in _STROKE_SHARED.findall(log)}),
        "pools": sorted(int(n) for n in _STROKE_POOL.findall(leases)),
    }


def _keyid_types() -> dict[str, str]:
    """charon's key id (SHA-1 of the public key: PKCS#1 for RSA, the EC point) of each
    stand-in private key -> its type, as stroke's log names it."""
    import hashlib

    from cryptography.hazmat.primitives import serialization as ser

    m = _stand_in_material()
    rsa = m["rsa_key"].public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.PKCS1)
    ec = m["leaf_key"].public_key().public_bytes(ser.Encoding.X962,
                                                 ser.PublicFormat.UncompressedPoint)
    return {hashlib.sha1(rsa).hexdigest(): "RSA", hashlib.sha1(ec).hexdigest(): "ECDSA"}


def swand_credentials(sock: Path, swanctl_conf: Path) -> dict[str, Any]:
    """The same for swand's charon: get-keys (typed by key id), get-shared (each id's
    type and owners from the imported swanctl.conf), get-pools."""
    from swand.core.settings import parse_text

    types = _keyid_types()
    secrets = parse_text(swanctl_conf.read_text()).sections.get("secrets")
    shared = set()
    for name in _vici(sock, "get-shared").get("keys", []):
        sec = secrets.sections.get(name) if secrets else None
        owners = [s.value for k, s in sec.settings.items() if k.startswith("id")] if sec \
            else [f"?{name}"]
        # charon keeps xauth secrets as EAP ones (vici's load-shared and stroke alike)
        kind = name.split("-")[0].upper().replace("XAUTH", "EAP")
        shared.add(f"{kind} {_ids(owners)}")
    return {
        "keys": sorted({types.get(k, f"?{k}") for k in _vici(sock, "get-keys").get("keys",
                                                                                   [])}),
        "shared": sorted(shared),
        "pools": sorted(int(p.get("size", -1)) for p in _vici(sock, "get-pools").values()),
    }


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in a:
        if a[key] != b[key]:
            only_a = [x for x in a[key] if x not in b[key]][:1]
            only_b = [x for x in b[key] if x not in a[key]][:1]
            out.append(f"{key}: stroke-only {str(only_a)[:1500]}\n      swand-only "
                       f"{str(only_b)[:1500]}")
    return out


def count_reason(reasons: dict[str, int], line: str) -> None:
    reason = re.sub(r"^\S+\s+\S+:\d+: ", "", line)[:70]
    reasons[reason] = reasons.get(reason, 0) + 1


#: file pairs checked at once, each with its own two charons: a file's time is mostly
#: waiting (charon starting, starter, VICI round trips), not CPU
WORKERS = 3


@dataclass
class _Worker:
    """One stroke charon and one swand charon, each in its own namespace."""

    stroke: StrokeCharon
    vici: Path
    vici_uri: str
    local: list[str]


@pytest.mark.lab
@pytest.mark.timeout(1200)
def test_import_conformance(make_lab: Any, charon_version: str, ipsec_corpus: Path) -> None:
    lab = make_lab(clients=0, start_charons=False, charon=charon_version)
    workers: list[_Worker] = []
    for n in range(WORKERS):
        ref = lab.add_host(f"stroke{n}", start=False)
        mine = lab.add_host(f"swand{n}")
        assert ref.charon is not None and mine.charon is not None
        if charon_version == "6.0" and not tree_has_starter(ref.charon.tree):
            pytest.fail("the trixie tree has no starter/stroke plugin: rebuild it with "
                        "strongswan-starter in swand.lab.trixie.PACKAGES")
        stroke = StrokeCharon(ref.netns, ref.workdir, charon_version, ref.charon.tree,
                              ref.charon.binds)
        ref.charon = stroke
        # stroke's host has 127.0.0.1 and ::1 only: what swand import is told, too
        workers.append(_Worker(stroke, mine.vici_socket, mine.vici_uri, ["127.0.0.1", "::1"]))
    scratch = lab.hosts["stroke0"].workdir / "corpus"
    scratch.mkdir()
    _stand_in_material()  # made once, before the threads share it
    agree = refused = 0
    disagree: list[tuple[str, list[str]]] = []
    reasons: dict[str, int] = {}
    started = time.monotonic()
    spent = {"stroke": 0.0, "swand": 0.0}
    lock = threading.Lock()

    def stroke_side(w: _Worker, work: Path, conf: Path) -> tuple[bool, str, dict[str, Any]]:
        """starter feeds the file (its ipsec.d and ipsec.secrets) to a fresh charon."""
        t0 = time.monotonic()
        stroke = w.stroke
        shutil.rmtree(stroke.ipsec_d)
        shutil.copytree(work / "ipsec.d", stroke.ipsec_d)
        secrets = work / "ipsec.secrets"
        shutil.copy(secrets, stroke.secrets_path) if secrets.exists() else \
            stroke.secrets_path.write_text("")
        fed = work / "ipsec.conf.stroke"
        fed.write_text(conf.read_text(errors="surrogateescape") + SENTINEL_CONF,
                       errors="surrogateescape")
        stroke.stop()
        with contextlib.suppress(FileNotFoundError):
            stroke.log_path.unlink()
        stroke.start()
        ok, out = stroke.run_starter(fed)
        seen: dict[str, Any] = {}
        if ok:
            seen = observe(stroke.socket_path)
            # stroke's pools come from left/rightsourceip only: spare a process otherwise
            text = conf.read_text(errors="replace")
            leases = stroke.stroke("leases").stdout if "sourceip" in text or \
                "include" in text else ""
            seen.update(stroke_credentials(stroke.log_path.read_text(errors="replace"),
                                           leases))
        with lock:
            spent["stroke"] += time.monotonic() - t0
        return ok, out, seen

    def swand_side(w: _Worker, work: Path, conf: Path
                   ) -> tuple[list[Any], list[str], dict[str, Any]]:
        """swand import, then swand's loader into the emptied second charon."""
        from swand.commands.apply import apply_once

        t0 = time.monotonic()
        secrets = work / "ipsec.secrets"
        result, report = run_import(str(conf), str(secrets) if secrets.exists() else None,
                                    str(work / "ipsec.d"), w.local)
        reset_charon(w.vici)
        failures: list[str] = []
        seen: dict[str, Any] = {}
        if result is not None and not any(r.level == "error" for r in report):
            out = work / "swanctl"
            write_folder(result, out, "")
            cfg = SwandConfig().with_overrides(vici=w.vici_uri, swanctl_dir=str(out),
                                               firewall_enabled=False)
            _, failures = asyncio.run(apply_once(cfg, firewall=None))
            seen = observe(w.vici)
            seen.update(swand_credentials(w.vici, out / "swanctl.conf"))
        with lock:
            spent["swand"] += time.monotonic() - t0
        return report, failures, seen

    def check(w: _Worker, i: int, conf_file: Path) -> None:
        """Both sides of one file at once (each mostly waits on its charon)."""
        nonlocal agree, refused
        name = str(conf_file.parent.parent.relative_to(ipsec_corpus))
        work = scratch / f"f{i}"
        conf = prepare(conf_file.parent, work)
        with concurrent.futures.ThreadPoolExecutor(1) as other:
            theirs = other.submit(stroke_side, w, work, conf)
            report, failures, b = swand_side(w, work, conf)
            starter_ok, starter_out, a = theirs.result()
        errors = [str(r) for r in report if r.level == "error"]
        #: what the report says needs a person (not just strongswan.conf tuning)
        flagged = [str(r) for r in report if r.level == "todo" and
                   "strongswan.conf" not in r.message]
        with lock:
            if not starter_ok or errors:
                if not starter_ok and errors:
                    refused += 1
                    count_reason(reasons, errors[0])
                else:
                    disagree.append((name, [f"starter ok={starter_ok} "
                                            f"{starter_out.strip()[-300:]!r}",
                                            *errors[:3]]))
            elif a == b and not failures:
                agree += 1
            elif flagged:
                refused += 1
                count_reason(reasons, flagged[0])
                if os.environ.get("SWAND_CORPUS_FILTER"):  # debugging a few: show why
                    print(f"  refused: {name}: {flagged[0]}\n    " +
                          "\n    ".join([*_diff(a, b), *failures[:3]]))
            else:
                disagree.append((name, [*_diff(a, b), *failures[:3]]))
        shutil.rmtree(work)

    def run_worker(w: _Worker, share: list[tuple[int, Path]]) -> None:
        for i, conf_file in share:
            check(w, i, conf_file)

    files = list(enumerate(corpus_files(ipsec_corpus)))
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(run_worker, w, files[n::WORKERS])
                       for n, w in enumerate(workers)]:
            future.result()
    elapsed = time.monotonic() - started
    total = agree + refused + len(disagree)
    print(f"\ncharon {charon_version} import conformance: {agree} agree, {refused} refused "
          f"with a reason, {len(disagree)} disagree of {total} files ({elapsed:.0f} s, "
          f"{WORKERS} workers; stroke side {spent['stroke']:.0f} s, swand side "
          f"{spent['swand']:.0f} s in all)")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  refused ({n}): {reason}")
    for name, why in sorted(disagree):
        print(f"  disagrees: {name}")
        for line in why:
            print(f"    {line}")
    threshold = total if os.environ.get("SWAND_CORPUS_FILTER") else THRESHOLD[charon_version]
    assert agree + refused >= threshold, [n for n, _ in disagree]
