"""swand.core.settings: strongSwan's settings syntax, checked case by case and, where
libstrongswan is installed, against libstrongswan's own parser (the conftest oracle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from swand.core.settings import (
    MAX_DEPTH,
    MAX_INCLUDE_DEPTH,
    MAX_VALUE_BYTES,
    Origin,
    Section,
    SettingsError,
    parse_file,
    parse_text,
)


def flat(section: Section, prefix: str = "") -> list[tuple[str, str]]:
    """All settings as (dotted path, value), depth first in order."""
    out = [(f"{prefix}{key}", value) for key, value in section.items()]
    for child in section:
        out += flat(child, f"{prefix}{child.name}.")
    return out


# (id, text, expected flat settings). Every case is also run through libstrongswan.
VALID: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("empty", "", []),
    ("only-comments", "# a\n   # b {\n\n", []),
    ("basic", "a = b\ns {\n  k = v\n}\n", [("a", "b"), ("s.k", "v")]),
    ("words-joined-by-one-space", "a =   x    y\t z  \n", [("a", "x y z")]),
    ("hash-ends-value", "a = x#y\nb = 1 # c\n", [("a", "x"), ("b", "1")]),
    ("brace-ends-value", "s { a = 1 }\n", [("s.a", "1")]),
    ("equals-and-open-brace-in-value", "a = b=c {d\n", [("a", "b=c {d")]),
    ("colon-dot-comma-in-value", "a = 1.2.3.4, x:y\n", [("a", "1.2.3.4, x:y")]),
    ("quoted-keeps-spaces", 'a = "  x  y "\n', [("a", "  x  y ")]),
    ("quoted-mixed-with-words", 'a = x "  y  " z\n', [("a", "x   y   z")]),
    ("quoted-adjacent", 'a = x"y"\n', [("a", "x y")]),
    ("quoted-hash-and-brace", 'a = "#}{="\n', [("a", "#}{=")]),
    (
        "escapes",
        'a = "t\\tn\\nr\\rq\\"b\\\\x\\q"\n',
        [("a", 't\tn\nr\rq"b\\xq')],
    ),
    ("multi-line-quoted", 'a = "one\ntwo"\nb = c\n', [("a", "one\ntwo"), ("b", "c")]),
    ("backslash-newline-joins", 'a = "one\\\ntwo"\n', [("a", "onetwo")]),
    ("empty-quoted", 'a = ""\n', [("a", "")]),
    ("empty-value-unsets", "a =\nb = 1\n", [("b", "1")]),
    ("empty-value-unsets-earlier", "a = 1\na =\n", []),
    ("empty-value-then-set", "a =\na = 2\n", [("a", "2")]),
    ("later-key-replaces-keeps-position", "a = 1\nb = 2\na = 3\n", [("a", "3"), ("b", "2")]),
    (
        "duplicate-sections-merge",
        "s {\n a = 1\n}\nt {\n x = y\n}\ns {\n b = 2\n a = 3\n}\n",
        [("s.a", "3"), ("s.b", "2"), ("t.x", "y")],
    ),
    ("brace-on-next-line", "s\n{\n  a = 1\n}\n", [("s.a", "1")]),
    ("brace-lines-later", "s\n\n# c\n\n{ a = 1\n}\n", [("s.a", "1")]),
    ("key-and-section-same-name", "a = 1\na {\n b = 2\n}\n", [("a", "1"), ("a.b", "2")]),
    ("include-as-key", "include = x\n", [("include", "x")]),
    ("crlf", 's {\r\n  a = 1\r\n  b = "x\r\ny"\r\n}\r\n', [("s.a", "1"), ("s.b", "x\ny")]),
    ("utf8", "señor {\n  ключ = значение ✓\n}\n", [("señor.ключ", "значение ✓")]),
    ("odd-name-chars", "a/b-c_d@e!%$ = 1\n", [("a/b-c_d@e!%$", "1")]),
    ("value-at-eof-without-newline", "a = 1", [("a", "1")]),
    ("sections-empty", "a {\n}\nb { }\n", []),
    ("nested", "a { b { c { d = 1 } } }\n", [("a.b.c.d", "1")]),
    (
        "reference-basic",
        "base {\n x = 1\n y = 2\n}\nconn : base {\n y = 3\n z = 4\n}\n",
        [("base.x", "1"), ("base.y", "2"), ("conn.y", "3"), ("conn.z", "4"), ("conn.x", "1")],
    ),
    (
        "reference-dotted-and-multiple",
        "t {\n a { k = a }\n b { k = b\n m = b }\n}\nc : t.a, t.b {\n}\n",
        [("t.a.k", "a"), ("t.b.k", "b"), ("t.b.m", "b"), ("c.k", "a"), ("c.m", "b")],
    ),
    (
        "reference-subsections-inherited",
        "connections {\n"
        "  base {\n    version = 2\n    local { auth = pubkey }\n"
        "    children { net { mode = tunnel } }\n  }\n"
        "  rw : connections.base {\n    children { net { esp = aes } other { } }\n  }\n"
        "}\n",
        [
            ("connections.base.version", "2"),
            ("connections.base.local.auth", "pubkey"),
            ("connections.base.children.net.mode", "tunnel"),
            ("connections.rw.version", "2"),
            ("connections.rw.children.net.esp", "aes"),
            ("connections.rw.children.net.mode", "tunnel"),
            ("connections.rw.local.auth", "pubkey"),
        ],
    ),
    (
        "reference-chain",
        "a { x = 1 }\nb : a { y = 2 }\nc : b { z = 3 }\n",
        [
            ("a.x", "1"),
            ("b.y", "2"),
            ("b.x", "1"),
            ("c.z", "3"),
            ("c.y", "2"),
            ("c.x", "1"),
        ],
    ),
    (
        "reference-unset-hides",
        "a { x = 1\n y = 2 }\nb : a { x = }\n",
        [("a.x", "1"), ("a.y", "2"), ("b.y", "2")],
    ),
    ("reference-missing", "b : nothere { y = 2 }\n", [("b.y", "2")]),
    (
        "reference-cycle",
        "a : b { x = 1 }\nb : a { y = 2 }\n",
        [("a.x", "1"), ("a.y", "2"), ("b.y", "2"), ("b.x", "1")],
    ),
    (
        "reference-merged-declarations",
        "t1 { a = 1 }\nt2 { b = 2 }\ns : t1 { }\ns : t2 { c = 3 }\n",
        [("t1.a", "1"), ("t2.b", "2"), ("s.c", "3"), ("s.a", "1"), ("s.b", "2")],
    ),
    (
        "reference-newlines-and-comments",
        "t { a = 1 }\ns : # why\n  t\n {\n}\n",
        [("t.a", "1"), ("s.a", "1")],
    ),
    ("reference-to-itself", "a : a {\n x = 1\n}\n", [("a.x", "1")]),
    (
        "reference-to-sibling-subsection",
        "t {\n s { k = 1 }\n}\nc : t {\n d : t.s { }\n}\n",
        [("t.s.k", "1"), ("c.d.k", "1"), ("c.s.k", "1")],
    ),
    ("comment-after-blank-ends-at-cr", "a = 1\n  # c\rb = 2\n", [("a", "1"), ("b", "2")]),
    ("comment-at-hash-runs-to-newline", "a = 1\n# c\rb = 2\n", [("a", "1")]),
    ("comment-after-blanks-with-cr", "a = 1\n \r # c\rb = 2\n", [("a", "1")]),
    ("comment-last-line-ends-at-cr", "a = 1 # c\rb = 2", [("a", "1"), ("b", "2")]),
    ("include-no-pattern", "include \na = 1\n", [("a", "1")]),
]

# (id, text, line of the error, words the message contains)
INVALID: list[tuple[str, str, int, str]] = [
    ("unclosed-section", "a = 1\ns {\n  b = 2\n", 2, "not closed"),
    ("unclosed-inner", "s {\n t {\n }\n", 1, "not closed"),
    ("extra-closing-brace", "s {\n}\n}\n", 3, "unexpected '}'"),
    ("value-then-brace-at-top", "a = x }\n", 1, "unexpected '}'"),
    ("missing-equals", "a b\n", 1, "expected '=' or '{'"),
    ("name-at-eof", "\n\nabc", 3, "expected '=' or '{'"),
    ("dotted-key", "a.b = c\n", 1, "'.'"),
    ("comma-at-top", "a, b = c\n", 1, "','"),
    ("equals-without-key", "\n= b\n", 2, "unexpected '='"),
    ("quoted-key", '"a" = b\n', 1, "quoted string"),
    ("quoted-section", 's {\n  "x" { }\n}\n', 2, "quoted string"),
    ("unterminated-string", 'a = 1\nb = "abc\n\ndef\n', 2, "unterminated"),
    ("backslash-at-eof", 'a = "abc\\', 1, "unterminated"),
    ("reference-without-name", "a : { }\n", 1, "referenced section"),
    ("reference-trailing-comma", "a : b, { }\n", 1, "referenced section"),
    ("reference-then-equals", "a : b = c\n", 1, "expected '{'"),
    ("reference-dot-alone", "a : b. { }\n", 1, "expected '{'"),
    ("nul-byte", "a = 1\nb = x\0y\n", 2, "NUL"),
    ("open-brace-alone", "{\n}\n", 1, "unexpected '{'"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid(text: str, expected: list[tuple[str, str]]) -> None:
    assert flat(parse_text(text)) == expected


@pytest.mark.parametrize(
    ("text", "line", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(text: str, line: int, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_text(text, name="f.conf")
    assert caught.value.origin == Origin("f.conf", line), str(caught.value)
    assert words in caught.value.message
    assert str(caught.value).startswith(f"f.conf:{line}: ")


@pytest.mark.parametrize(
    "text",
    [c[1] for c in VALID + INVALID if "\0" not in c[1]],
    ids=[c[0] for c in VALID + INVALID if "\0" not in c[1]],
)
def test_same_as_libstrongswan(
    text: str, tmp_path: Path, strongswan_settings: Any, section_as_tree: Any
) -> None:
    path = tmp_path / "s.conf"
    path.write_text(text, encoding="utf-8")
    theirs = strongswan_settings.parse(path)
    try:
        ours: dict[str, Any] | None = section_as_tree(parse_file(path))
    except SettingsError:
        ours = None
    if theirs["ok"]:
        assert ours == theirs["tree"]
    else:
        assert ours is None


def test_origins_and_lines_after_multiline_string() -> None:
    root = parse_text('a = "x\ny\nz"\ns {\n  b = 1\n}\n', name="o.conf")
    assert root.setting("a").origin == Origin("o.conf", 1)  # type: ignore[union-attr]
    assert root.section("s").origin == Origin("o.conf", 4)  # type: ignore[union-attr]
    assert root.origin_of("s.b") == Origin("o.conf", 5)


def test_replaced_value_has_origin_of_the_last_writer() -> None:
    root = parse_text("a = 1\nb = 2\na = 3\n", name="o.conf")
    assert root.origin_of("a") == Origin("o.conf", 3)


def test_inherited_value_has_origin_in_the_template() -> None:
    root = parse_text("t {\n  x = 1\n}\ns : t {\n}\n", name="o.conf")
    assert root.origin_of("s.x") == Origin("o.conf", 2)
    assert root.section("s").references == ("t",)  # type: ignore[union-attr]


def test_accessors() -> None:
    root = parse_text("connections {\n rw { version = 2 }\n gw { }\n}\n")
    conns = root.section("connections")
    assert conns is not None and conns.path == "connections"
    assert [c.name for c in conns] == ["rw", "gw"]
    assert len(conns) == 2 and "rw" in conns and "nope" not in conns
    assert root.get("connections.rw.version") == "2"
    assert root.get("connections.rw.nope", "d") == "d"
    assert root.get("connections.nope.version") is None
    assert root.section("connections.rw").path == "connections.rw"  # type: ignore[union-attr]
    assert root.section("") is None and root.section("a..b") is None
    rw = root.section("connections.rw")
    assert rw is not None and rw.keys() == ["version"] and rw.items() == [("version", "2")]


def test_non_utf8_bytes_are_kept() -> None:
    root = parse_text(b"# caf\xe9\na = x\xff\xfey\n", name="b.conf")
    setting = root.setting("a")
    assert setting is not None
    assert setting.value_bytes == b"x\xff\xfey"


def test_huge_values_rejected() -> None:
    ok = "a = " + "x" * MAX_VALUE_BYTES + "\n"
    assert len(parse_text(ok).get("a") or "") == MAX_VALUE_BYTES
    for text in ("a = " + "x" * (MAX_VALUE_BYTES + 1), 'a = "' + "y" * (MAX_VALUE_BYTES + 1) + '"'):
        with pytest.raises(SettingsError, match="longer than"):
            parse_text("\n" + text, name="h.conf")


def test_nesting_limit() -> None:
    deep_ok = "a {" * MAX_DEPTH + "x = 1" + "}" * MAX_DEPTH
    assert parse_text(deep_ok).get(".".join(["a"] * MAX_DEPTH + ["x"])) == "1"
    too_deep = "a {\n" * (MAX_DEPTH + 1) + "}\n" * (MAX_DEPTH + 1)
    with pytest.raises(SettingsError, match="deeper") as caught:
        parse_text(too_deep)
    assert caught.value.origin.line == MAX_DEPTH + 1


def test_reference_to_an_ancestor_is_an_error_not_a_hang() -> None:
    # libstrongswan resolves lazily, so a.b.b.b... exists to any depth; no finite tree
    # can show that, so it is refused, naming the reference
    with pytest.raises(SettingsError, match="without end") as caught:
        parse_text("a {\n  x = 1\n  b : a {\n  }\n}\n", name="r.conf")
    assert caught.value.origin == Origin("r.conf", 3)


def test_reference_explosion_is_bounded() -> None:
    lines = ["t0 { k = v }"]
    for level in range(1, 40):
        lines.append(f"t{level} {{ x : t{level - 1} {{ }} y : t{level - 1} {{ }} }}")
    with pytest.raises(SettingsError):
        parse_text("\n".join(lines))


def test_missing_reference_is_a_warning() -> None:
    root = parse_text("a : nothere {\n}\n", name="w.conf")
    assert root.warnings == ["w.conf:1: referenced section 'nothere' does not exist"]


# --------------------------------------------------------------------------- includes


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_include_glob_sorted_relative_to_including_file(tmp_path: Path) -> None:
    main = write(tmp_path / "swanctl.conf", "connections {\n  include conf.d/*.conf\n}\nz = 1\n")
    write(tmp_path / "conf.d" / "b.conf", "b { version = 2 }\n")
    write(tmp_path / "conf.d" / "a.conf", "a {\n  include ../sub/x.conf\n}\n")
    write(tmp_path / "conf.d" / ".hidden.conf", "hidden { }\n")
    write(tmp_path / "conf.d" / "c.txt", "c { }\n")
    write(tmp_path / "sub" / "x.conf", "\n\nkey = from-x\n")
    root = parse_file(main)
    assert [c.name for c in root.section("connections")] == ["a", "b"]  # type: ignore[union-attr]
    assert root.get("connections.a.key") == "from-x"
    assert root.origin_of("connections.a.key") == Origin(
        str(tmp_path / "conf.d" / "../sub/x.conf"), 3
    )
    assert root.origin_of("z") == Origin(str(main), 4)
    assert root.warnings == []


def test_include_quoted_and_escaped_names(tmp_path: Path) -> None:
    write(tmp_path / "with space.conf", "a = 1\n")
    write(tmp_path / "other space.conf", "b = 2\n")
    main = write(tmp_path / "m.conf", 'include "with space.conf"\ninclude other\\ space.conf\n')
    assert flat(parse_file(main)) == [("a", "1"), ("b", "2")]


def test_include_splices_tokens_like_strongswan(tmp_path: Path) -> None:
    # a section opened in one file may be closed in an included one (flex buffer stack)
    write(tmp_path / "close.conf", "x = 1\n}\n")
    main = write(tmp_path / "m.conf", "s {\ninclude close.conf\ny = 2\n")
    assert flat(parse_file(main)) == [("y", "2"), ("s.x", "1")]


def test_include_missing_is_a_warning(tmp_path: Path) -> None:
    main = write(tmp_path / "m.conf", "include nothere.conf\ninclude none/*.conf\na = 1\n")
    root = parse_file(main)
    assert flat(root) == [("a", "1")]
    assert len(root.warnings) == 2
    assert root.warnings[0].startswith(f"{main}:1: include 'nothere.conf'")
    assert root.warnings[1].startswith(f"{main}:2: include 'none/*.conf'")


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path / "a.conf", "x = 1\ninclude b.conf\n")
    write(tmp_path / "b.conf", "\n\ninclude a.conf\n")
    main = write(tmp_path / "m.conf", "include a.conf\n")
    with pytest.raises(SettingsError, match="include cycle") as caught:
        parse_file(main)
    assert caught.value.origin == Origin(str(tmp_path / "b.conf"), 3)


def test_include_self(tmp_path: Path) -> None:
    main = write(tmp_path / "m.conf", "a = 1\ninclude m.conf\n")
    with pytest.raises(SettingsError, match="include cycle") as caught:
        parse_file(main)
    assert caught.value.origin == Origin(str(main), 2)


def test_include_depth_limit(tmp_path: Path) -> None:
    for n in range(MAX_INCLUDE_DEPTH + 2):
        write(tmp_path / f"f{n}.conf", f"k{n} = {n}\ninclude f{n + 1}.conf\n")
    with pytest.raises(SettingsError, match="nested deeper"):
        parse_file(tmp_path / "f0.conf")


def test_include_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "conf.d" / "dir.conf").mkdir(parents=True)
    main = write(tmp_path / "m.conf", "a = 1\ninclude conf.d/*.conf\n")
    with pytest.raises(SettingsError, match="is a directory") as caught:
        parse_file(main)
    assert caught.value.origin == Origin(str(main), 2)


def test_include_unreadable_is_an_error(tmp_path: Path) -> None:
    # Root reads any file regardless of its mode, so a chmod 000 file proves nothing
    # there; a dangling symlink (exists for glob, fails to open) stands in for it, and
    # the mode trick runs too when the tests do not run as root.
    (tmp_path / "dangling.conf").symlink_to(tmp_path / "gone.conf")
    main = write(tmp_path / "m.conf", "include dangling.conf\n")
    with pytest.raises(SettingsError, match="cannot read") as caught:
        parse_file(main)
    assert caught.value.origin == Origin(str(main), 1)
    if os.geteuid() != 0:
        secret = write(tmp_path / "secret.conf", "a = 1\n")
        secret.chmod(0)
        main2 = write(tmp_path / "m2.conf", "include secret.conf\n")
        with pytest.raises(SettingsError, match="Permission denied"):
            parse_file(main2)


def test_include_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.conf")
    main = write(tmp_path / "m.conf", "include pipe.conf\n")
    with pytest.raises(SettingsError, match="not a regular file"):
        parse_file(main)


def test_top_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read") as caught:
        parse_file(tmp_path / "missing.conf")
    assert str(caught.value).startswith(str(tmp_path / "missing.conf") + ": ")
    with pytest.raises(SettingsError, match="is a directory"):
        parse_file(tmp_path)


def test_parse_text_includes_relative_to_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "inc.conf", "a = 1\n")
    assert parse_text("include inc.conf\n", base_dir=str(tmp_path)).get("a") == "1"


def test_include_same_as_libstrongswan(
    tmp_path: Path, strongswan_settings: Any, section_as_tree: Any
) -> None:
    write(tmp_path / "conf.d" / "2.conf", "connections { b { x = 2 } }\n")
    write(tmp_path / "conf.d" / "1.conf", "connections { a { x = 1 } }\nk = v\n")
    write(tmp_path / "close.conf", "x = 1\n}\n")
    write(tmp_path / "v.conf", "value\n")
    main = write(
        tmp_path / "m.conf",
        "include conf.d/*.conf\ns {\ninclude close.conf\nk = include v.conf\n"
        "include missing.conf\nt { include conf.d/1.conf }\n",
    )
    theirs = strongswan_settings.parse(main)
    assert theirs["ok"]
    assert section_as_tree(parse_file(main)) == theirs["tree"]


# --------------------------------------------------------------------------- corpus


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(corpus.glob("**/swanctl.conf"))


# Files of the corpus that strongSwan itself rejects: none (checked against
# libstrongswan 5.9.8 by test_corpus_same_as_libstrongswan).
CORPUS_REJECTED: dict[str, str] = {}


def test_corpus_parses(corpus: Path) -> None:
    files = corpus_files(corpus)
    assert len(files) >= 400
    failures = []
    for path in files:
        relative = str(path.relative_to(corpus))
        try:
            parse_file(path)
        except SettingsError as err:
            if relative not in CORPUS_REJECTED:
                failures.append(str(err))
    assert failures == []


def test_corpus_same_as_libstrongswan(strongswan_settings: Any, section_as_tree: Any,
                                      corpus: Path) -> None:
    differences = []
    for path in corpus_files(corpus):
        theirs = strongswan_settings.parse(path)
        if not theirs.get("ok"):
            differences.append(f"{path}: libstrongswan rejects it")
            continue
        if section_as_tree(parse_file(path)) != theirs["tree"]:
            differences.append(f"{path}: trees differ")
    assert differences == []


def test_section_without_subsections_is_truthy() -> None:
    root = parse_text("a {\n  k = v\n}\n")
    found = root.section("a")
    assert found is not None and len(found) == 0 and bool(found)


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    inc = write(tmp_path / "conf.d" / "rw.conf", "rw {\n  version = 2\n  local_addrs 1.2.3.4\n}\n")
    main = write(tmp_path / "swanctl.conf", "connections {\n  include conf.d/*.conf\n}\n")
    with pytest.raises(SettingsError) as caught:
        parse_file(main)
    assert caught.value.origin == Origin(str(inc), 3)
    assert "after 'local_addrs'" in caught.value.message


def test_file_too_large(tmp_path: Path) -> None:
    from swand.core.settings import MAX_FILE_BYTES

    big = tmp_path / "big.conf"
    big.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    main = write(tmp_path / "m.conf", "a = 1\ninclude big.conf\n")
    with pytest.raises(SettingsError, match="larger than"):
        parse_file(main)


def test_lone_surrogate_in_text_is_not_a_crash() -> None:
    assert parse_text("a = \ud800\n").setting("a") is not None


def test_names_libstrongswan_cannot_look_up() -> None:
    ok = "c" * 127
    assert (
        parse_text(f"connections {{\n {ok} {{ version = 2 }}\n}}\n").get(
            f"connections.{ok}.version"
        )
        == "2"
    )
    with pytest.raises(SettingsError, match="name longer than 127") as caught:
        parse_text("connections {\n " + "c" * 128 + " { version = 2 }\n}\n", name="n.conf")
    assert caught.value.origin == Origin("n.conf", 2)
    deep = " {\n".join(["s" * 100] * 6) + " { k = v " + "}" * 6 + "\n"
    with pytest.raises(SettingsError, match="path longer than 511"):
        parse_text(deep)


# --- secrets never in a repr or an error -------------------------------------------------

PSK = "Sup3r-s3cret-PSK"


def test_the_repr_of_a_tree_does_not_show_secret_values() -> None:
    """A Section or Setting shown in a traceback, a debugger or a failed assertion must
    not print a PSK, an EAP password, a key's passphrase or a token's PIN."""
    tree = parse_text(f"secrets {{\n ike-1 {{ id = gw\n secret = {PSK} }}\n"
                      f" eap-a {{ Secret1 = {PSK} }}\n token-t {{ handle = 01\n pin = {PSK} }}\n"
                      "}\nconnections { rw { version = 2 } }\n")
    text = repr(tree)
    assert PSK not in text, text
    assert "'gw'" in text and "'2'" in text  # the other values still show
    assert tree.get("secrets.ike-1.secret") == PSK  # the value itself is untouched


def test_a_secret_written_without_equals_is_not_repeated_in_the_error() -> None:
    with pytest.raises(SettingsError) as err:
        parse_text(f"secrets {{\n ike-1 {{\n secret {PSK}\n }}\n}}\n")
    assert PSK not in str(err.value)
    assert str(err.value).startswith("<string>:3: expected '=' or '{' after 'secret'")
    with pytest.raises(SettingsError) as err:  # other keys keep naming what they got
        parse_text("a {\n id gw\n}\n")
    assert "got 'gw'" in str(err.value)
