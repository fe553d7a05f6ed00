"""A charon plugin missing is said in one line (the lab) and by `swand check` against
the real charon (VICI `stats`), with the plugin and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from swand.lab import LabError, configs
from swand.lab.charon import DEFAULT_PLUGINS

pytestmark = pytest.mark.lab


def test_a_plugin_charon_did_not_load_stops_the_lab_in_one_line(versioned_lab: Any) -> None:
    charon = versioned_lab.gateway.charon
    charon.plugins = (*charon.plugins, "eap-peap")  # as if `load` had named it
    with pytest.raises(LabError) as err:
        charon.check_plugins_loaded()
    message = str(err.value)
    assert "\n" not in message
    assert "did not load plugin eap-peap although named in `load`" in message
    assert str(charon.log_path) in message


def test_a_plugin_file_missing_stops_the_lab_before_charon_starts(
        make_lab: Any, charon_version: str) -> None:
    with pytest.raises(LabError, match=r"lacks plugin eap-peap \(no file in .*plugins\): "
                       r"Debian \w+ ships no eap-peap plugin"):
        make_lab(clients=0, charon=charon_version, plugins=[*DEFAULT_PLUGINS, "eap-peap"])


def test_check_names_the_plugins_a_gateway_needs_and_charon_lacks(
        make_lab: Any, charon_version: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's fresh machine (no openssl, no gcm) as a charon that does not load
    them: `swand check` says so per need, in one line each, instead of charon failing
    later on the ECDSA certificate."""
    from swand.cli import main

    # eap-mschapv2 needs openssl's MD4 and DES: it does not load without it
    without = [p for p in DEFAULT_PLUGINS if p not in ("openssl", "gcm", "eap-mschapv2")]
    lab = make_lab(clients=0, charon=charon_version, plugins=without)
    gw = lab.gateway
    sw = Path(gw.swanctl_dir)
    (sw / "swanctl.conf").write_text(configs.gateway_conf())
    code = main(["check", "--swanctl-dir", str(sw), "--vici", gw.vici_uri])
    out = capsys.readouterr().out
    assert code == 1, out
    ecdsa = [line for line in out.splitlines() if "ECDSA keys" in line]
    assert ecdsa and "charon has no openssl plugin loaded" in ecdsa[0], out
    assert ("error: charon has no openssl plugin loaded (or gcm + aes or aesni): AES-GCM "
            "will fail") in out  # the lab's esp_proposals are aes256gcm16-ecp384
    assert "charon does not load it: add openssl to charon's `load`" in out
    # with every plugin loaded the same configuration has no plugin finding
    full = make_lab(clients=0, charon=charon_version)
    (Path(full.gateway.swanctl_dir) / "swanctl.conf").write_text(configs.gateway_conf())
    main(["check", "--swanctl-dir", str(full.gateway.swanctl_dir), "--vici",
          full.gateway.vici_uri])
    assert "plugin loaded" not in capsys.readouterr().out
