"""strongSwan's settings syntax (swanctl.conf, strongswan.conf) parsed into a tree that
remembers where every value came from, so errors can name the file and line.

Semantics follow libstrongswan 5.9's settings parser (settings_lexer.l,
settings_parser.y, settings_types.c, settings.c), re-implemented, not translated:

- `name { ... }` sections (the `{` may be on the next line), `key = value`. A value runs
  to the end of the line, a `#` or a `}`; its words are joined by one space. Quoted
  parts (`"..."`) keep their spacing, may span lines, and know the escapes `\\n`, `\\r`,
  `\\t` and backslash-newline (joins lines); any other escaped character stands for
  itself (`\\"`, `\\\\`, `\\q` -> `q`), exactly as strongSwan does, so there is no "bad
  escape". A quote outside a value is an error.
- `key =` with nothing after it *unsets* the key: libstrongswan stores a NULL value that
  its enumerators skip and that hides the key in referenced sections. Such keys are
  absent from the tree.
- Names may not contain `# { } : . , = "` or whitespace (so a key with a dot is an error).
- `include PATTERN` (glob, relative to the including file's directory, matches sorted)
  splices the files' tokens in at that point, at any nesting level. A pattern that
  matches nothing is not an error (strongSwan only logs it): it is listed in
  `Section.warnings` of the root.
- Duplicate sections merge; a later key replaces an earlier one's value but keeps its
  position (order of first appearance, as libstrongswan's enumerators report).
- Section references `name : ref1, ref2 { ... }` (5.7+): references are paths from the
  top (`connections.base`). The tree returned is *resolved*: every section contains what
  libstrongswan's enumerators report for its path, i.e. its own keys and subsections
  first, then those of the referenced sections (and theirs) that it does not define.

Checked against libstrongswan 5.9.8 itself: tests/unit/conftest.py drives the installed
library through ctypes, and the unit and hypothesis tests compare trees and verdicts
(every corpus swanctl.conf, the syntax tables, random and structured inputs, includes).

Deliberate deviations, because silently loading half a configuration is worse for a
reconciler than refusing it (strongSwan logs these and carries on, or crashes):
- an included file that exists but cannot be read (permission denied, dangling
  symlink), a directory (strongSwan reads it as empty) or a FIFO/device is an error;
- include cycles are an error (strongSwan recurses until it runs out of file
  descriptors), as are includes nested deeper than MAX_INCLUDE_DEPTH;
- sections nested deeper than MAX_DEPTH; a section that references its own ancestor
  (libstrongswan resolves lazily, so `a { b : a {} }` has an `a.b.b.b...` of any depth,
  which no finite tree can show: an error naming the reference); references that expand
  beyond MAX_RESOLVED_SECTIONS or nest deeper than MAX_REFERENCE_DEPTH (libstrongswan
  overflows its stack on some of those);
- section names over MAX_NAME_BYTES and section paths over MAX_PATH_BYTES (libstrongswan
  lists such a section but cannot look it up, so swanctl would load it empty);
- NUL bytes (flex would cut names and values at them), files over MAX_FILE_BYTES and
  values over MAX_VALUE_BYTES (VICI cannot carry them anyway).
Where libstrongswan cannot parse a file, swanctl 5.9.8 loads it as *empty*
(settings_create() never fails) and so unloads everything; swand raises SettingsError.
A top-level path is read as is, not globbed (libstrongswan globs it too).

Bytes: files are decoded as UTF-8 with `surrogateescape`, so bytes that are not UTF-8
(Latin-1 comments, say) are accepted as strongSwan accepts them, and
`Setting.value_bytes` gives back the exact bytes that swanctl would send to charon.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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


@dataclass(frozen=True)
class Origin:
    """Where a section or value was written. `line` 0 means the file as a whole."""

    file: str
    line: int

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}"


class SettingsError(Exception):
    """A file that cannot be parsed. `str()` is `FILE:LINE: message`."""

    def __init__(self, origin: Origin, message: str) -> None:
        super().__init__(f"{origin}: {message}")
        self.origin = origin
        self.message = message


def is_secret_key(key: str) -> bool:
    """Whether swanctl.conf keeps a secret under this key: `secret*` (PSKs, EAP and XAuth
    passwords, passphrases of keys and PKCS#12 containers) or a token's `pin`."""
    lower = key.lower()
    return lower.startswith("secret") or lower == "pin"


@dataclass(frozen=True)
class Setting:
    """One `key = value`, with where its (last) value was written. The repr of a secret
    (`is_secret_key`) does not show its value: trees end up in tracebacks and asserts."""

    key: str
    value: str
    origin: Origin

    def __repr__(self) -> str:
        value = "<secret>" if is_secret_key(self.key) else repr(self.value)
        return f"Setting(key={self.key!r}, value={value}, origin={self.origin!r})"

    @property
    def value_bytes(self) -> bytes:
        """The value exactly as written in the file (bytes that are not UTF-8 included)."""
        return self.value.encode("utf-8", "surrogateescape")


@dataclass
class Section:
    """A section of the tree. `settings` and `sections` keep the order of first
    appearance, as libstrongswan's enumerators do.

    `path` is the dotted path from the root ("" for the root), `references` the
    references declared on this section (already resolved into its contents), and
    `warnings` (root only) what strongSwan would merely log: includes that matched
    nothing, references to sections that do not exist."""

    name: str
    origin: Origin
    settings: dict[str, Setting] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)
    path: str = ""
    references: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Section]:
        """The subsections, in order."""
        return iter(self.sections.values())

    def __len__(self) -> int:
        """The number of subsections."""
        return len(self.sections)

    def __bool__(self) -> bool:
        """Always true: `if tree.section(...)` must not depend on having subsections."""
        return True

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.settings or key in self.sections)

    def keys(self) -> list[str]:
        """Setting keys, in order."""
        return list(self.settings)

    def items(self) -> list[tuple[str, str]]:
        """(key, value) pairs of the settings, in order."""
        return [(s.key, s.value) for s in self.settings.values()]

    def section(self, path: str) -> Section | None:
        """The subsection at a dotted path (`"connections.rw"`), or None."""
        node: Section | None = self
        for part in path.split("."):
            if node is None or not part:
                return None
            node = node.sections.get(part)
        return node

    def setting(self, path: str) -> Setting | None:
        """The Setting at a dotted path (`"connections.rw.version"`), or None."""
        parent_path, _, key = path.rpartition(".")
        parent = self.section(parent_path) if parent_path else self
        return None if parent is None else parent.settings.get(key)

    def get(self, path: str, default: str | None = None) -> str | None:
        """The value at a dotted path, or `default`."""
        found = self.setting(path)
        return default if found is None else found.value

    def origin_of(self, path: str) -> Origin | None:
        """Where the value at a dotted path was written."""
        found = self.setting(path)
        return None if found is None else found.origin


class NotRegularFileError(OSError):
    """A FIFO, socket or device where a file was expected."""


def read_regular_file(path: str, limit: int) -> bytes:
    """Up to `limit + 1` bytes of a regular file (so the caller can tell "too large").
    Opened without blocking and checked before reading: open() of a FIFO would wait for
    a writer. Raises IsADirectoryError, NotRegularFileError or the OSError of the open.
    The one reader of swanctl's files: settings and credentials alike."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
        return handle.read(limit + 1)


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
#
# settings_lexer.l's start conditions, each as one compiled regular expression: flex
# takes the longest match among a state's rules, the expressions below get the same
# extent by the order of their alternatives and by possessive (non-backtracking)
# repetition. The scanner runs once over the whole input (includes spliced where flex
# splices its buffers) before the parser, so a lexical error becomes an error token in
# its place: the parser raises it only if it gets that far, as with flex's lazy scan.

_NAME = r'[^#{}:.,="\r\n\t ]'
#: what INITIAL and ref eat between tokens: one unit is flex's longest of
#: `[\t ]*#[^\r\n]*`, `[\t\r ]+` and `\n|#.*\n` (a comment reached from blanks ends at a
#: carriage return, one reached at its `#` runs through the newline)
_SKIP = r"(?>#[^\n]*\n|[\t ]*#[^\r\n]*|[\t\r ]+|\n)*+"
#: INITIAL. Groups: 1 a name, then (2) `= value` up to `#`, `}`, a newline or the end, if
#: the value has no quote, or (3) `{`: a whole setting or section head in one match (the
#: common case; anything else comes as single tokens); 4 punctuation; 5 the head of
#: `"include"[\t ]+/[^=]` (trailing context: a last blank may serve as it); 6 a name.
#: Nothing after the blanks: the end of the buffer.
_INITIAL = re.compile(
    _SKIP
    + "(?:"
    + f"((?!include[\\t ]){_NAME}++)"
    + f"(?:{_SKIP}(?:=[\\t\\r ]*+([^#}}\"\\n]*+)(?!\")|(\\{{)))?"
    + r'|([{},.:="])'
    + r"|(include(?:[\t ]+(?=[^=\t ])|[\t ]+(?=[\t ])))"
    + f"|({_NAME}++)"
    + ")?"
)
#: ref: 1 a comma, 2 a dotted name; nothing: the references end
_REF = re.compile(_SKIP + rf"(?:(,)|({_NAME}+(?:\.{_NAME}+)*))?")
#: val: 1 a word, 2 a quote; nothing: `#`, `}`, a newline or the end ends the value
_VAL = re.compile(r'[\t\r ]*+(?:([^#}"\r\n\t ]+)|("))?')
_VALUE_RUN = re.compile(r'[^#}"\r\n\t ]+')
#: str: the contents up to the closing quote (or a lone backslash at the end)
_STR_BODY = re.compile(r'(?:[^\\"]++|\\[\s\S])*+')
_STR_ESCAPE = re.compile(r"\\(\r?\n|[\s\S])|\r")
_STR_ESCAPED = {"n": "\n", "r": "\r", "t": "\t"}
#: inc: an unquoted pattern (`\"`, `\#`, `\}`, `\ ` escaped, carriage returns dropped)
_INC_BODY = re.compile(r'(?:[^"\\#}\r\n\t ]++|\\["#} ]|\\|\r)*+')
_INC_ESCAPE = re.compile(r'\\(["#} ])|\r')
_GLOB_MAGIC = re.compile(r"[*?\[]")


def _unescape_string(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped is None or escaped[-1] == "\n":  # a carriage return, an escaped line end
        return ""
    return _STR_ESCAPED.get(escaped, escaped)


def _scan_string(text: str, pos: int) -> tuple[str | None, int, str]:
    """The str start condition from after an opening quote: (contents, position after
    the closing quote, "") or (None, pos, the error)."""
    body_end = _STR_BODY.match(text, pos).end()  # type: ignore[union-attr]
    body = text[pos:body_end]
    if "\\" in body or "\r" in body:
        body = _STR_ESCAPE.sub(_unescape_string, body)
    if len(body) > MAX_VALUE_BYTES:
        return None, pos, f"quoted string longer than {MAX_VALUE_BYTES} bytes"
    if not text.startswith('"', body_end):
        return None, pos, "unterminated quoted string (no closing '\"')"
    return body, body_end + 1, ""


# token kinds; the others are punctuation characters
_T_NAME, _T_STRING, _T_NEWLINE, _T_EOF = "NAME", "STRING", "NEWLINE", "EOF"
_T_SETTING = "SETTING"  # NAME '=' value NEWLINE, in one token (value None: unset)
_T_OPEN = "OPEN"  # NAME '{', in one token
_T_ERROR = "ERROR"  # a lexical error: text is the message


class _Token(NamedTuple):
    kind: str  # one of the _T_* or a punctuation character
    text: str
    file: str
    line: int
    value: str | None = None  # _T_SETTING's value

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.line)


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


_INITIAL_STATE, _REF_STATE, _VAL_STATE = 0, 1, 2


class _Lexer:
    """A re-implementation of settings_lexer.l's start conditions (INITIAL, ref, val,
    inc, str) over a stack of files, so includes splice tokens exactly where flex
    splices its buffers."""

    def __init__(self, parser: _Parser, frame: _Frame, base_dir: str | None) -> None:
        self.parser = parser
        self.frames = [frame]
        self.base_dir = base_dir
        self.files_opened = 1
        self.last_origin = Origin(frame.name, 1)

    # -- files
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
        origin = includer.pending_origin or Origin(includer.name, includer.line)
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
    def tokens(self) -> list[_Token]:
        """All tokens up to the end of all input (then one EOF token), or up to a
        lexical error (then one ERROR token)."""
        out: list[_Token] = []
        try:
            self._scan(out)
        except SettingsError as err:
            out.append(_Token(_T_ERROR, err.message, err.origin.file, err.origin.line))
        return out

    def _scan(self, out: list[_Token]) -> None:
        append = out.append
        count_lines = str.count
        initial, ref, val = _INITIAL.match, _REF.match, _VAL.match
        state = _INITIAL_STATE
        while True:  # per buffer, until it ends or an include pushes another
            frame = self.frames[-1]
            text, pos, line, name = frame.text, frame.pos, frame.line, frame.name
            size = len(text)
            while True:
                if state == _INITIAL_STATE:
                    m = initial(text, pos)
                    assert m is not None
                    kind = m.lastindex
                    if kind is None:  # blanks up to the end of the buffer
                        line += count_lines(text, "\n", pos, size)
                        pos = size
                        break
                    start = m.start(1 if kind <= 3 else kind)
                    end = m.end()
                    if start != pos:
                        line += count_lines(text, "\n", pos, start)
                    if kind == 2:  # key = value
                        value: str | None = m.group(2)
                        if value and ("\t" in value or "\r" in value or " " in value):
                            value = " ".join(_VALUE_RUN.findall(value))
                        append(_Token(_T_SETTING, m.group(1), name, line, value or None))
                        line += count_lines(text, "\n", start, end)
                    elif kind == 3:  # name {
                        append(_Token(_T_OPEN, m.group(1), name, line))
                        line += count_lines(text, "\n", start, end)
                    elif kind == 4:
                        char = text[start]
                        append(_Token(char, char, name, line))
                        if char == "=":
                            state = _VAL_STATE
                        elif char == ":":
                            state = _REF_STATE
                    elif kind == 5:
                        frame.pos, frame.line = self._scan_include(frame, end, line)
                        if self.frames[-1] is not frame:
                            break  # on in the included file
                        pos, line = frame.pos, frame.line
                        continue
                    else:  # 1, 6: a name
                        append(_Token(_T_NAME, text[start:end], name, line))
                    pos = end
                elif state == _VAL_STATE:
                    m = val(text, pos)
                    assert m is not None
                    kind = m.lastindex
                    pos = m.end()
                    if kind == 1:
                        append(_Token(_T_NAME, m.group(1), name, line))
                    elif kind == 2:
                        contents, after, error = _scan_string(text, pos)
                        if contents is None:
                            raise SettingsError(Origin(name, line), error)
                        append(_Token(_T_STRING, contents, name, line))
                        line += count_lines(text, "\n", pos, after)
                        pos = after
                    else:  # `#`, `}` and the newline are scanned again in INITIAL
                        append(_Token(_T_NEWLINE, "", name, line))
                        state = _INITIAL_STATE
                else:  # ref
                    m = ref(text, pos)
                    assert m is not None
                    kind = m.lastindex
                    end = m.end()
                    line += count_lines(text, "\n", pos, end)
                    pos = end
                    if kind == 1:
                        append(_Token(",", ",", name, line))
                    elif kind == 2:
                        append(_Token(_T_NAME, m.group(2), name, line))
                    elif pos >= size:
                        break  # the buffer ends, the state stays ref
                    else:
                        state = _INITIAL_STATE  # anything else ends the references
            if self.frames[-1] is frame:  # the buffer ended
                frame.pos, frame.line = pos, line
                if self._eof():
                    origin = self.last_origin
                    append(_Token(_T_EOF, "", origin.file, origin.line))
                    return

    def _scan_include(self, frame: _Frame, pos: int, line: int) -> tuple[int, int]:
        """inc (and str, for a quoted pattern) from after `include` and its blanks, then
        the include itself. Returns where the includer goes on (position, line)."""
        text = frame.text
        origin = Origin(frame.name, line)
        end = _INC_BODY.match(text, pos).end()  # type: ignore[union-attr]
        pattern = text[pos:end]
        if "\\" in pattern or "\r" in pattern:
            pattern = _INC_ESCAPE.sub(lambda m: m.group(1) or "", pattern)
        pos = end
        after = text[pos : pos + 1]
        if after == '"':
            contents, end, error = _scan_string(text, pos + 1)
            if contents is None:
                raise SettingsError(origin, error)
            pattern += contents
            line += text.count("\n", pos, end)
            pos = end
        elif after in (" ", "\t"):
            pos += 1
        frame.pos, frame.line = pos, line
        self._include(pattern, origin)
        return pos, line


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


#: token kinds that begin with a name (a compound token is described by its name)
_NAME_KINDS = (_T_NAME, _T_SETTING, _T_OPEN)


def _describe(token: _Token) -> str:
    if token.kind == _T_EOF:
        return "end of file"
    if token.kind in _NAME_KINDS:
        return f"'{token.text}'"
    if token.kind == _T_NEWLINE:
        return "end of line"
    if token.kind == '"':
        return "quoted string (quotes are only allowed in values)"
    if token.kind in (".", ","):
        return f"'{token.kind}' (names cannot contain '.' or ',')"
    return f"'{token.kind}'"


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


class _Parser:
    """settings_parser.y's grammar over the scanner's tokens, building _RawSections:
    sections are a loop with an explicit stack (the hot path: whole settings and section
    heads come as one token each), the rarer shapes a recursive descent."""

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
        self.tokens = _Lexer(self, frame, base_dir).tokens()
        self.index = 0
        self.root = _RawSection("", Origin(name, 0))
        self._statements()
        return _Resolver(self.root, self.warnings).resolve()

    def _peek(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind == _T_ERROR:  # the scanner stopped here
            raise SettingsError(token.origin, token.text)
        return token

    def _next(self) -> _Token:
        token = self._peek()
        self.index += 1
        return token

    def _statements(self) -> None:
        tokens = self.tokens
        into = self.root
        opener: _Token | None = None  # the name that opened `into`
        stack: list[tuple[_RawSection, _Token | None]] = []  # the sections around it
        while True:
            token = tokens[self.index]
            self.index += 1
            kind = token.kind
            if kind == _T_SETTING:
                value = token.value
                if value is not None and len(value) * 4 > MAX_VALUE_BYTES and \
                        _utf8_length(value) > MAX_VALUE_BYTES:
                    raise SettingsError(token.origin, f"value longer than {MAX_VALUE_BYTES} bytes")
                into.kv[token.text] = (value, Origin(token.file, token.line))
                continue
            if kind == "}":
                if opener is None:
                    raise SettingsError(token.origin, "unexpected '}' (no section to close)")
                parent, outer = stack.pop()
                parent.add_section(into)
                into, opener = parent, outer
                continue
            if kind == _T_OPEN:
                section: _RawSection | None = self._section(token, len(stack), [])
            elif kind == _T_NEWLINE:
                continue
            elif kind == _T_EOF:
                if opener is not None:
                    raise SettingsError(
                        opener.origin,
                        f"section '{opener.text}' is not closed: missing '}}' before "
                        f"the end of {token.file}",
                    )
                return
            elif kind == _T_ERROR:
                raise SettingsError(token.origin, token.text)
            elif kind != _T_NAME:
                hint = " (a section needs a name)" if kind == "{" else ""
                raise SettingsError(token.origin, f"unexpected {_describe(token)}{hint}")
            else:
                section = self._statement(into, token, len(stack))
            if section is not None:
                stack.append((into, opener))
                into, opener = section, token

    def _statement(self, into: _RawSection, name: _Token, depth: int) -> _RawSection | None:
        """After a name: a setting (added to `into`) or a section head (returned)."""
        token = self._next()
        if token.kind == "=":
            self._setting(into, name)
            return None
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
                    f" (line {name.line})"
                    if token.file == name.file
                    else f" ({name.origin})"
                )
            got = ("a word (not shown: it may be a secret)"
                   if token.kind in _NAME_KINDS and is_secret_key(name.text)
                   else _describe(token))
            raise SettingsError(
                token.origin if token.kind != _T_EOF else name.origin,
                f"expected '=' or '{{' after '{name.text}'{where}, got {got}",
            )
        return self._section(name, depth, refs)

    @staticmethod
    def _section(name: _Token, depth: int, refs: list[_Token]) -> _RawSection:
        if depth + 1 > MAX_DEPTH:
            raise SettingsError(name.origin, f"sections nested deeper than {MAX_DEPTH} levels")
        section = _RawSection(name.text, name.origin)
        for ref in refs:
            section.add_ref(ref.text, ref.origin)
        return section

    def _setting(self, into: _RawSection, name: _Token) -> None:
        parts: list[str] = []
        size = 0
        while True:
            token = self._peek()
            if token.kind not in (_T_NAME, _T_STRING):
                break
            self.index += 1
            parts.append(token.text)
            size += _utf8_length(token.text) + 1
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
        if self._has_references(self.top):
            root = self._build((), [self.top], depth=0, ancestors=())
        else:
            root = self._build_plain(self.top, "", [self.top])
        for name, origin in sorted(self.missing_refs, key=lambda r: (str(r[1]), r[0])):
            self.warnings.append(f"{origin}: referenced section '{name}' does not exist")
        root.warnings = self.warnings
        return root

    @staticmethod
    def _has_references(top: _RawSection) -> bool:
        pending = [top]
        while pending:
            raw = pending.pop()
            if raw.refs:
                return True
            pending.extend(raw.sections.values())
        return False

    def _build_plain(self, raw: _RawSection, path: str, chain: list[_RawSection]) -> Section:
        """`_build` for a tree without references (the usual one, and the larger): every
        path is the one section written there, so the tree is copied, not looked up.
        The limits are checked in `_build`'s order with its origins; the lookup `_build`
        would make of a child visits the top and every section down to `raw` (`chain`)."""
        self.count += 1
        depth = len(chain) - 1
        if depth:
            _check_lookup_limits(raw.name, path, raw.origin)
        if self.count > MAX_RESOLVED_SECTIONS:
            raise SettingsError(
                raw.origin,
                f"section references expand to more than {MAX_RESOLVED_SECTIONS} sections",
            )
        if depth > MAX_DEPTH:  # pragma: no cover - the parser stops deeper nesting
            raise SettingsError(
                raw.origin,
                f"sections nested deeper than {MAX_DEPTH} levels at '{path}' "
                "(does a section reference its own ancestor?)",
            )
        node = Section(name=raw.name if depth else "", origin=raw.origin, path=path)
        settings = node.settings
        for key, (value, origin) in raw.kv.items():
            if value is not None:
                settings[key] = Setting(key, value, origin)
        sections = node.sections
        lookup = len(chain)
        for name, sub in raw.sections.items():
            if self.work + lookup > MAX_REFERENCE_WORK:
                raise SettingsError(
                    chain[MAX_REFERENCE_WORK - self.work].origin,
                    "section references too complex to resolve",
                )
            self.work += lookup
            chain.append(sub)
            sections[name] = self._build_plain(sub, f"{path}.{name}" if depth else name, chain)
            chain.pop()
        return node

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
            _check_lookup_limits(path[-1], ".".join(path), first.origin)
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


def _check_lookup_limits(name: str, dotted: str, origin: Origin) -> None:
    """settings.c looks sections up through a 128-byte buffer per name and a 512-byte
    buffer per dotted path: swanctl would see a longer one empty, so it is an error."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise SettingsError(
            origin,
            f"section name longer than {MAX_NAME_BYTES} bytes: strongSwan cannot "
            "look it up (swanctl would load it empty)",
        )
    if len(dotted.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise SettingsError(
            origin,
            f"section path longer than {MAX_PATH_BYTES} bytes: strongSwan cannot "
            "look it up (swanctl would load it empty)",
        )
