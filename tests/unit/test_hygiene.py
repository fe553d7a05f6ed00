"""Rules for tests/unit itself: it needs no root and no real time.

Lab tests (root, namespaces, charon) belong in tests/integration; a unit test that waits
moves a `swand.clock.FakeClock` or waits on a condition, never sleeps more than 10 ms."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

UNIT = Path(__file__).resolve().parent
MAX_SLEEP = 0.01


@functools.cache
def _unit_test_trees() -> tuple[tuple[str, tuple[ast.AST, ...]], ...]:
    """(file name, every node) of each module in tests/unit, parsed once."""
    return tuple((path.name, tuple(ast.walk(ast.parse(path.read_text(), str(path)))))
                 for path in sorted(UNIT.glob("*.py")))


def _attribute_path(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_no_unit_test_sleeps_longer_than_10_ms() -> None:
    found = []
    for name, nodes in _unit_test_trees():
        for node in nodes:
            if not (isinstance(node, ast.Call) and node.args
                    and _attribute_path(node.func) in ("asyncio.sleep", "time.sleep")):
                continue
            arg = node.args[0]
            if not isinstance(arg, ast.Constant) or not isinstance(arg.value, int | float):
                found.append(f"{name}:{node.lineno}: sleep of a computed time")
            elif arg.value > MAX_SLEEP:
                found.append(f"{name}:{node.lineno}: sleep({arg.value})")
    assert not found, "use a FakeClock or wait on a condition: " + "; ".join(found)


def test_no_lab_test_in_tests_unit() -> None:
    found = [f"{name}:{getattr(node, 'lineno', 0)}"
             for name, nodes in _unit_test_trees() for node in nodes
             if isinstance(node, ast.Attribute) and node.attr == "lab"
             and _attribute_path(node) == "pytest.mark.lab"]
    assert not found, "lab tests belong in tests/integration: " + ", ".join(found)
