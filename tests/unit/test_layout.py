"""The test tree's own rules that pytest does not enforce."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename() -> None:
    """tests/ has no __init__.py, so pytest imports modules by basename: two files of the
    same name in unit/ and integration/ make the whole collection fail ('import file
    mismatch'), which a run of one folder alone never shows."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(TESTS)} ~ {path.relative_to(TESTS)}")
        seen.setdefault(path.name, path)
    assert not clashes, clashes
