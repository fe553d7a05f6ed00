"""swand.toml: defaults, overrides, and an error naming the key for every bad input."""

from __future__ import annotations

import pytest

from swand.config import DEFAULT_VICI_URI, ConfigError, SwandConfig, load_config


def write(tmp_path, text: str):
    p = tmp_path / "swand.toml"
    p.write_text(text)
    return p


def test_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr("swand.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    cfg = load_config(None)
    assert cfg == SwandConfig()
    assert cfg.charon.vici == DEFAULT_VICI_URI
    assert cfg.firewall.mss == 1360 and cfg.swanctl.terminate_removed


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_full_file(tmp_path):
    cfg = load_config(write(tmp_path, """
[charon]
vici = "unix:///run/x.vici"
[swanctl]
dir = "/srv/swanctl"
terminate_removed = false
[firewall]
enabled = false
mode = "interface"
mss = 1400
interval = 2
[keepalive]
conns = ["ovh"]
"""))
    assert cfg.charon.vici == "unix:///run/x.vici"
    assert cfg.swanctl.dir == "/srv/swanctl" and not cfg.swanctl.terminate_removed
    assert not cfg.firewall.enabled and cfg.firewall.mode == "interface"
    assert cfg.firewall.interval == 2.0 and cfg.keepalive.conns == ("ovh",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[charon]\nvicii = 'x'\n", "unknown key 'vicii' in \\[charon\\]"),
        ("[charron]\n", "unknown section \\[charron\\]"),
        ("[firewall]\nmss = 100\n", "mss must be 0"),
        ("[firewall]\nmss = '1360'\n", "mss must be an integer"),
        ("[firewall]\nbackend = 'ipfw'\n", "backend must be one of"),
        ("[firewall]\nenabled = 1\n", "enabled must be true or false"),
        ("[keepalive]\nconns = 'ovh'\n", "conns must be a list"),
        ("[firewall]\ninterval = 0\n", "interval must be a positive number"),
        ("[charon\n", "swand.toml"),
        ("charon = 3\n", "\\[charon\\] must be a table"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(p)
    assert str(p) in str(err.value)


def test_not_utf8(tmp_path):
    p = tmp_path / "swand.toml"
    p.write_bytes(b"[charon]\nvici = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_overrides():
    cfg = SwandConfig().with_overrides(vici="unix:///x", swanctl_dir="/d", firewall_enabled=False)
    assert (cfg.charon.vici, cfg.swanctl.dir, cfg.firewall.enabled) == ("unix:///x", "/d", False)
