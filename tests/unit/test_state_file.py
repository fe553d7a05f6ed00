"""The daemon's state file ([metrics] state_file) and the PKI files are written without
ever following a link: a random temporary name, O_EXCL|O_NOFOLLOW, 0600, then rename."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from swand.adapters.files import replace_file, write_new
from swand.runtime.metrics import MetricsPoller, MetricsRegistry


def _poller(state: Path) -> MetricsPoller:
    registry = MetricsRegistry()
    registry.record_down("dpd", connection="rw", peer="alice", at=1000.0)
    return MetricsPoller("unix:///nonexistent/charon.vici", registry, state_path=state)


def test_state_write_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    """A link planted at the old fixed temporary name (last-downs.tmp), as anyone could
    in a world-writable folder, must not make root overwrite its target."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    state = shared / "last-downs.json"
    (shared / "last-downs.tmp").symlink_to(victim)
    _poller(state)._write_state()
    assert victim.read_text() == "precious\n"
    assert not state.is_symlink()
    assert json.loads(state.read_text())["rw"]["reason"] == "dpd"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    leftovers = {p.name for p in shared.iterdir()} - {"last-downs.json", "last-downs.tmp"}
    assert leftovers == set()


def test_state_write_replaces_a_link_at_the_state_path_itself(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "last-downs.json"
    state.symlink_to(victim)
    _poller(state)._write_state()
    assert victim.read_text() == "precious\n"
    assert not state.is_symlink() and "rw" in json.loads(state.read_text())


def test_write_new_refuses_a_link_even_a_dangling_one(tmp_path: Path) -> None:
    link = tmp_path / "key.pem"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        write_new(link, b"secret", 0o600)
    assert not (tmp_path / "nowhere").exists()


def test_replace_file_mode_and_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f"
    old_umask = os.umask(0)
    try:
        replace_file(target, b"one", 0o600)
        replace_file(target, b"two", 0o640)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["f"]
