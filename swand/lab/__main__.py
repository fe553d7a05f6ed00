"""`python -m swand.lab build-trixie | sweep | leftovers`: lab chores for CI and humans.

- build-trixie: build (or reuse) the cached Debian trixie tree for charon 6.0 and print
  its path and the time taken; CI runs it once before the tests.
- sweep: remove labs whose owning process died (namespaces, charons, folders).
- leftovers: list every lab namespace and folder on this machine (exit 1 if any).
"""

from __future__ import annotations

import sys
import time

from swand.lab import trixie
from swand.lab.lab import LAB_ROOT, NETNS_PREFIX, list_netns, sweep_stale
from swand.lab.util import LabError


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "build-trixie":
        t0 = time.monotonic()
        try:
            tree = trixie.trixie_tree()
        except LabError as exc:
            print(f"swand.lab: {exc}", file=sys.stderr)
            return 1
        print(f"{tree} ({time.monotonic() - t0:.1f} s)")
        return 0
    if cmd == "sweep":
        for item in sweep_stale():
            print(f"removed {item}")
        return 0
    if cmd == "leftovers":
        left = [ns for ns in list_netns() if ns.startswith(NETNS_PREFIX)]
        left += [str(p) for p in LAB_ROOT.glob("*")] if LAB_ROOT.is_dir() else []
        for item in left:
            print(item)
        return 1 if left else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
