"""`swand import`: the ipsec.conf / ipsec.secrets parsers, the translation and the
command's all-or-nothing output, with the bad inputs the issue names."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from swand.cli import main
from swand.core.importer import render_swanctl, translate
from swand.core.ipsecconf import (
    ImportErrors,
    ImportSyntaxError,
    parse_ipsec_conf,
    parse_ipsec_secrets,
)
from swand.core.settings import parse_text
from swand.lab.configs import reference_ipsec_files

REFERENCE, REFERENCE_SECRETS = reference_ipsec_files("gateway")
T520, T520_SECRETS = reference_ipsec_files("t520")


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """An /etc with the reference ipsec.conf, ipsec.secrets and ipsec.d."""
    write(tmp_path, "ipsec.conf", REFERENCE)
    write(tmp_path, "ipsec.secrets", REFERENCE_SECRETS)
    write(tmp_path, "ipsec.d/certs/gateway.pem", "CERT")
    write(tmp_path, "ipsec.d/private/gateway.pem", "KEY")
    write(tmp_path, "ipsec.d/cacerts/ca.pem", "CA")
    return tmp_path


def translated(folder: Path, text: str) -> tuple[Any, Any]:
    """(ImportResult, the swanctl.conf tree it renders to) for an ipsec.conf text."""
    conf = write(folder, "ipsec.conf", text)
    result = translate(parse_ipsec_conf(str(conf)), [], str(folder))
    return result, parse_text(render_swanctl(result.tree))


def run_import(etc: Path, out: Path | None, *extra: str) -> int:
    argv = ["import", "--ipsec-conf", str(etc / "ipsec.conf")]
    if out is not None:
        argv += ["--out", str(out)]
    return main([*argv, *extra])


# --- the parser -----------------------------------------------------------------------


def test_parser_resolves_also_and_default_with_origins(tmp_path: Path) -> None:
    conf = write(tmp_path, "ipsec.conf", """\
conn %default
\tikelifetime=60m
\tkeyexchange=ikev2
conn base
\tleft=192.0.2.1
\tleftsubnet=10.1.0.0/16
conn a
\talso=base
\tleftsubnet=
\tauto=add
""")
    parsed = parse_ipsec_conf(str(conf))
    ((conn, eff),) = list(parsed.loaded(parsed.conns))
    assert conn.name == "a"
    assert eff["left"].value == "192.0.2.1" and str(eff["left"].origin).endswith(":5")
    assert "leftsubnet" not in eff  # `key=` unsets an inherited value
    assert eff["ikelifetime"].value == "60m"  # %default reaches through also=
    assert "auto" not in parsed.effective(parsed.conns["base"])  # default ignore


def test_parser_values_quotes_comments_and_include(tmp_path: Path) -> None:
    write(tmp_path, "conf.d/b.conf", 'conn b\n\tright="C=CH, O=x  y" # comment\n\tauto=add\n')
    conf = write(tmp_path, "ipsec.conf",
                 "version 2\nconn a\n\tleftsubnet=10.0.0.0/8, 10.1.0.0/16\n\tauto=add\n"
                 "include conf.d/*.conf\n")
    parsed = parse_ipsec_conf(str(conf))
    a = parsed.effective(parsed.conns["a"])
    assert a["leftsubnet"].value == "10.0.0.0/8, 10.1.0.0/16"
    b = parsed.effective(parsed.conns["b"])
    assert b["right"].value == "C=CH, O=x  y"
    assert str(b["right"].origin) == f"{tmp_path}/conf.d/b.conf:2"


@pytest.mark.parametrize("text, line, words", [
    ("conn a\n\tleftfoo=1\n", 2, "unknown keyword 'leftfoo'"),
    ("conn a\n\tuniqueids=yes\n", 2, "does not belong"),
    ("conn a\n\talso=a\n\tauto=add\n", 2, "makes a loop"),
    ("conn a\n\talso=b\n\tauto=add\nconn b\n\talso=a\n", 5, "makes a loop"),
    ("conn a\n\talso=missing\n", 2, "no conn 'missing'"),
    ("conn a\nleft=1.2.3.4\n", 2, "syntax error"),
    ("conn a\n\tleft\n", 2, "missing value"),
    ('conn a\n\tleftid="unterminated\n', 2, "unterminated"),
    ("conn a\n\tinclude missing.conf\n", 2, "no such file"),
    ("conn a\n\tleftid=a=b\n", 2, "syntax error"),
])
def test_parser_errors_name_file_and_line(tmp_path: Path, text: str, line: int,
                                          words: str) -> None:
    conf = write(tmp_path, "ipsec.conf", text)
    with pytest.raises(ImportSyntaxError) as err:
        parse_ipsec_conf(str(conf))
    problems = err.value.problems if isinstance(err.value, ImportErrors) else [err.value]
    assert any(str(p.origin) == f"{conf}:{line}" and words in p.message for p in problems), \
        [str(p) for p in problems]


def test_parser_non_utf8_names_the_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "ipsec.conf", b"conn a\n\tleftid=caf\xe9\n")
    with pytest.raises(ImportSyntaxError) as err:
        parse_ipsec_conf(str(conf))
    assert str(err.value).startswith(f"{conf}:2: bytes that are not UTF-8")


def test_secrets_parser_kinds_selectors_and_no_secret_in_repr(tmp_path: Path) -> None:
    write(tmp_path, "more.secrets", 'carol : EAP "eap-secret"\n')
    path = write(tmp_path, "ipsec.secrets", """\
# comment
: RSA moonKey.pem
: ECDSA enc.pem "pass phrase"
: RSA ask.pem %prompt
@moon @sun : PSK 0sv+NkxY9LLZvwj4qCC2o/gGrWDF2d21jL
fec0::1 : PSK "v6-secret"
dave : XAUTH 'x secret'
: PKCS12 bundle.p12 "p12pass"
: PIN %smartcard1@opensc:45 1234
include more.secrets
""")
    entries, files = parse_ipsec_secrets(str(path))
    kinds = [(e.kind, e.selectors) for e in entries]
    assert kinds == [("RSA", ()), ("ECDSA", ()), ("RSA", ()), ("PSK", ("@moon", "@sun")),
                     ("PSK", ("fec0::1",)), ("XAUTH", ("dave",)), ("PKCS12", ()),
                     ("PIN", ()), ("EAP", ("carol",))]
    assert entries[1].secret == "pass phrase" and entries[2].prompt
    assert entries[5].secret == "x secret"
    assert str(entries[8].origin) == f"{tmp_path}/more.secrets:1"
    assert len(files) == 2
    text = repr(entries)
    for secret in ("pass phrase", "v6-secret", "x secret", "eap-secret", "p12pass", "1234"):
        assert secret not in text


def test_quoted_hex_looking_secret_stays_literal(tmp_path: Path) -> None:
    """ipsec.secrets takes "0x41" literally, swanctl would read it as hex."""
    path = write(tmp_path, "ipsec.secrets", ': PSK "0x41"\n: PSK 0x41\n')
    entries, _ = parse_ipsec_secrets(str(path))
    assert [e.secret for e in entries] == ["0sMHg0MQ==", "0x41"]


def test_secrets_parser_error_names_line_not_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "ipsec.secrets", ': PSK "top-secret\n')
    with pytest.raises(ImportSyntaxError) as err:
        parse_ipsec_secrets(str(path))
    assert str(err.value).startswith(f"{path}:1:") and "top-secret" not in str(err.value)


# --- the translation ------------------------------------------------------------------


def test_reference_translation_is_valid_swanctl_and_says_where(etc: Path) -> None:
    conf = parse_ipsec_conf(str(etc / "ipsec.conf"))
    entries, _ = parse_ipsec_secrets(str(etc / "ipsec.secrets"))
    result = translate(conf, entries, str(etc / "ipsec.d"), {"cacerts": ["ca.pem"]})
    text = render_swanctl(result.tree)
    tree = parse_text(text)
    rw = tree.section("connections.roadwarriors")
    assert rw is not None
    assert rw.get("version") == "2" and rw.get("unique") == "replace"
    assert rw.get("proposals") == "aes256-sha384-prfsha384-ecp384"
    assert rw.get("rekey_time") == "0" and rw.get("pools") == "roadwarriors"
    assert rw.get("children.roadwarriors.dpd_action") == "clear"
    assert tree.get("connections.t520.remote.id") == "C=CH, O=swand lab, CN=t520"
    assert tree.get("pools.t520.addrs") == "10.8.0.1/32"
    assert tree.get("pools.roadwarriors.dns") == "1.1.1.1, 1.0.0.1"
    assert f"version = 2  # {etc}/ipsec.conf:" in text
    assert result.toml == {"firewall": {"enabled": True, "forward_rules": True}}
    assert not result.needs_person, [str(r) for r in result.report if r.level != "mapped"]
    assert {(c.folder, c.name, c.key) for c in result.copies} == {
        ("x509", "gateway.pem", False), ("private", "gateway.pem", True),
        ("x509ca", "ca.pem", False)}


def test_t520_translation_keeps_the_tunnel_up(tmp_path: Path) -> None:
    result, tree = translated(tmp_path, T520)
    home = tree.section("connections.home")
    assert home is not None
    assert home.get("vips") == "0.0.0.0" and home.get("remote_addrs") == "vpn.example.org"
    assert home.get("keyingtries") == "0" and home.get("mobike") == "yes"
    assert home.get("children.home.start_action") == "start"
    assert home.get("children.home.dpd_action") == "restart"
    assert home.get("children.home.close_action") == "start"
    assert home.get("children.home.remote_ts") == "10.8.0.0/24"
    assert home.get("local.id") == "C=CH, O=swand lab, CN=t520"
    assert result.toml == {}
    assert not result.needs_person, [str(r) for r in result.report if r.level == "todo"]


def test_stroke_defaults_are_written_out(tmp_path: Path) -> None:
    """ipsec.conf reauthenticates with its own lifetimes, uses the peer's address as its
    id and appends default proposals without '!': swanctl's defaults differ."""
    result, tree = translated(tmp_path, "conn c\n\tright=192.0.2.7\n\tike=aes128-sha256-"
                              "modp2048\n\tauto=route\n\tdpddelay=10\n")
    c = tree.section("connections.c")
    assert c is not None
    assert c.get("reauth_time") == "10260s" and c.get("rekey_time") == "0"
    assert c.get("children.c.rekey_time") == "3060s"
    assert c.get("children.c.life_time") == "3600s"
    assert c.get("proposals") == "aes128-sha256-modp2048, default"
    assert c.get("remote.id") == "192.0.2.7"
    assert c.get("children.c.start_action") == "trap"
    assert c.get("dpd_delay") is None  # no dpdaction: no DPD, as with stroke
    assert any("dpddelay=10: no effect" in r.message for r in result.report)


def test_key_exchanges_gone_in_60_are_a_todo(tmp_path: Path) -> None:
    result, tree = translated(tmp_path, "conn c\n\tike=aes128-sha256-ntru128!\n"
                              "\tauto=add\n")
    assert tree.get("connections.c.proposals") == "aes128-sha256-ntru128"
    assert any(r.level == "todo" and "ntru128 no longer exist" in r.message
               for r in result.report)


def test_unsupported_setting_is_a_todo_with_its_line(tmp_path: Path) -> None:
    conf = write(tmp_path, "ipsec.conf", "config setup\n\tcharondebug=ike 2\nconn c\n"
                 "\tauto=add\n")
    result = translate(parse_ipsec_conf(str(conf)), [], str(tmp_path))
    todo = [r for r in result.report if r.level == "todo"]
    assert len(todo) == 1 and str(todo[0].origin) == f"{conf}:2"
    assert result.needs_person


def test_secrets_go_to_swanctl_and_never_into_the_report(tmp_path: Path) -> None:
    conf = write(tmp_path, "ipsec.conf", "conn c\n\tauthby=secret\n\tauto=add\n")
    secrets = write(tmp_path, "ipsec.secrets", '@a @b : PSK "psk-secret"\n'
                    'carol : EAP "eap-secret"\n: RSA k.pem "key-pass"\n')
    entries, _ = parse_ipsec_secrets(str(secrets))
    result = translate(parse_ipsec_conf(str(conf)), entries, str(tmp_path))
    report = "\n".join(str(r) for r in result.report)
    for secret in ("psk-secret", "eap-secret", "key-pass"):
        assert secret not in report
    tree = parse_text(render_swanctl(result.tree))
    assert tree.get("secrets.ike-import1.secret") == "psk-secret"
    assert tree.get("secrets.ike-import1.id-2") == "@b"
    assert tree.get("secrets.eap-import1.id") == "carol"
    assert tree.get("secrets.private-import1.file") == "k.pem"
    assert tree.get("connections.c.local.auth") == "psk"


# --- the command: all or nothing ------------------------------------------------------


def test_import_writes_the_folder(etc: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_import(etc, out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "import-report.txt", "private", "swanctl.conf", "swand.toml", "x509", "x509ca"]
    key = out / "private" / "gateway.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() == "KEY"
    assert (out / "x509" / "gateway.pem").read_text() == "CERT"
    assert "[firewall]" in (out / "swand.toml").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.import-")]


def test_check_writes_nothing(etc: Path, tmp_path: Path) -> None:
    assert run_import(etc, tmp_path / "out", "--check") == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("conf, secrets, line, words", [
    ("conn a\n\tleftbogus=1\n\tauto=add\n", None, "ipsec.conf:2", "unknown keyword"),
    ("conn a\n\talso=a\n\tauto=add\n", None, "ipsec.conf:2", "makes a loop"),
    ("include nowhere.conf\n", None, "ipsec.conf:1", "no such file"),
    ("conn a\n\tauto=add\n", ": RSA missing.pem\n", "ipsec.secrets:1", "no such file"),
    (b"# caf\xe9\nconn a\n", None, "ipsec.conf:1", "not UTF-8"),
])
def test_bad_input_is_reported_with_line_and_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], conf: str | bytes,
        secrets: str | None, line: str, words: str) -> None:
    etc = tmp_path / "etc"
    write(etc, "ipsec.conf", conf)
    write(etc, "ipsec.secrets", secrets or "")
    out = tmp_path / "out"
    assert run_import(etc, out) == 1
    printed = capsys.readouterr().out
    assert any(f"{etc}/{line}:" in ln and words in ln and ln.startswith("error")
               for ln in printed.splitlines()), printed
    assert not out.exists()
    assert os.listdir(tmp_path) == ["etc"]


def test_existing_folder_is_not_overwritten(etc: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, "keep", "x")
    assert run_import(etc, out) == 1
    assert os.listdir(out) == ["keep"]


PEER_LEFT = ("conn c\n\tleft=192.0.2.7\n\tleftsubnet=10.1.0.0/16\n\tleftid=@peer\n"
             "\tright=198.51.100.1\n\trightsubnet=10.2.0.0/16\n\trightid=@me\n"
             "\trightfirewall=yes\n\tauthby=secret\n\tauto=add\n")
ME_LEFT = ("conn c\n\tleft=198.51.100.1\n\tleftsubnet=10.2.0.0/16\n\tleftid=@me\n"
           "\tleftfirewall=yes\n\tright=192.0.2.7\n\trightsubnet=10.1.0.0/16\n"
           "\trightid=@peer\n\tauthby=secret\n\tauto=add\n")


def swanctl_for(folder: Path, text: str, local: list[str] | None) -> tuple[Any, str]:
    conf = write(folder, "ipsec.conf", text)
    result = translate(parse_ipsec_conf(str(conf)), [], str(folder), local_addresses=local)
    return result, render_swanctl(result.tree).replace(str(conf), "ipsec.conf")


def test_right_as_this_host_is_swapped_as_stroke_does(tmp_path: Path) -> None:
    """stroke takes right as this host when only right is a local address; swanctl's
    local is always this host: the import swaps the ends (failed before: the peer's
    address became local_addrs)."""
    result, swapped = swanctl_for(tmp_path / "a", PEER_LEFT, ["198.51.100.1", "::1"])
    _, written = swanctl_for(tmp_path / "b", ME_LEFT, ["198.51.100.1"])
    strip = __import__("re").compile(r"\s*#.*")
    assert strip.sub("", swapped) == strip.sub("", written)
    tree = parse_text(render_swanctl(result.tree))
    assert tree.get("connections.c.local_addrs") == "198.51.100.1"
    assert tree.get("connections.c.children.c.local_ts") == "10.2.0.0/16"
    assert result.toml  # rightfirewall is this host's firewall now
    assert any(r.level == "mapped" and "swapped, as stroke does" in r.message and
               str(r.origin).endswith(":5") for r in result.report)


@pytest.mark.parametrize("local", [["192.0.2.7"], ["192.0.2.7", "198.51.100.1"], None, []])
def test_left_stays_this_host(tmp_path: Path, local: list[str] | None) -> None:
    """No swap when left is local (also when both are), or when the addresses are
    unknown (a note asks for --local-address) or neither is local (a note says so)."""
    result, _ = swanctl_for(tmp_path, PEER_LEFT, local)
    tree = parse_text(render_swanctl(result.tree))
    assert tree.get("connections.c.local_addrs") == "192.0.2.7"
    notes = [r.message for r in result.report if r.level == "note"]
    if local is None:
        assert any("give --local-address" in n for n in notes)
    elif local == []:
        assert any("neither left nor right is an address of this host" in n for n in notes)


def test_defaultroute_left_is_this_host(tmp_path: Path) -> None:
    result, _ = swanctl_for(tmp_path, T520.replace("right=vpn.example.org",
                                                   "right=198.51.100.1"), ["198.51.100.1"])
    tree = parse_text(render_swanctl(result.tree))
    assert tree.get("connections.home.remote_addrs") == "198.51.100.1"


def test_local_address_option(etc: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    write(etc, "ipsec.conf", PEER_LEFT)
    write(etc, "ipsec.secrets", "")
    assert run_import(etc, None, "--check", "--local-address", "198.51.100.1") == 0
    assert "swapped, as stroke does" in capsys.readouterr().out
    assert run_import(etc, None, "--check", "--local-address", "none") == 0
    assert "give --local-address" in capsys.readouterr().out
    assert run_import(etc, None, "--check", "--local-address", "gw.example") == 2
