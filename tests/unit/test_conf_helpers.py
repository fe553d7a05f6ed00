"""The swanctl.conf helpers checks and profiles share: one meaning, swanctl's own."""

from __future__ import annotations

import pytest

from swand.core import profiles, swanctl
from swand.core.checks import base


@pytest.mark.parametrize(("value", "tokens"), [
    ("a, b", ["a", "b"]),
    # a space inside a token stays: swanctl sends one pool named "a b", not two
    # (checks split on spaces before: it judged pools charon never sees)
    ("a b, c", ["a b", "c"]),
    # a quoted token keeps its comma (profiles split inside the quotes before)
    ("'x,y', z", ["x,y", "z"]),
    (" , ,", []),
])
def test_list_splitters_agree_with_swanctl(value: str, tokens: list[str]) -> None:
    assert swanctl.split_list(value) == tokens
    assert base._list(value) == tokens
    assert list(profiles.split_list(value)) == tokens
