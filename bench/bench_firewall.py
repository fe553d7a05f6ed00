"""Firewall benchmark: swand's legacy backend beside iptables-legacy-restore, same rules,
same run, inside a throw-away network namespace (the host's tables are never touched).

    .venv/bin/python bench/bench_firewall.py [--sas 1000] [--repeat 7]

Scenarios (policy mode, reference setup: pool 10.8.0.128/25, pinned 10.8.0.1/32, egress
eth0, MSS 1360; every SA has local-ts 0.0.0.0/0 and its own /32 remote-ts, so 2 forward
rules per SA):

1. from empty: all N SAs' rules (plus NAT and MSS) into empty tables;
   restore = ``iptables-legacy-restore --noflush`` + ``ip6tables-legacy-restore`` of
   swand's own `render_save` output.
2. one SA added to N: swand's pass vs restore of the two new rules.
3. unchanged pass at N (the drift check): swand reads the tags and writes nothing; beside
   it ``iptables-legacy-save`` (the cheapest way a script could read the table back).
4. the naive way, for the record: the same forward rules built one by one with
   python-iptables' Rule API (autocommit off, one commit).
5.-7. the same with the nftables backend (``table inet swand``, one libnftables JSON
   transaction), beside ``nft -f`` of the same ruleset / the two new rules, and
   ``nft list table`` as the read-only reference.

Reported: the median of --repeat runs, and for swand the time of the backend pass and of
the whole reconcile step (desired state from inputs + backend pass).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _inside(args: argparse.Namespace) -> None:
    from swand.adapters.iptables_legacy import LegacyIptablesBackend
    from swand.config import FirewallSettings
    from swand.core.firewall import (
        ChildSA,
        DesiredFirewall,
        FirewallInputs,
        Pool,
        SaRuleCache,
        desired_firewall,
        render_save,
    )

    cache = SaRuleCache()  # the reconciler's: a pass recomputes only new SAs' rules
    lock = f"/tmp/swand-bench-{os.getpid()}.lock"
    backend = LegacyIptablesBackend(lock_path=lock)
    run = backend._executor.submit  # the backend's own worker thread, synchronously
    pools = (Pool.from_addrs("rw", "10.8.0.128/25"), Pool.from_addrs("pinned", "10.8.0.1/32"))

    def sa(i: int) -> ChildSA:
        return ChildSA(f"rw{i}", "net", i + 1, ("0.0.0.0/0",),
                       (f"10.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32",))

    def inputs(n: int) -> FirewallInputs:
        return FirewallInputs(FirewallSettings(), "policy", "eth0", pools,
                              tuple(sa(i) for i in range(n)))

    def restore(text4: str, text6: str = "") -> float:
        t = time.perf_counter()
        subprocess.run(["iptables-legacy-restore", "--noflush", "-w"], input=text4,
                       text=True, check=True)
        if text6:
            subprocess.run(["ip6tables-legacy-restore", "--noflush", "-w"], input=text6,
                           text=True, check=True)
        return time.perf_counter() - t

    def swand_pass(inp: FirewallInputs) -> tuple[float, float, object]:
        t = time.perf_counter()
        desired = desired_firewall(inp, cache)
        t_core = time.perf_counter() - t
        report = run(backend.apply_sync, desired).result()
        return report.seconds, t_core + report.seconds, report

    def clear() -> None:
        run(backend.apply_sync, DesiredFirewall({})).result()
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            for table in ("filter", "mangle", "nat"):
                subprocess.run([tool, "-t", table, "-F"], check=False)
                subprocess.run([tool, "-t", table, "-X"], check=False)

    n = args.sas
    full, plus_one = inputs(n), inputs(n + 1)
    desired_full = desired_firewall(full)
    rules_total = desired_full.rule_count
    text4, text6 = render_save(desired_full, "ipv4"), render_save(desired_full, "ipv6")
    new_rules = [line for line in render_save(desired_firewall(plus_one), "ipv4").splitlines()
                 if line.startswith("-A") and line not in set(text4.splitlines())]
    add_text = "*filter\n" + "\n".join(new_rules) + "\nCOMMIT\n"
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    run(backend.apply_sync, desired_firewall(inputs(1))).result()  # warm: import iptc
    clear()
    for _ in range(args.repeat):
        clear()
        backend_s, total_s, _r = swand_pass(full)
        record("1 from empty: swand backend pass", backend_s)
        record("1 from empty: swand reconcile (core + backend)", total_s)
        clear()
        record("1 from empty: iptables-legacy-restore", restore(text4, text6))
        clear()
        swand_pass(full)
        backend_s, total_s, report = swand_pass(plus_one)
        assert report.inserted == 2, report  # type: ignore[attr-defined]
        record("2 one SA added: swand backend pass", backend_s)
        record("2 one SA added: swand reconcile (core + backend)", total_s)
        swand_pass(full)
        record("2 one SA added: iptables-legacy-restore", restore(add_text))
        swand_pass(full)
        backend_s, total_s, report = swand_pass(full)
        assert not report.changed, report  # type: ignore[attr-defined]
        record("3 unchanged: swand backend pass", backend_s)
        record("3 unchanged: swand reconcile (core + backend)", total_s)
        t = time.perf_counter()
        subprocess.run(["iptables-legacy-save"], capture_output=True, check=True)
        record("3 unchanged: iptables-legacy-save (read only)", time.perf_counter() - t)
    clear()
    record("4 naive Rule API, forward rules only", _naive(run, full))
    clear()
    if args.nftables:
        _bench_nftables(args, full, plus_one, record)
    print(f"# {n} SAs, {rules_total} rules (v4+v6), median of {args.repeat} runs\n")
    print("| scenario | ms |")
    print("|---|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} |")
    os.unlink(lock)


def _bench_nftables(args: argparse.Namespace, full, plus_one, record) -> None:  # type: ignore[no-untyped-def]
    """The same scenarios with the nftables backend, beside `nft -f` of the same rules."""
    from swand.adapters.nftables import NftablesBackend
    from swand.core.firewall import DesiredFirewall, desired_firewall
    from swand.core.nftables import render_nft, rule_text

    backend = NftablesBackend()
    run = backend._executor.submit
    desired_full, desired_plus = desired_firewall(full), desired_firewall(plus_one)
    script = render_nft(desired_full)
    new = [r for r in desired_plus.tables[("ipv4", "filter")].chains["SWAND-FWD"]
           if r.tag not in desired_full.tags()]
    add_script = "".join(f"add rule inet swand forward {rule_text(r)}\n" for r in new)

    def nft_f(text: str) -> float:
        t = time.perf_counter()
        subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
        return time.perf_counter() - t

    def clear() -> None:
        subprocess.run(["nft", "delete", "table", "inet", "swand"], capture_output=True,
                       check=False)

    def swand(desired: DesiredFirewall) -> float:
        return run(backend.apply_sync, desired).result().seconds

    swand(desired_full)  # warm: import and first connection
    for _ in range(args.repeat):
        clear()
        record("5 nftables from empty: swand backend pass", swand(desired_full))
        clear()
        record("5 nftables from empty: nft -f", nft_f(script))
        clear()
        swand(desired_full)
        record("6 nftables one SA added: swand backend pass", swand(desired_plus))
        swand(desired_full)
        record("6 nftables one SA added: nft -f", nft_f(add_script))
        swand(desired_full)
        record("7 nftables unchanged: swand backend pass", swand(desired_full))
        t = time.perf_counter()
        subprocess.run(["nft", "list", "table", "inet", "swand"], capture_output=True,
                       check=True)
        record("7 nftables unchanged: nft list table (read only)", time.perf_counter() - t)
    clear()
    backend._executor.shutdown()


def _naive(run, inputs) -> float:  # type: ignore[no-untyped-def]
    """python-iptables the documented way: a Rule object per rule, one commit."""
    from swand.core.firewall import desired_firewall

    rules = desired_firewall(inputs).tables[("ipv4", "filter")].chains["SWAND-FWD"]

    def go() -> float:
        import iptc

        t = time.perf_counter()
        table = iptc.Table("filter", autocommit=False)
        table.refresh()
        if not table.is_chain("SWAND-FWD"):
            table.create_chain("SWAND-FWD")
        chain = iptc.Chain(table, "SWAND-FWD")
        for r in rules:
            rule = iptc.Rule()
            if r.src:
                rule.src = r.src
            if r.dst:
                rule.dst = r.dst
            m = rule.create_match("policy")
            m.dir = dict(r.matches[0].options)["dir"]
            m.pol = "ipsec"
            rule.create_match("comment").comment = r.tag
            rule.target = rule.create_target("ACCEPT")
            chain.append_rule(rule)
        table.commit()
        table.refresh()
        return time.perf_counter() - t

    return run(go).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sas", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-nftables", dest="nftables", action="store_false",
                        help="skip the nftables backend scenarios")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        _inside(args)
        return 0
    ns = f"swand-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, __file__, "--inside",
             "--sas", str(args.sas), "--repeat", str(args.repeat),
             *([] if args.nftables else ["--no-nftables"])],
            check=False,
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    sys.exit(main())
