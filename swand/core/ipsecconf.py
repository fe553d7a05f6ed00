"""ipsec.conf and ipsec.secrets, parsed the way strongSwan's starter and stroke read them,
with the file and line of every value, so `swand import` can name where each setting came
from and where each problem is.

ipsec.conf (starter's lexer.l, parser.y, conf_parser.c, confread.c; re-implemented):
- Sections start in column 0: `config setup`, `conn NAME`, `ca NAME`. Settings are
  `key=value` lines that start with blanks; a setting in column 0 is a syntax error.
- A value is the rest of the line: unquoted words are joined by one space; `"..."` keeps
  its spacing, may span lines and knows `\\n`, `\\r`, `\\t`, backslash-newline (joins
  lines) and `\\X` for any other X. `#` starts a comment outside quotes. A second `=` in
  an unquoted value is a syntax error. `key=` with nothing *unsets* the key (also for
  values inherited through `also=`/`%default`).
- `include PATTERN` (glob, relative to the including file's folder, sorted) splices files
  in at that point. Deliberate deviation: a pattern without wildcards that names no file
  is an error (starter only logs it and carries on without the file's connections).
- Sections of the same name merge; a repeated key's last value wins.
- `also=NAME` inherits from another section; the conn's own keys win, then the `also=`
  sections, the one written last first (each with its own parents), then `conn
  %default`. A missing `also=` target or a cycle is an error, as it makes starter refuse
  the whole file.
- Keys are checked against starter 5.9's keyword table: an unknown keyword, or one in
  the wrong kind of section, is an error (starter refuses the file); the keywords starter
  accepts but ignores (pluto's) are reported as such.
- Bytes that are not UTF-8 are an error naming the line (starter takes any bytes, but a
  configuration that is not text cannot be carried over safely).

ipsec.secrets (stroke_cred.c): `[SELECTORS] : TYPE VALUE` entries, a new entry starting in
column 0, continuation lines indented; TYPE is RSA, ECDSA, BLISS, PKCS8, PKCS12 (P12),
PSK, EAP, NTLM, XAUTH, PIN (case-insensitive). Secrets are `"quoted"`, `'quoted'`, `0x`
hex, `0s` base64 or a bare word; `%prompt` asks at load time. `include PATTERN` like
ipsec.conf. A secret's value never appears in a repr or an error.
"""

from __future__ import annotations

import base64
import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from swand.core.settings import Origin

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_INCLUDE_DEPTH = 32
MAX_FILES = 1000

# --- keywords (starter 5.9 keywords.txt / confread.c) -------------------------------------

SETUP_KEYWORDS = frozenset({
    "charondebug", "uniqueids", "cachecrls", "strictcrlpolicy", "pkcs11module",
    "pkcs11initargs", "pkcs11keepstate", "pkcs11proxy",
})
#: accepted by starter in `config setup` and ignored (pluto and KLIPS era)
SETUP_OBSOLETE = frozenset({
    "interfaces", "dumpdir", "charonstart", "plutostart", "klipsdebug", "plutodebug",
    "prepluto", "postpluto", "plutostderrlog", "fragicmp", "packetdefault", "hidetos",
    "overridemtu", "crlcheckinterval", "nocrsend", "nat_traversal", "keep_alive",
    "force_keepalive", "virtual_private",
})
CONN_KEYWORDS = frozenset({
    "also", "auto", "keyexchange", "type", "compress", "installpolicy", "aggressive",
    "authby", "keylife", "lifetime", "rekeymargin", "margintime", "lifebytes",
    "marginbytes", "lifepackets", "marginpackets", "ikelifetime", "keyingtries",
    "rekeyfuzz", "rekey", "reauth", "esp", "ah", "ike", "dpddelay", "dpdtimeout",
    "dpdaction", "closeaction", "sha256_96", "inactivity", "modeconfig", "xauth",
    "xauth_identity", "mediation", "mediated_by", "me_peerid", "reqid", "replay_window",
    "mark", "mark_in", "mark_out", "tfc", "fragmentation", "ikedscp", "mobike",
    "forceencaps", "eap_identity", "aaa_identity",
})
CONN_OBSOLETE = frozenset({"pfs", "pfsgroup", "eap"})
END_KEYWORDS = frozenset({
    "", "ikeport", "subnet", "protoport", "sourceip", "dns", "firewall", "hostaccess",
    "allowany", "updown", "id", "id2", "auth", "auth2", "sigkey", "rsasigkey", "cert",
    "cert2", "certpolicy", "sendcert", "ca", "ca2", "groups", "groups2",
})
END_OBSOLETE = frozenset({"nexthop", "subnetwithin", "natip"})
CA_KEYWORDS = frozenset({
    "also", "auto", "cacert", "crluri", "crluri1", "crluri2", "ocspuri", "ocspuri1",
    "ocspuri2", "certuribase",
})
CA_OBSOLETE = frozenset({"ldaphost", "ldapbase"})


def keyword_kind(section_kind: str, key: str) -> str:
    """'ok', 'obsolete' (starter accepts and ignores it), 'misplaced' (a keyword of another
    kind of section) or 'unknown'."""
    end_key = key[5:] if key.startswith("right") else key[4:] if key.startswith("left") \
        else None
    conn_ok = key in CONN_KEYWORDS or (end_key is not None and end_key in END_KEYWORDS)
    conn_old = key in CONN_OBSOLETE or (end_key is not None and end_key in END_OBSOLETE)
    tables = {
        "setup": (SETUP_KEYWORDS, SETUP_OBSOLETE),
        "conn": (CONN_KEYWORDS, CONN_OBSOLETE),
        "ca": (CA_KEYWORDS, CA_OBSOLETE),
    }
    ok, old = tables[section_kind]
    if section_kind == "conn":
        if conn_ok:
            return "ok"
        if conn_old:
            return "obsolete"
    elif key in ok:
        return "ok"
    elif key in old:
        return "obsolete"
    known = (SETUP_KEYWORDS | SETUP_OBSOLETE | CA_KEYWORDS | CA_OBSOLETE) \
        if section_kind == "conn" else None
    if known is not None and key in known:
        return "misplaced"
    if section_kind != "conn" and (conn_ok or conn_old or key in SETUP_KEYWORDS
                                   or key in SETUP_OBSOLETE or key in CA_KEYWORDS):
        return "misplaced"
    return "unknown"


# --- shared -------------------------------------------------------------------------------


class ImportSyntaxError(Exception):
    """A file starter would refuse, or swand will not carry over. `str()` is
    `FILE:LINE: message`; the message never contains a secret."""

    def __init__(self, origin: Origin, message: str) -> None:
        super().__init__(f"{origin}: {message}")
        self.origin = origin
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One finding of the parser that does not stop it (`error` makes the import fail)."""

    origin: Origin
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def _read_text(path: str, origin: Origin) -> str:
    """The file as text; errors name `origin` (the include line) or the bad byte's line."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ImportSyntaxError(origin, f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise ImportSyntaxError(origin, f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ImportSyntaxError(
            Origin(path, line), f"bytes that are not UTF-8 (byte {data[e.start]:#04x} at "
            f"offset {e.start}); convert the file to UTF-8 (iconv -f latin1 -t utf-8)"
        ) from e
    except ValueError as e:  # pragma: no cover - decode raises UnicodeDecodeError
        raise ImportSyntaxError(origin, str(e)) from e


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _include(pattern: str, including: str, origin: Origin) -> list[str]:
    """The files an include names, sorted; a literal name that does not exist is an
    error, a wildcard that matches nothing is not (as in swanctl.conf)."""
    if not pattern:
        raise ImportSyntaxError(origin, "include without a file name")
    if not os.path.isabs(pattern):
        pattern = os.path.join(os.path.dirname(including) or ".", pattern)
    if not _has_magic(pattern):
        if not os.path.exists(pattern):
            raise ImportSyntaxError(origin, f"include {pattern}: no such file")
        return [pattern]
    return sorted(glob.glob(pattern))


# --- ipsec.conf ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One `key=value` as written; `value` None is `key=` (unset)."""

    key: str
    value: str | None
    origin: Origin


@dataclass
class ConfSection:
    """A `config setup`, `conn` or `ca` section: its own settings (last value of each key),
    its `also=` references in the order written."""

    kind: str
    name: str
    origin: Origin
    settings: dict[str, Value] = field(default_factory=dict)
    also: list[Value] = field(default_factory=list)
    parents: list[ConfSection] | None = None


@dataclass
class IpsecConf:
    """A parsed ipsec.conf: sections in order of first appearance, the files read, and
    findings that do not stop the import (obsolete keywords, empty include globs)."""

    setup: ConfSection
    conns: dict[str, ConfSection]
    cas: dict[str, ConfSection]
    files: list[str]
    notes: list[Problem] = field(default_factory=list)

    def effective(self, section: ConfSection) -> dict[str, Value]:
        """What starter sees for a section: its own keys, then its parents' (the most
        important first), `key=` hiding inherited values. Keys sorted, as starter does."""
        seen: dict[str, Value] = {}
        for sec in [section, *(section.parents or [])]:
            for key, value in sec.settings.items():
                seen.setdefault(key, value)
        return {k: v for k, v in sorted(seen.items()) if v.value is not None}

    def loaded(self, sections: dict[str, ConfSection]
               ) -> Iterator[tuple[ConfSection, dict[str, Value]]]:
        """The conns (or cas) starter hands to charon, with their effective settings: not
        %default, `auto` set and not `ignore`."""
        for conn in sections.values():
            if conn.name == "%default":
                continue
            values = self.effective(conn)
            auto = values.get("auto")
            if auto is None or auto.value == "ignore":
                continue
            yield conn, values


class _ConfLexer:
    """Tokens of ipsec.conf (starter's lexer.l): ('SPACES'|'NEWLINE'|'EQ'|'SECTION'|
    'STRING', text, origin)."""

    def __init__(self, path: str) -> None:
        self.tokens: list[tuple[str, str, Origin]] = []
        self.files: list[str] = []
        self.notes: list[Problem] = []
        self._lex_file(path, Origin(path, 0), 0)

    def _lex_file(self, path: str, origin: Origin, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise ImportSyntaxError(origin, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
        if len(self.files) >= MAX_FILES:
            raise ImportSyntaxError(origin, f"more than {MAX_FILES} files included")
        real = os.path.realpath(path)
        self.files.append(path)
        self._stack = getattr(self, "_stack", [])
        if real in self._stack:
            raise ImportSyntaxError(origin, f"include cycle: {path} includes itself")
        self._stack.append(real)
        text = _read_text(path, origin)
        self._lex_text(text, path, depth)
        self._stack.pop()
        self.tokens.append(("NEWLINE", "", Origin(path, text.count("\n") + 1)))

    def _lex_text(self, text: str, path: str, depth: int) -> None:
        pos, line, n = 0, 1, len(text)
        bol = True
        while pos < n:
            c = text[pos]
            here = Origin(path, line)
            if bol:
                end = text.find("\n", pos)
                end = n if end < 0 else end
                stripped = text[pos:end].lstrip(" \t")
                if stripped.startswith("version"):
                    pos = end  # legacy `version 2.0`
                    bol = False
                    continue
                if c in " \t":
                    while pos < n and text[pos] in " \t":
                        pos += 1
                    self.tokens.append(("SPACES", "", here))
                    bol = False
                    continue
                bol = False
                if text.startswith("config setup", pos):
                    self.tokens.append(("SECTION", "setup", here))
                    pos += len("config setup")
                    continue
                word_end = pos
                while word_end < n and text[word_end] not in '"#= \t\n':
                    word_end += 1
                word = text[pos:word_end]
                if word in ("conn", "ca"):
                    self.tokens.append(("SECTION", word, here))
                    pos = word_end
                    continue
            if c == "\n":
                self.tokens.append(("NEWLINE", "", here))
                pos += 1
                line += 1
                bol = True
            elif c in " \t":
                pos += 1
            elif c == "#":
                end = text.find("\n", pos)
                pos = n if end < 0 else end
            elif c == "=":
                self.tokens.append(("EQ", "=", here))
                pos += 1
            elif c == '"':
                value, pos, line = self._quoted(text, pos + 1, line, here)
                self.tokens.append(("STRING", value, here))
            else:
                end = pos + 2 if text.startswith("@#", pos) else pos
                while end < n and text[end] not in '"#= \t\n':
                    end += 1
                word = text[pos:end]
                if word == "include" and end < n and text[end] in " \t":
                    after = end
                    while after < n and text[after] in " \t":
                        after += 1
                    if after < n and text[after] != "=":
                        pattern, pos, line = self._include_pattern(text, after, line, here)
                        for name in self._expand(pattern, path, here):
                            self._lex_file(name, here, depth + 1)
                        continue
                self.tokens.append(("STRING", word, here))
                pos = end

    def _expand(self, pattern: str, path: str, here: Origin) -> list[str]:
        names = _include(pattern, path, here)
        if not names:
            self.notes.append(Problem(here, f"include {pattern} matches no file", False))
        return names

    @staticmethod
    def _quoted(text: str, pos: int, line: int, start: Origin) -> tuple[str, int, int]:
        out: list[str] = []
        n = len(text)
        while pos < n:
            c = text[pos]
            if c == '"':
                return "".join(out), pos + 1, line
            if c == "\\":
                if pos + 1 >= n:
                    break
                nxt = text[pos + 1]
                if nxt == "\n":
                    line += 1
                    pos += 2
                    continue
                if nxt == "\r" and text.startswith("\n", pos + 2):
                    line += 1
                    pos += 3
                    continue
                out.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
                if nxt == "\n":
                    line += 1
                pos += 2
                continue
            if c == "\n":
                line += 1
            out.append(c)
            pos += 1
        raise ImportSyntaxError(start, "unterminated quoted string")

    def _include_pattern(self, text: str, pos: int, line: int,
                         here: Origin) -> tuple[str, int, int]:
        if text.startswith('"', pos):
            return self._quoted(text, pos + 1, line, here)
        out: list[str] = []
        n = len(text)
        while pos < n and text[pos] not in "#\n\t ":
            if text[pos] == "\\" and pos + 1 < n and text[pos + 1] in '"#} ':
                out.append(text[pos + 1])
                pos += 2
                continue
            if text[pos] == '"':
                raise ImportSyntaxError(here, "a quote inside an include pattern")
            out.append(text[pos])
            pos += 1
        return "".join(out), pos, line


def parse_ipsec_conf(path: str) -> IpsecConf:
    """Parse ipsec.conf and its includes, resolve `also=`, check every keyword. Raises
    ImportSyntaxError for what makes starter refuse the file."""
    lexer = _ConfLexer(path)
    setup = ConfSection("setup", "", Origin(path, 0))
    conns: dict[str, ConfSection] = {}
    cas: dict[str, ConfSection] = {}
    current: ConfSection | None = None
    notes = list(lexer.notes)
    tokens = lexer.tokens
    i, n = 0, len(tokens)

    def expect_end(j: int) -> None:
        if j < n and tokens[j][0] != "NEWLINE":
            kind, text, origin = tokens[j]
            raise ImportSyntaxError(origin, f"syntax error: unexpected {text or kind!r}")

    while i < n:
        kind, text, origin = tokens[i]
        if kind == "NEWLINE":
            i += 1
            continue
        if kind == "SECTION":
            name = ""
            if i + 1 < n and tokens[i + 1][0] == "STRING":
                name = tokens[i + 1][1]
                i += 1
            i += 1
            expect_end(i)
            if text == "setup":
                if name:
                    raise ImportSyntaxError(origin, "syntax error: 'config setup' takes no "
                                            "name")
                current = setup
                continue
            if not name:
                raise ImportSyntaxError(origin, f"section name missing after '{text}'")
            table = conns if text == "conn" else cas
            current = table.get(name)
            if current is None:
                current = table[name] = ConfSection(text, name, origin)
            continue
        if kind == "SPACES":
            i += 1
            if i >= n or tokens[i][0] == "NEWLINE":
                continue
            kind, key, origin = tokens[i]
            if kind != "STRING":
                raise ImportSyntaxError(origin, f"syntax error: unexpected {key or kind!r}")
            if i + 1 >= n or tokens[i + 1][0] != "EQ":
                raise ImportSyntaxError(origin, f"missing value for setting '{key}'")
            if not key:
                raise ImportSyntaxError(origin, "setting name can't be empty")
            i += 2
            words: list[str] = []
            while i < n and tokens[i][0] == "STRING":
                words.append(tokens[i][1])
                i += 1
            expect_end(i)
            value = " ".join(words) if words else None
            if current is None:
                notes.append(Problem(origin, f"'{key}' outside any section: starter "
                                     "ignores it, so does swand import"))
                continue
            _add_setting(current, Value(key, value, origin))
            continue
        raise ImportSyntaxError(origin, f"syntax error: unexpected {text or kind!r} (settings "
                                "must be indented, sections start in column 0)")
    conf = IpsecConf(setup, conns, cas, lexer.files, notes)
    problems = _check_keywords(conf)
    problems += _resolve_also(conns) + _resolve_also(cas)
    errors = [p for p in problems if p.error]
    conf.notes.extend(p for p in problems if not p.error)
    if errors:
        raise ImportErrors(errors)
    return conf


class ImportErrors(ImportSyntaxError):
    """Several findings that each make starter refuse the file."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].origin, problems[0].message)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def _add_setting(section: ConfSection, value: Value) -> None:
    if value.key == "also":
        if value.value and value.value != "%default":
            section.also.append(value)
        return
    section.settings[value.key] = value


def _check_keywords(conf: IpsecConf) -> list[Problem]:
    out: list[Problem] = []
    sections = [conf.setup, *conf.conns.values(), *conf.cas.values()]
    for sec in sections:
        label = "config setup" if sec.kind == "setup" else f"{sec.kind} {sec.name}"
        for value in [*sec.settings.values(), *sec.also]:
            verdict = keyword_kind(sec.kind, value.key)
            if verdict == "unknown":
                out.append(Problem(value.origin, f"unknown keyword '{value.key}' in {label}"))
            elif verdict == "misplaced":
                out.append(Problem(value.origin, f"keyword '{value.key}' does not belong in "
                                   f"{label}"))
            elif verdict == "obsolete":
                out.append(Problem(value.origin, f"'{value.key}' is obsolete: starter ignores "
                                   "it, nothing to carry over", False))
    return out


def _resolve_also(sections: dict[str, ConfSection]) -> list[Problem]:
    """Linearise `also=` like conf_parser.c: depth first, the last `also=` first, keep the
    last occurrence of each section, `%default` at the end."""
    problems: list[Problem] = []
    default = sections.get("%default")
    if default is not None:
        default.parents = []

    def resolve(sec: ConfSection, stack: list[str]) -> bool:
        stack = [sec.name, *stack]
        chain: list[ConfSection] = []
        ok = True
        for also in reversed(sec.also):
            assert also.value is not None
            parent = sections.get(also.value)
            if parent is None:
                problems.append(Problem(also.origin, f"also={also.value}: no {sec.kind} "
                                        f"'{also.value}'"))
                ok = False
                continue
            if parent.name in stack:
                problems.append(Problem(also.origin, f"also={also.value} in {sec.kind} "
                                        f"'{sec.name}' makes a loop"))
                ok = False
                continue
            if parent.parents is None and not resolve(parent, stack):
                ok = False
                continue
            chain.append(parent)
            chain.extend(parent.parents or [])
        if ok and default is not None and not chain:
            chain.append(default)
        if ok:
            parents: list[ConfSection] = []
            for idx, p in enumerate(chain):
                if all(q.name != p.name for q in chain[idx + 1:]):
                    parents.append(p)
            sec.parents = parents
        return ok

    for sec in sections.values():
        if sec.parents is None:
            resolve(sec, [])
    return problems


# --- ipsec.secrets ------------------------------------------------------------------------

SECRET_TYPES = ("RSA", "ECDSA", "BLISS", "PKCS8", "PKCS12", "P12", "PSK", "EAP", "NTLM",
                "XAUTH", "PIN")
KEY_TYPES = ("RSA", "ECDSA", "BLISS", "PKCS8", "PKCS12", "P12")


@dataclass(frozen=True)
class SecretEntry:
    """One ipsec.secrets entry. For key types `file` is the key file as written and
    `secret` its passphrase (or None); for PSK/EAP/XAUTH/NTLM/PIN `secret` is the
    secret, spelled as swanctl.conf reads it (see _swanctl_secret). `prompt` is
    `%prompt` (asked when loading). Never shown in a repr."""

    kind: str
    selectors: tuple[str, ...]
    origin: Origin
    file: str | None = None
    secret: str | None = field(default=None, repr=False)
    prompt: bool = False
    smartcard: bool = False

    def __repr__(self) -> str:
        return (f"SecretEntry(kind={self.kind!r}, selectors={self.selectors!r}, "
                f"origin={self.origin!r}, file={self.file!r}, prompt={self.prompt})")


def _secret_words(text: str, origin: Origin) -> list[tuple[str, bool]]:
    """Words of an entry's value part: (word, quoted). Quotes may be " or '."""
    out: list[tuple[str, bool]] = []
    pos, n = 0, len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\r\n":
            pos += 1
            continue
        if c == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        if c in "\"'":
            end = text.find(c, pos + 1)
            if end < 0:
                raise ImportSyntaxError(origin, "unterminated quoted secret")
            out.append((text[pos + 1:end], True))
            pos = end + 1
            continue
        end = pos
        while end < n and text[end] not in " \t\r\n#":
            end += 1
        out.append((text[pos:end], False))
        pos = end
    return out


def parse_ipsec_secrets(path: str) -> tuple[list[SecretEntry], list[str]]:
    """The entries of ipsec.secrets and its includes, and the files read. Raises
    ImportSyntaxError naming file:line (never the secret) for what stroke refuses."""
    entries: list[SecretEntry] = []
    files: list[str] = []
    _parse_secrets_file(path, Origin(path, 0), entries, files, [], 0)
    return entries, files


def _split_entries(text: str, path: str) -> Iterator[tuple[int, str]]:
    """(first line, text) per entry: a line that starts in column 0 starts an entry,
    indented lines continue it (comments and blank lines are skipped)."""
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] not in " \t":
            if current:
                yield start, "\n".join(current)
            current, start = [line], number
        elif current:
            current.append(line)
        else:
            raise ImportSyntaxError(Origin(path, number), "indented line before any entry")
    if current:
        yield start, "\n".join(current)


def _parse_secrets_file(path: str, origin: Origin, entries: list[SecretEntry],
                        files: list[str], stack: list[str], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise ImportSyntaxError(origin, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
    real = os.path.realpath(path)
    if real in stack:
        raise ImportSyntaxError(origin, f"include cycle: {path} includes itself")
    files.append(path)
    text = _read_text(path, origin)
    for line, entry in _split_entries(text, path):
        here = Origin(path, line)
        if entry.startswith("include") and entry[7:8] in (" ", "\t"):
            pattern = entry[7:].strip().split("#", 1)[0].strip()
            names = _include(pattern, path, here)
            for name in names:
                _parse_secrets_file(name, here, entries, files, [*stack, real], depth + 1)
            continue
        entries.append(_parse_entry(entry, here))


def _parse_entry(entry: str, here: Origin) -> SecretEntry:
    head, sep, tail = entry.partition(":")
    # a selector may be an IPv6 address: the separator is the ':' followed by blank + type
    while sep:
        type_words = tail.split()
        if type_words and type_words[0].upper() in SECRET_TYPES:
            break
        more_head, sep, tail = tail.partition(":")
        head = f"{head}:{more_head}"
    if not sep:
        raise ImportSyntaxError(here, "entry without ': TYPE' (expected e.g. ': RSA key.pem'"
                                " or 'id : PSK \"secret\"')")
    selectors = tuple(w.strip('"') for w in head.split())
    type_word, _, rest = tail.strip().partition(" ")
    if not rest and "\t" in type_word:
        type_word, _, rest = type_word.partition("\t")
    kind = type_word.upper()
    kind = "PKCS12" if kind == "P12" else kind
    words = _secret_words(rest, here)
    if kind in KEY_TYPES:
        if not words:
            raise ImportSyntaxError(here, f"{kind} entry without a file")
        file, _ = words[0]
        secret = None
        prompt = False
        if len(words) > 1:
            word, quoted = words[1]
            if word == "%prompt" and not quoted:
                prompt = True
            else:
                secret = _swanctl_secret(word, quoted)
        if len(words) > 2:
            raise ImportSyntaxError(here, f"{kind} entry: unexpected words after the "
                                    "passphrase")
        return SecretEntry(kind, selectors, here, file=file, secret=secret, prompt=prompt,
                           smartcard=file.startswith("%smartcard"))
    if kind == "PIN":
        if not words:
            raise ImportSyntaxError(here, "PIN entry without a smartcard and PIN")
        file = words[0][0]
        secret_word = words[1] if len(words) > 1 else ("", False)
        return SecretEntry(kind, selectors, here, file=file, secret=secret_word[0],
                           prompt=secret_word == ("%prompt", False), smartcard=True)
    if len(words) != 1:
        raise ImportSyntaxError(here, f"{kind} entry: expected exactly one secret")
    word, quoted = words[0]
    return SecretEntry(kind, selectors, here, secret=_swanctl_secret(word, quoted),
                       prompt=word == "%prompt" and not quoted)


def _swanctl_secret(word: str, quoted: bool) -> str:
    """The secret as swanctl.conf must spell it. Both read unquoted `0x`/`0s` as hex and
    base64, but ipsec.secrets takes a quoted "0x..." literally and swanctl does not:
    such a literal is written as `0s` + its base64."""
    if quoted and word[:2].lower() in ("0x", "0s"):
        return "0s" + base64.b64encode(word.encode()).decode()
    return word
