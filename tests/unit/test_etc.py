"""The shipped configuration examples in etc/ stay true: swand.toml documents every option
with its real default and the example files parse (that they load into a real charon is
tests/integration/test_etc_charon.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from swand.config import SwandConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
ETC = ROOT / "etc"
COMMENTED_KEY = re.compile(r"^#\s?(\w+ = .*)$")


def _uncommented_swand_toml() -> str:
    """etc/swand/swand.toml with every `# key = value` line made live."""
    out = []
    for line in (ETC / "swand" / "swand.toml").read_text().splitlines():
        m = COMMENTED_KEY.match(line)
        out.append(m.group(1) if m else line)
    return "\n".join(out) + "\n"


def test_swand_toml_as_shipped_is_all_defaults() -> None:
    cfg = load_config(ETC / "swand" / "swand.toml")
    assert dataclasses.replace(cfg, source="<defaults>") == SwandConfig()


def test_swand_toml_documents_every_option_with_its_default() -> None:
    import tomllib

    data = tomllib.loads(_uncommented_swand_toml())
    defaults = SwandConfig()
    for section in dataclasses.fields(SwandConfig):
        if section.name == "source":
            continue
        assert section.name in data, f"[{section.name}] missing from etc/swand/swand.toml"
        expected = getattr(defaults, section.name)
        for f in dataclasses.fields(expected):
            assert f.name in data[section.name], (
                f"[{section.name}] {f.name} not documented in etc/swand/swand.toml"
            )
    # the documented values are the real defaults
    parsed = parse_config(data, "swand.toml")
    assert dataclasses.replace(parsed, source="<defaults>") == defaults


def test_client_toml() -> None:
    cfg = load_config(ETC / "swand" / "swand-client.toml")
    assert cfg.firewall.enabled is False
    assert cfg.keepalive.conns == ("home",)


@pytest.mark.parametrize("folder", ["swanctl", "swanctl-client"])
def test_swanctl_conf_parses(folder: str) -> None:
    settings = pytest.importorskip("swand.core.settings")
    if not hasattr(settings, "parse_file"):
        pytest.skip("settings parser not there yet")
    tree = settings.parse_file(ETC / folder / "swanctl.conf")
    assert "connections" in tree.sections


def test_conf_d_is_kept() -> None:
    assert (ETC / "swanctl" / "conf.d" / "README").is_file()
    text = (ETC / "swanctl" / "swanctl.conf").read_text()
    assert text.rstrip().endswith("include conf.d/*.conf")
