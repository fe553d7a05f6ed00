"""`swand run`."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("swand run: not implemented yet", file=sys.stderr)
    return 2
