"""Loader benchmark: 1,000 generated connections into a charon 5.9.8 in the lab.

For the same swanctl folder, in the same run, against the same charon (reset between
loads): full load and unchanged reload, with `swanctl --load-all` and with swand
(`ConfigLoader.reconcile`, in-process, as the daemon runs it; and `swand apply` as a
process, which adds Python's start-up). Goals: swand's full load no slower than swanctl's;
swand's unchanged reload under 5 % of swanctl's full load.

    .venv/bin/python bench/bench_load.py [--conns 1000] [--rounds 3] [--base TREE]
        [--start-up-only]                                                   (root: lab)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swand.adapters.vici import ViciSession
from swand.lab import Lab
from swand.runtime.loader import ConfigLoader, load_swanctl_dir

IKE = "aes256-sha384-prfsha384-ecp384"
ESP = "aes256gcm16-ecp384"


def write_folder(root: Path, conns: int) -> Path:
    """A gateway folder: CA, gateway certificate and key, `conns` connections (each a
    client pinned by id, every tenth with its own pool) and their pools."""
    d = root / "swanctl"
    for sub in ("x509", "x509ca", "private"):
        (d / sub).mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(1).not_valid_before(start)
          .not_valid_after(start + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA384()))
    gw_key = ec.generate_private_key(ec.SECP384R1())
    gw = (x509.CertificateBuilder()
          .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpn.bench")]))
          .issuer_name(name).public_key(gw_key.public_key()).serial_number(2)
          .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
          .add_extension(x509.SubjectAlternativeName([x509.DNSName("vpn.bench")]),
                         critical=False)
          .sign(key, hashes.SHA384()))
    (d / "x509ca" / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "x509" / "gateway.pem").write_bytes(gw.public_bytes(serialization.Encoding.PEM))
    (d / "private" / "gateway.pem").write_bytes(gw_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    parts = ["connections {"]
    pools = ["pools {",
             "    rw_pool {\n        addrs = 10.8.0.0/16\n        dns = 1.1.1.1, 1.0.0.1\n    }"]
    for i in range(conns):
        pool = f"p{i}" if i % 10 == 0 else "rw_pool"
        if i % 10 == 0:
            pools.append(f"    p{i} {{\n        addrs = 10.9.{i // 256}.{i % 256}/32\n    }}")
        parts.append(f"""    client{i} {{
        version = 2
        proposals = {IKE}
        rekey_time = 0
        unique = replace
        dpd_delay = 30s
        encap = yes
        pools = {pool}
        local {{
            auth = pubkey
            certs = gateway.pem
            id = vpn.bench
        }}
        remote {{
            auth = pubkey
            id = client{i}@bench.test
        }}
        children {{
            client{i} {{
                local_ts = 0.0.0.0/0
                esp_proposals = {ESP}
                rekey_time = 0
                dpd_action = clear
            }}
        }}
    }}""")
    parts.append("}")
    pools.append("}")
    (d / "swanctl.conf").write_text("\n".join(parts + pools) + "\n")
    return d


def swanctl_load(uri: str, folder: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(["swanctl", "--load-all", "--noprompt", "--uri", uri, "--file",
                           str(folder / "swanctl.conf")], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"swanctl --load-all failed: {proc.stderr[-500:]}")
    return elapsed


def _env(tree: str | None) -> dict[str, str] | None:
    """The environment of a process that imports swand from `tree` (None: as we do)."""
    return None if tree is None else {**os.environ, "PYTHONPATH": tree}


def swand_apply(uri: str, folder: Path, tree: str | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "swand", "apply", "--no-firewall",
                           "--swanctl-dir", str(folder), "--vici", uri],
                          capture_output=True, text=True, check=False, env=_env(tree),
                          cwd=tree)  # `-m` puts the working directory first on the path
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"swand apply failed: {proc.stderr[-500:]}")
    return elapsed


async def first_load(uri: str, folder: Path) -> float:
    """The daemon's first pass as a fresh daemon runs it: `reconcile` of a new loader,
    swand imported but nothing parsed yet."""
    session = ViciSession(uri)
    try:
        t0 = time.perf_counter()
        report = await ConfigLoader(str(folder)).reconcile(session, reread=True)
        elapsed = time.perf_counter() - t0
        assert report.ok, report.failure_lines()[:5]
    finally:
        await session.close()
    return elapsed


def swand_first_load(uri: str, folder: Path, tree: str | None = None) -> float:
    """`first_load` in a new process importing swand from `tree`."""
    proc = subprocess.run([sys.executable, __file__, "--first-load", uri, str(folder)],
                          capture_output=True, text=True, check=False, env=_env(tree))
    if proc.returncode != 0:
        raise SystemExit(f"first load failed: {proc.stderr[-500:]}")
    return float(proc.stdout.split()[-1])


def _start_up_round(host: Any, uri: str, folder: Path, base: str | None,
                    add: Callable[[str, float], None], reverse: bool) -> None:
    """One round of the start-up measures, each after a charon restart."""
    steps: list[tuple[str, Callable[[], float]]] = [
        ("swand first load (fresh process)", lambda: swand_first_load(uri, folder)),
        ("swand apply, full (process)", lambda: swand_apply(uri, folder)),
    ]
    if base:
        steps += [
            ("base: swand first load (fresh process)",
             lambda: swand_first_load(uri, folder, base)),
            ("base: swand apply, full (process)", lambda: swand_apply(uri, folder, base)),
        ]
    for name, measure in (steps[::-1] if reverse else steps):
        host.restart_charon()
        add(name, measure())


def _load() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


async def swand_run(host: object, uri: str, folder: Path) -> dict[str, float]:
    """swand in-process, as the daemon runs it: full load into an empty charon, unchanged
    reload (SIGHUP with no file changed), and full reload after a charon restart (the
    parsed configuration kept)."""
    loader = ConfigLoader(str(folder))
    out: dict[str, float] = {}
    session = ViciSession(uri)
    try:
        t0 = time.perf_counter()
        report = await loader.reconcile(session, reread=True)
        out["full"] = time.perf_counter() - t0
        assert report.ok, report.failure_lines()[:5]
        t0 = time.perf_counter()
        again = await loader.reconcile(session, reread=True)
        out["unchanged"] = time.perf_counter() - t0
        assert again.ok, again.failure_lines()[:5]
        out["sent"] = len(again.results)
        host.restart_charon()  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        # the daemon's pass after its Charon reports charon up again
        restarted = await loader.reconcile(session, full=True)
        out["restart"] = time.perf_counter() - t0
        assert restarted.ok and restarted.full, restarted.failure_lines()[:5]
    finally:
        await session.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", metavar="TREE",
                    help="a checkout of swand to compare with (e.g. main in a second "
                         "worktree): its `swand apply` and first load run in every round "
                         "too, interleaved with ours")
    ap.add_argument("--start-up-only", action="store_true",
                    help="per round only swanctl's full load, `swand apply` and the first "
                         "load (and the base's), in an order alternated per round")
    ap.add_argument("--first-load", nargs=2, metavar=("URI", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_load:
        print(asyncio.run(first_load(args.first_load[0], Path(args.first_load[1]))))
        return
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as tmp, Lab(clients=0, start_charons=False) as lab:
        folder = write_folder(Path(tmp), args.conns)
        host = lab.add_host("bench")
        uri = host.vici_uri
        for index in range(args.rounds):
            add("load average (1 min) at the round's start", _load())
            host.restart_charon()
            add("swanctl --load-all, full", swanctl_load(uri, folder))
            if args.start_up_only:
                _start_up_round(host, uri, folder, args.base, add, reverse=index % 2 == 1)
                continue
            add("swanctl --load-all, unchanged", swanctl_load(uri, folder))
            host.restart_charon()
            t0 = time.perf_counter()
            load_swanctl_dir(str(folder))
            add("  of which: swand parse + translate (no charon)", time.perf_counter() - t0)
            run = asyncio.run(swand_run(host, uri, folder))
            add("swand reconcile, full (in-process)", run["full"])
            add("swand reconcile, unchanged (in-process)", run["unchanged"])
            add("load commands sent by the unchanged reload", run["sent"])
            add("swand reconcile after charon restart", run["restart"])
            host.restart_charon()
            add("swand apply, full (process)", swand_apply(uri, folder))
            host.restart_charon()
            add("swand first load (fresh process)", swand_first_load(uri, folder))
            if args.base:
                host.restart_charon()
                add("base: swand apply, full (process)", swand_apply(uri, folder, args.base))
                host.restart_charon()
                add("base: swand first load (fresh process)",
                    swand_first_load(uri, folder, args.base))
    print(f"{args.conns} connections, median of {args.rounds} rounds, charon 5.9.8:")
    medians = {k: statistics.median(v) for k, v in results.items()}
    for name, value in medians.items():
        unit = "" if name.startswith("load commands") else " s"
        print(f"  {name:45s} {value:8.3f}{unit}")
    # ratios per round (the same round's swanctl), then their median: the machine's load
    # drifts between rounds, a round's two measurements are seconds apart
    base = results["swanctl --load-all, full"]

    def ratio(name: str) -> str:
        values = sorted(a / b * 100 for a, b in zip(results[name], base, strict=True))
        return (f"{statistics.median(values):5.1f} % "
                f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")

    for label, name in (
            ("swand full", "swand reconcile, full (in-process)"),
            ("swand after restart", "swand reconcile after charon restart"),
            ("swand unchanged", "swand reconcile, unchanged (in-process)"),
            ("swand apply", "swand apply, full (process)"),
            ("first load", "swand first load (fresh process)"),
            ("base apply", "base: swand apply, full (process)"),
            ("base first load", "base: swand first load (fresh process)")):
        if name in results:
            print(f"  {label + ' / swanctl full:':36s}{ratio(name)}")
    print("every round (s; ratios to the round's swanctl --load-all, full):")
    for name, values in results.items():
        print(f"  {name:45s} " + " ".join(f"{v:7.3f}" for v in values))
    for name in ("swand reconcile, full (in-process)", "swand first load (fresh process)",
                 "swand apply, full (process)", "base: swand first load (fresh process)",
                 "base: swand apply, full (process)"):
        if name in results:
            print(f"  {name + ' / swanctl':45s} " + " ".join(
                f"{a / b:7.2f}" for a, b in zip(results[name], base, strict=True)))

if __name__ == "__main__":
    main()
