"""The settings parser as it was before the scanner matched one regular expression per
start condition (swand.core.settings up to commit fb63d1f): a per-character scanner,
checked against libstrongswan by the unit tests, the hypothesis fuzzer and the
conformance corpus at the time. Its scanner, parser and resolver are kept unchanged as
the oracle of the differential properties in test_settings_fuzz.py: the current parser
must give the same trees, origins, warnings and errors on any input. The data model and
the file reader did not change and are imported. Not used by swand itself."""


from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# the data model and the file reader did not change: shared with the current module
from swand.core.settings import (
    NotRegularFileError,
    Origin,
    Section,
    Setting,
    SettingsError,
    is_secret_key,
    read_regular_file,
)

# Limits that turn pathological input into a SettingsError instead of a hang, a
# RecursionError or a tree charon could not take anyway.
MAX_DEPTH = 64  # nested sections, as written and after resolving references
MAX_INCLUDE_DEPTH = 32  # nested includes (strongSwan: until file descriptors run out)
MAX_FILES = 1000  # files opened by includes, altogether
MAX_FILE_BYTES = 8 * 1024 * 1024  # per file; 4x that for all files together
MAX_VALUE_BYTES = 65535  # VICI encodes a value's length in 16 bits
MAX_RESOLVED_SECTIONS = 100_000  # sections in the resolved tree
MAX_NAME_BYTES = 127  # settings.c: char buf[128] per section name in a lookup
MAX_PATH_BYTES = 511  # settings.c: char keybuf[512] per dotted path
MAX_REFERENCE_DEPTH = 100  # chained references (libstrongswan recurses on its stack)
MAX_REFERENCE_WORK = 500_000  # lookup steps while resolving references


def parse_file(path: str | Path) -> Section:
    """Parse a settings file (and what it includes) into a resolved tree."""
    name = os.fspath(path)
    parser = _Parser()
    text = parser.read_file(name, Origin(name, 0))
    return parser.run(name, text, is_file=True)


def parse_text(text: str | bytes, name: str = "<string>", base_dir: str | None = None) -> Section:
    """Parse settings from a string. `name` labels origins; relative `include` patterns
    are taken relative to `base_dir` (the current directory if None, as strongSwan's
    load_string does)."""
    parser = _Parser()
    if isinstance(text, bytes):
        raw = text
    else:
        try:  # str from a surrogateescape decode gets its original bytes back
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # other lone surrogates: as a file would hold them
            raw = text.encode("utf-8", "surrogatepass")
    decoded = parser.decode(raw, name)
    return parser.run(name, decoded, is_file=False, base_dir=base_dir)


# --------------------------------------------------------------------------- lexer

_NAME = r'[^#{}:.,="\r\n\t ]'
_NAME_RUN = re.compile(_NAME + "+")
_REF_NAME = re.compile(f"{_NAME}+(?:\\.{_NAME}+)*")
_VALUE_RUN = re.compile(r'[^#}"\r\n\t ]+')
_STR_RUN = re.compile(r'[^\\\r"]+')
_INC_RUN = re.compile(r'[^"\\#}\r\n\t ]+')
_GLOB_MAGIC = re.compile(r"[*?\[]")
_BLANKS = re.compile(r"[\t\r ]+")


def _comment_end(text: str, pos: int, stop_at_cr: bool) -> int:
    """End of a comment starting at pos: before the next newline (or carriage return)."""
    ends = [i for i in (text.find("\n", pos), text.find("\r", pos) if stop_at_cr else -1) if i >= 0]
    return min(ends) if ends else len(text)


# token kinds
_T_NAME, _T_STRING, _T_NEWLINE, _T_EOF = "NAME", "STRING", "NEWLINE", "EOF"


@dataclass
class _Token:
    kind: str  # one of the _T_* or a punctuation character
    text: str
    origin: Origin


class _Frame:
    """One file being scanned (flex's buffer) plus the glob matches of its pending
    include still to be opened."""

    def __init__(self, name: str, text: str, real: str | None) -> None:
        self.name = name
        self.text = text
        self.pos = 0
        self.line = 1
        self.real = real  # resolved path, for cycle detection; None for parse_text input
        self.pending: list[str] = []
        self.pending_origin: Origin | None = None


class _Lexer:
    """A re-implementation of settings_lexer.l's start conditions (INITIAL, ref, val,
    inc, str) over a stack of files, so includes splice tokens exactly where flex
    splices its buffers."""

    def __init__(self, parser: _Parser, frame: _Frame, base_dir: str | None) -> None:
        self.parser = parser
        self.frames = [frame]
        self.base_dir = base_dir
        self.state = "INITIAL"
        self.files_opened = 1
        self.last_origin = Origin(frame.name, 1)
        self._inc_pattern = ""  # the include pattern being scanned (inc state)
        self._inc_origin = self.last_origin

    # -- helpers
    @staticmethod
    def _origin(frame: _Frame) -> Origin:
        return Origin(frame.name, frame.line)

    def _eof(self) -> bool:
        """At the end of the current buffer: pop it like flex's <<EOF>> rule and open
        the includer's next glob match. Returns True when no input is left at all."""
        frame = self.frames.pop()
        self.last_origin = Origin(frame.name, frame.line)
        if not self.frames:
            return True
        self._open_next(self.frames[-1])
        return False

    def _open_next(self, includer: _Frame) -> None:
        """Push the next file matched by the includer's pending include, if any."""
        if not includer.pending:
            return
        name = includer.pending.pop(0)
        origin = includer.pending_origin or self._origin(includer)
        self._check_cycle(name, origin)
        self.files_opened += 1
        if self.files_opened > MAX_FILES:
            raise SettingsError(origin, f"more than {MAX_FILES} files included")
        text = self.parser.read_file(name, origin)
        self.frames.append(_Frame(name, text, os.path.realpath(name)))

    def _check_cycle(self, name: str, origin: Origin) -> None:
        real = os.path.realpath(name)
        chain = [f.name for f in self.frames if f.real is not None]
        if any(f.real == real for f in self.frames):
            raise SettingsError(origin, "include cycle: " + " -> ".join([*chain, name]))
        if len(self.frames) >= MAX_INCLUDE_DEPTH:
            raise SettingsError(origin, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")

    def _include(self, pattern: str, origin: Origin) -> None:
        frame = self.frames[-1]
        if not pattern:
            self.parser.warn(origin, "include without a pattern, ignored")
            return
        if pattern.startswith("/"):
            full = pattern
        elif frame.real is not None:
            full = os.path.join(os.path.dirname(frame.name), pattern)
        elif self.base_dir is not None:
            full = os.path.join(self.base_dir, pattern)
        else:
            full = pattern
        matches = _glob(full)
        if not matches:
            self.parser.warn(origin, f"include '{pattern}': no files found matching '{full}'")
            return
        frame.pending = matches
        frame.pending_origin = origin
        self._open_next(frame)

    # -- the scanner
    def tokens(self) -> Iterator[_Token]:
        """Yield tokens until the end of all input (then one EOF token)."""
        while True:
            frame = self.frames[-1]
            text, pos = frame.text, frame.pos
            if pos >= len(text):
                if self.state == "val":  # <<EOF>> in val ends the value
                    self.state = "INITIAL"
                    yield _Token(_T_NEWLINE, "", self._origin(frame))
                    continue
                if self.state == "inc":  # <<EOF>> in inc: include what we have
                    self.state = "INITIAL"
                    self._include(self._inc_pattern, self._inc_origin)
                    continue
                if self._eof():
                    yield _Token(_T_EOF, "", self.last_origin)
                    return
                continue
            c = text[pos]
            state = self.state
            if state == "INITIAL":
                yield from self._scan_initial(frame, c)
            elif state == "ref":
                yield from self._scan_ref(frame, c)
            elif state == "val":
                yield from self._scan_val(frame, c)
            else:  # inc
                self._scan_inc(frame, c)

    def _skip_blank(self, frame: _Frame, c: str) -> bool:
        """Whitespace, comments and newlines, eaten in INITIAL and ref. flex picks the
        longest of `[\\t ]*#[^\\r\\n]*`, `[\\t\\r ]+` and `\\n|#.*\\n`, so a comment
        reached from a blank ends at a carriage return, one reached at its `#` runs to
        the newline (or, on a last line without one, to a carriage return)."""
        text = frame.text
        if c in " \t\r":
            m = _BLANKS.match(text, frame.pos)
            assert m is not None
            if "\r" not in m.group() and text.startswith("#", m.end()):
                frame.pos = _comment_end(text, m.end(), stop_at_cr=True)
            else:
                frame.pos = m.end()
            return True
        if c == "\n":
            frame.pos += 1
            frame.line += 1
            return True
        if c == "#":
            newline = text.find("\n", frame.pos)
            if newline >= 0:
                frame.pos = newline
            else:
                frame.pos = _comment_end(text, frame.pos, stop_at_cr=True)
            return True
        return False

    def _scan_initial(self, frame: _Frame, c: str) -> Iterator[_Token]:
        if self._skip_blank(frame, c):
            return
        origin = self._origin(frame)
        if c in "{},.":
            frame.pos += 1
            yield _Token(c, c, origin)
            return
        if c == ":":
            frame.pos += 1
            self.state = "ref"
            yield _Token(c, c, origin)
            return
        if c == "=":
            frame.pos += 1
            self.state = "val"
            yield _Token(c, c, origin)
            return
        if c == '"':
            frame.pos += 1
            yield _Token('"', c, origin)
            return
        if c == "i" and frame.text.startswith("include", frame.pos):
            head = self._include_head(frame.text, frame.pos)
            if head:
                frame.pos += head
                self.state = "inc"
                self._inc_pattern = ""
                self._inc_origin = origin
                return
        m = _NAME_RUN.match(frame.text, frame.pos)
        assert m is not None
        frame.pos = m.end()
        yield _Token(_T_NAME, m.group(), origin)

    @staticmethod
    def _include_head(text: str, pos: int) -> int:
        """Length of the `"include"[\\t ]+` head if flex's rule `"include"[\\t ]+/[^=]`
        matches at pos (longest match, trailing context not consumed), else 0."""
        start = pos + 7
        end = start
        while end < len(text) and text[end] in " \t":
            end += 1
        run = end - start
        if run == 0:
            return 0
        if end < len(text) and text[end] != "=":
            return 7 + run
        if run >= 2:  # the last blank serves as the trailing context
            return 7 + run - 1
        return 0

    def _scan_ref(self, frame: _Frame, c: str) -> Iterator[_Token]:
        if self._skip_blank(frame, c):
            return
        origin = self._origin(frame)
        if c == ",":
            frame.pos += 1
            yield _Token(",", c, origin)
            return
        m = _REF_NAME.match(frame.text, frame.pos)
        if m:
            frame.pos = m.end()
            yield _Token(_T_NAME, m.group(), origin)
            return
        self.state = "INITIAL"  # anything else ends the references

    def _scan_val(self, frame: _Frame, c: str) -> Iterator[_Token]:
        if c in " \t\r":
            frame.pos += 1
            return
        origin = self._origin(frame)
        if c in "#}\n":
            self.state = "INITIAL"
            yield _Token(_T_NEWLINE, "", origin)
            return
        if c == '"':
            frame.pos += 1
            yield _Token(_T_STRING, self._scan_string(frame, origin), origin)
            return
        m = _VALUE_RUN.match(frame.text, frame.pos)
        assert m is not None
        frame.pos = m.end()
        yield _Token(_T_NAME, m.group(), origin)

    def _scan_inc(self, frame: _Frame, c: str) -> None:
        text = frame.text
        if c == "\r":
            frame.pos += 1
            return
        if c in "#}\n \t":
            if c in " \t":
                frame.pos += 1
            self.state = "INITIAL"
            self._include(self._inc_pattern, self._inc_origin)
            return
        if c == '"':
            frame.pos += 1
            self._inc_pattern += self._scan_string(frame, self._origin(frame))
            self.state = "INITIAL"
            self._include(self._inc_pattern, self._inc_origin)
            return
        if c == "\\":
            nxt = text[frame.pos + 1 : frame.pos + 2]
            if nxt and nxt in '"#} ':
                self._inc_pattern += nxt
                frame.pos += 2
            else:
                self._inc_pattern += "\\"
                frame.pos += 1
            return
        m = _INC_RUN.match(text, frame.pos)
        assert m is not None
        frame.pos = m.end()
        self._inc_pattern += m.group()

    def _scan_string(self, frame: _Frame, start: Origin) -> str:
        """The str start condition, after the opening quote; returns the contents."""
        text = frame.text
        out: list[str] = []
        size = 0
        while True:
            pos = frame.pos
            if pos >= len(text):
                raise SettingsError(start, "unterminated quoted string (no closing '\"')")
            c = text[pos]
            if c == '"':
                frame.pos += 1
                return "".join(out)
            if c == "\r":
                frame.pos += 1
                continue
            if c == "\\":
                nxt = text[pos + 1 : pos + 2]
                if not nxt:
                    raise SettingsError(start, "unterminated quoted string (no closing '\"')")
                if nxt == "\n":
                    frame.pos += 2
                    frame.line += 1
                    continue
                if nxt == "\r" and text[pos + 2 : pos + 3] == "\n":
                    frame.pos += 3
                    frame.line += 1
                    continue
                piece = {"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt)
                frame.pos += 2
            else:
                m = _STR_RUN.match(text, pos)
                assert m is not None
                piece = m.group()
                frame.pos = m.end()
                frame.line += piece.count("\n")
            out.append(piece)
            size += len(piece)
            if size > MAX_VALUE_BYTES:
                raise SettingsError(start, f"quoted string longer than {MAX_VALUE_BYTES} bytes")


def _glob(pattern: str) -> list[str]:
    """glob(3) as strongSwan calls it (sorted, backslash escapes, no hidden files)."""
    if "\\" in pattern:
        parts = re.split(r"(\\.?)", pattern)
        pattern = "".join(
            glob.escape(p[1:]) if p.startswith("\\") and len(p) == 2 else p for p in parts
        )
    if not _GLOB_MAGIC.search(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    # glob(3) sorts with strcoll(); charon and swanctl run in the C locale: byte order
    return sorted(glob.glob(pattern), key=lambda path: path.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------- parser


class _RawSection:
    """A section as written (before references are resolved), like section_t."""

    __slots__ = ("kv", "name", "origin", "refs", "sections")

    def __init__(self, name: str, origin: Origin) -> None:
        self.name = name
        self.origin = origin
        self.kv: dict[str, tuple[str | None, Origin]] = {}
        self.sections: dict[str, _RawSection] = {}
        self.refs: list[tuple[str, Origin]] = []

    def add_kv(self, key: str, value: str | None, origin: Origin) -> None:
        self.kv[key] = (value, origin)  # dict keeps the first position on replace

    def add_ref(self, name: str, origin: Origin) -> None:
        if all(n != name for n, _ in self.refs):
            self.refs.append((name, origin))

    def add_section(self, section: _RawSection) -> None:
        existing = self.sections.get(section.name)
        if existing is None:
            self.sections[section.name] = section
        else:
            existing.extend(section)

    def extend(self, other: _RawSection) -> None:
        for sub in other.sections.values():
            self.add_section(sub)
        for key, (value, origin) in other.kv.items():
            self.add_kv(key, value, origin)
        for name, origin in other.refs:
            self.add_ref(name, origin)


def _describe(token: _Token) -> str:
    if token.kind == _T_EOF:
        return "end of file"
    if token.kind == _T_NAME:
        return f"'{token.text}'"
    if token.kind == _T_NEWLINE:
        return "end of line"
    if token.kind == '"':
        return "quoted string (quotes are only allowed in values)"
    if token.kind in ".,":
        return f"'{token.kind}' (names cannot contain '.' or ',')"
    return f"'{token.kind}'"


class _Parser:
    """Recursive descent over settings_parser.y's grammar, building _RawSections."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.total_bytes = 0

    def warn(self, origin: Origin, message: str) -> None:
        self.warnings.append(f"{origin}: {message}")

    def decode(self, raw: bytes, name: str) -> str:
        if len(raw) > MAX_FILE_BYTES:
            raise SettingsError(Origin(name, 0), f"larger than {MAX_FILE_BYTES} bytes")
        self.total_bytes += len(raw)
        if self.total_bytes > 4 * MAX_FILE_BYTES:
            raise SettingsError(Origin(name, 0), "included files are too large altogether")
        nul = raw.find(b"\0")
        if nul >= 0:
            raise SettingsError(Origin(name, raw.count(b"\n", 0, nul) + 1), "NUL byte")
        return raw.decode("utf-8", "surrogateescape")

    def read_file(self, name: str, origin: Origin) -> str:
        """Read and decode one file; every failure is a SettingsError at `origin` (the
        include statement, or the file itself for the top file)."""
        try:
            raw = read_regular_file(name, MAX_FILE_BYTES)
        except IsADirectoryError:
            raise SettingsError(origin, f"'{name}' is a directory") from None
        except NotRegularFileError:
            raise SettingsError(origin, f"'{name}' is not a regular file") from None
        except OSError as err:
            raise SettingsError(origin, f"cannot read '{name}': {err.strerror}") from None
        return self.decode(raw, name)

    def run(self, name: str, text: str, is_file: bool, base_dir: str | None = None) -> Section:
        frame = _Frame(name, text, os.path.realpath(name) if is_file else None)
        self.lexer = _Lexer(self, frame, base_dir)
        self.stream = self.lexer.tokens()
        self.ahead: _Token | None = None
        self.root = _RawSection("", Origin(name, 0))
        self._statements(self.root, depth=0, opener=None)
        return _Resolver(self.root, self.warnings).resolve()

    def _peek(self) -> _Token:
        if self.ahead is None:
            self.ahead = next(self.stream)
        return self.ahead

    def _next(self) -> _Token:
        token = self._peek()
        self.ahead = None
        return token

    def _statements(self, into: _RawSection, depth: int, opener: _Token | None) -> None:
        while True:
            token = self._next()
            if token.kind == _T_NEWLINE:
                continue
            if token.kind == "}":
                if opener is None:
                    raise SettingsError(token.origin, "unexpected '}' (no section to close)")
                return
            if token.kind == _T_EOF:
                if opener is not None:
                    raise SettingsError(
                        opener.origin,
                        f"section '{opener.text}' is not closed: missing '}}' before "
                        f"the end of {token.origin.file}",
                    )
                return
            if token.kind != _T_NAME:
                hint = " (a section needs a name)" if token.kind == "{" else ""
                raise SettingsError(token.origin, f"unexpected {_describe(token)}{hint}")
            self._statement(into, token, depth)

    def _statement(self, into: _RawSection, name: _Token, depth: int) -> None:
        token = self._next()
        if token.kind == "=":
            self._setting(into, name)
            return
        refs: list[_Token] = []
        if token.kind == ":":
            while True:
                ref = self._next()
                if ref.kind != _T_NAME:
                    raise SettingsError(
                        ref.origin,
                        f"expected the name of a referenced section after "
                        f"{'a comma' if refs else chr(39) + ':' + chr(39)}, got {_describe(ref)}",
                    )
                refs.append(ref)
                token = self._next()
                if token.kind != ",":
                    break
            if token.kind != "{":
                raise SettingsError(
                    token.origin,
                    f"expected '{{' after the references of section '{name.text}', "
                    f"got {_describe(token)}",
                )
        elif token.kind != "{":
            where = ""
            if token.origin != name.origin and token.kind != _T_EOF:
                where = (
                    f" (line {name.origin.line})"
                    if token.origin.file == name.origin.file
                    else f" ({name.origin})"
                )
            got = ("a word (not shown: it may be a secret)"
                   if token.kind == _T_NAME and is_secret_key(name.text) else _describe(token))
            raise SettingsError(
                token.origin if token.kind != _T_EOF else name.origin,
                f"expected '=' or '{{' after '{name.text}'{where}, got {got}",
            )
        if depth + 1 > MAX_DEPTH:
            raise SettingsError(name.origin, f"sections nested deeper than {MAX_DEPTH} levels")
        section = _RawSection(name.text, name.origin)
        for ref in refs:
            section.add_ref(ref.text, ref.origin)
        self._statements(section, depth + 1, name)
        into.add_section(section)

    def _setting(self, into: _RawSection, name: _Token) -> None:
        parts: list[str] = []
        size = 0
        while True:
            token = self._peek()
            if token.kind not in (_T_NAME, _T_STRING):
                break
            self._next()
            parts.append(token.text)
            size += len(token.text.encode("utf-8", "surrogateescape")) + 1
            if size > MAX_VALUE_BYTES + 1:
                raise SettingsError(name.origin, f"value longer than {MAX_VALUE_BYTES} bytes")
        into.add_kv(name.text, " ".join(parts) if parts else None, name.origin)


# --------------------------------------------------------------------------- references


class _Resolver:
    """Materialises what libstrongswan's section and key/value enumerators report for
    every path (settings.c's find_sections: a section, the sections it references, and
    matching subsections of the sections its ancestors reference)."""

    def __init__(self, top: _RawSection, warnings: list[str]) -> None:
        self.top = top
        self.warnings = warnings
        self.count = 0
        self.work = 0
        self.missing_refs: set[tuple[str, Origin]] = set()

    def resolve(self) -> Section:
        root = self._build((), [self.top], depth=0, ancestors=())
        for name, origin in sorted(self.missing_refs, key=lambda r: (str(r[1]), r[0])):
            self.warnings.append(f"{origin}: referenced section '{name}' does not exist")
        root.warnings = self.warnings
        return root

    def _find(
        self,
        section: _RawSection,
        parts: tuple[str, ...],
        ignore_refs: bool,
        out: list[_RawSection],
        depth: int,
    ) -> None:
        self.work += 1
        if depth > MAX_DEPTH + MAX_REFERENCE_DEPTH:
            raise SettingsError(section.origin, "section references nested too deeply")
        if self.work > MAX_REFERENCE_WORK:
            raise SettingsError(section.origin, "section references too complex to resolve")
        found = section.sections.get(parts[0])
        if found is not None:
            if len(parts) > 1:
                self._find(found, parts[1:], False, out, depth + 1)
            elif not any(s is found for s in out):
                out.append(found)
                for name, origin in found.refs:
                    self._resolve_ref(name, origin, out, depth + 1)
        if not ignore_refs and section.refs:
            for name, origin in section.refs:
                referenced: list[_RawSection] = []
                self._resolve_ref(name, origin, referenced, depth + 1)
                for ref_section in referenced:
                    self._find(ref_section, parts, True, out, depth + 1)

    def _resolve_ref(self, name: str, origin: Origin, out: list[_RawSection], depth: int) -> None:
        before = len(out)
        self._find(self.top, tuple(name.split(".")), False, out, depth)
        if len(out) == before and not self._exists(name):
            self.missing_refs.add((name, origin))

    def _exists(self, name: str) -> bool:
        node: _RawSection | None = self.top
        for part in name.split("."):
            node = node.sections.get(part) if node is not None else None
        return node is not None

    def _build(
        self,
        path: tuple[str, ...],
        raws: list[_RawSection],
        depth: int,
        ancestors: tuple[tuple[int, ...], ...],
    ) -> Section:
        self.count += 1
        first = raws[0]
        signature = tuple(id(raw) for raw in raws)
        if path:
            # settings.c looks sections up through a 128-byte buffer per name and a
            # 512-byte buffer per path: swanctl would see such a section empty
            dotted = ".".join(path)
            if len(path[-1].encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise SettingsError(
                    first.origin,
                    f"section name longer than {MAX_NAME_BYTES} bytes: strongSwan cannot "
                    "look it up (swanctl would load it empty)",
                )
            if len(dotted.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
                raise SettingsError(
                    first.origin,
                    f"section path longer than {MAX_PATH_BYTES} bytes: strongSwan cannot "
                    "look it up (swanctl would load it empty)",
                )
        if signature in ancestors:
            # the same sections again below themselves: libstrongswan's (lazy) view
            # of this subtree repeats without end, so no finite tree can show it
            culprit = next((raw for raw in raws if raw.refs), first)
            raise SettingsError(
                culprit.refs[0][1] if culprit.refs else first.origin,
                f"section '{'.'.join(path)}' repeats its ancestor's contents without end "
                "(a section references its own ancestor)",
            )
        if self.count > MAX_RESOLVED_SECTIONS:
            raise SettingsError(
                first.origin,
                f"section references expand to more than {MAX_RESOLVED_SECTIONS} sections",
            )
        if depth > MAX_DEPTH:
            raise SettingsError(
                first.origin,
                f"sections nested deeper than {MAX_DEPTH} levels at '{'.'.join(path)}' "
                "(does a section reference its own ancestor?)",
            )
        node = Section(
            name=path[-1] if path else "",
            origin=first.origin,
            path=".".join(path),
            references=tuple(name for name, _ in first.refs),
        )
        seen: set[str] = set()
        for raw in raws:
            for key, (value, origin) in raw.kv.items():
                if key in seen:
                    continue
                seen.add(key)
                if value is not None:
                    node.settings[key] = Setting(key, value, origin)
        seen.clear()
        for raw in raws:
            for name in raw.sections:
                if name in seen:
                    continue
                seen.add(name)
                child_path = (*path, name)
                child_raws: list[_RawSection] = []
                self._find(self.top, child_path, False, child_raws, 0)
                if not child_raws:  # cannot happen: the name came from one of raws
                    continue
                node.sections[name] = self._build(
                    child_path, child_raws, depth + 1, (*ancestors, signature)
                )
        return node
