"""strongSwan proposal strings (`aes256gcm16-prfsha384-ecp384`): keywords and parsing (pure).

One table of charon 5.9's keywords serves `swand check` (is this proposal valid, could
Windows negotiate it?) and `swand client add` (which one suite does each platform offer?),
so the two can never give different answers for the same text. A parsed `Proposal` keeps
the tokens as written (for findings) and exposes each algorithm kind in canonical names
(`aes` -> `aes128`, `aes256gcm` -> `aes256gcm16`, `prfsha384` -> `sha384`,
`x25519` -> `curve25519`) for the platform tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ENCR, INTEG, PRF, KE, ESN = "encr", "integ", "prf", "ke", "esn"

class ProposalError(ValueError):
    """A proposal charon would reject; the message names the proposal and the reason."""


def _keyword_table() -> dict[str, tuple[str, bool]]:
    """strongSwan 5.9's proposal keywords -> (transform type, is AEAD)."""
    table: dict[str, tuple[str, bool]] = {}
    for k in ("null", "des", "3des", "aes", "otpcbc", "cast128", "chacha20poly1305compat"):
        table[k] = (ENCR, k.startswith("chacha"))
    table["chacha20poly1305"] = (ENCR, True)
    for bits in ("128", "192", "256"):
        table[f"aes{bits}"] = (ENCR, False)
        table[f"aes{bits}ctr"] = (ENCR, False)
        table[f"aes{bits}gmac"] = (ENCR, False)
        for mode in ("ccm", "gcm"):
            table[f"aes{bits}{mode}"] = (ENCR, True)
            for icv in ("8", "64", "12", "96", "16", "128"):
                table[f"aes{bits}{mode}{icv}"] = (ENCR, True)
        for family in ("blowfish", "camellia", "serpent", "twofish"):
            table[f"{family}{bits}"] = (ENCR, False)
        table[f"camellia{bits}ctr"] = (ENCR, False)
        for icv in ("8", "64", "12", "96", "16", "128"):
            table[f"camellia{bits}ccm{icv}"] = (ENCR, True)
    for family in ("blowfish", "camellia", "serpent", "twofish"):
        table[family] = (ENCR, False)
    for k in ("sha", "sha1", "sha1_160", "sha256", "sha2_256", "sha256_96", "sha2_256_96",
              "sha384", "sha2_384", "sha512", "sha2_512", "md5", "md5_128", "aesxcbc",
              "camelliaxcbc", "aescmac"):
        table[k] = (INTEG, False)
    for k in ("prfsha1", "prfsha256", "prfsha384", "prfsha512", "prfmd5", "prfaesxcbc",
              "prfcamelliaxcbc", "prfaescmac"):
        table[k] = (PRF, False)
    for k in ("none", "modpnone", "modpnull", "modp768", "modp1024", "modp1536", "modp2048",
              "modp3072", "modp4096", "modp6144", "modp8192", "ecp192", "ecp224", "ecp256",
              "ecp384", "ecp521", "modp1024s160", "modp2048s224", "modp2048s256",
              "ecp224bp", "ecp256bp", "ecp384bp", "ecp512bp", "curve25519", "x25519",
              "curve448", "x448", "ntru112", "ntru128", "ntru192", "ntru256", "newhope128"):
        table[k] = (KE, False)
    table["esn"] = (ESN, False)
    table["noesn"] = (ESN, False)
    return table


KEYWORDS = _keyword_table()
#: "no key exchange": valid in ESP (no PFS), never a group of its own
NO_KE = frozenset({"none", "modpnone", "modpnull"})


def _canonical_table() -> dict[str, str]:
    """Aliases -> the one name the platform tables use."""
    names = {"aes": "aes128", "sha": "sha1", "sha2_256": "sha256", "sha2_256_96": "sha256_96",
             "sha2_384": "sha384", "sha2_512": "sha512", "x25519": "curve25519",
             "x448": "curve448"}
    for bits in (128, 192, 256):
        for icv, canon in (("8", "8"), ("64", "8"), ("12", "12"), ("96", "12"),
                           ("16", "16"), ("128", "16"), ("", "16")):
            names[f"aes{bits}gcm{icv}"] = f"aes{bits}gcm{canon}"
            names[f"aes{bits}ccm{icv}"] = f"aes{bits}ccm{canon}"
            if icv:
                names[f"camellia{bits}ccm{icv}"] = f"camellia{bits}ccm{canon}"
    return names


_CANONICAL = _canonical_table()


def canonical(token: str) -> str:
    """The canonical name of a keyword; a PRF loses its `prf` prefix (`prfsha384` ->
    `sha384`), so it compares with integrity names."""
    if KEYWORDS.get(token, ("", False))[0] == PRF:
        return token[3:]
    return _CANONICAL.get(token, token)


def is_aead(encr: str) -> bool:
    """AES-GCM/CCM and ChaCha20-Poly1305 bring their own integrity."""
    return KEYWORDS.get(encr, ("", False))[1] or "gcm" in encr or "ccm" in encr


#: strongSwan 6.0's additional key exchanges (RFC 9370) and ML-KEM
_CHARON6_KE = re.compile(r"^(?:ke[1-7]_)?(?:mlkem(?:512|768|1024))$|^ke[1-7]_(?P<group>\w+)$")


def is_charon6_keyword(token: str) -> bool:
    """`ke1_ecp384`, `mlkem768`, `ke2_mlkem1024`: valid for charon 6.0, unknown to 5.9."""
    m = _CHARON6_KE.match(token)
    if not m:
        return False
    group = m.group("group")
    return group is None or (group in KEYWORDS and KEYWORDS[group][0] == KE) or \
        group.startswith("mlkem")


#: strongSwan 5.9's built-in proposals, used where swanctl.conf says `default` (or nothing)
DEFAULT_IKE = (
    "aes128-aes192-aes256-sha256-sha384-sha512-sha1-prfsha256-prfsha384-prfsha512-prfsha1-"
    "curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
    "aes128gcm16-aes192gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-"
    "prfsha1-curve25519-ecp256-ecp384-ecp521-modp3072-modp4096-modp6144-modp8192-modp2048",
)
DEFAULT_ESP = ("aes128gcm16-aes256gcm16-chacha20poly1305", "aes128-aes256-sha256-sha1")


@dataclass(frozen=True)
class Proposal:
    """One proposal as written (`tokens`, lower case), with each kind in canonical names."""

    text: str
    tokens: tuple[str, ...]

    def of(self, kind: str) -> list[str]:
        """The tokens of one kind, as written."""
        return [t for t in self.tokens if KEYWORDS.get(t, ("", False))[0] == kind]

    def _canon(self, kind: str) -> tuple[str, ...]:
        return tuple(canonical(t) for t in self.of(kind))

    @property
    def encryption(self) -> tuple[str, ...]:
        return self._canon(ENCR)

    @property
    def integrity(self) -> tuple[str, ...]:
        return self._canon(INTEG)

    @property
    def prf(self) -> tuple[str, ...]:
        return self._canon(PRF)

    @property
    def dh(self) -> tuple[str, ...]:
        """The key exchange groups; `none`/`modpnone` (no PFS) is no group."""
        return tuple(canonical(t) for t in self.of(KE) if t not in NO_KE)

    @property
    def esn(self) -> tuple[str, ...]:
        return self._canon(ESN)

    @property
    def prfs(self) -> tuple[str, ...]:
        """The PRFs charon uses: explicit ones, else one per integrity algorithm."""
        if self.prf:
            return self.prf
        return tuple(dict.fromkeys(i.split("_")[0] for i in self.integrity))

    @property
    def aead(self) -> bool:
        return any(KEYWORDS[t][1] for t in self.of(ENCR))

    @property
    def is_default(self) -> bool:
        return self.tokens == ("default",)

    def problem(self, kind: str) -> str | None:
        """Why charon would reject this proposal ("invalid value for: proposals"), or
        None. `kind` is "ike", "esp" or "ah". Rules checked against charon 5.9.8; charon
        6.0's keywords are accepted here (`swand check` warns about them separately)."""
        if self.is_default:
            return None
        unknown = [t for t in self.tokens if t not in KEYWORDS and not is_charon6_keyword(t)]
        if unknown:
            return f"unknown algorithm keyword{'s' if len(unknown) > 1 else ''} " + \
                ", ".join(repr(t) for t in unknown)
        encr = self.of(ENCR)
        if kind == "ah":
            return None if self.of(INTEG) else "an AH proposal needs an integrity algorithm"
        if not encr:
            return "no encryption algorithm"
        aead = [t for t in encr if KEYWORDS[t][1]]
        if aead and len(aead) != len(encr):
            return "mixes AEAD (GCM/CCM/ChaCha20) and non-AEAD encryption in one proposal"
        if kind == "ike":
            if not [t for t in self.of(KE) if t not in NO_KE] and not any(
                    t.startswith("mlkem") for t in self.tokens):
                return "an IKE proposal needs a key exchange (DH) group, e.g. ecp384"
            if aead and not (self.of(PRF) or self.of(INTEG)):
                return "an AEAD IKE proposal needs a PRF, e.g. prfsha384"
            if not aead and not self.of(INTEG):
                return "a non-AEAD IKE proposal needs an integrity algorithm, e.g. sha384"
        return None

    def without_charon6(self) -> Proposal:
        """The proposal as charon 5.9 would read it, without 6.0's additional exchanges."""
        tokens = tuple(t for t in self.tokens if not is_charon6_keyword(t))
        return Proposal("-".join(tokens), tokens)


def tokenize(text: str) -> Proposal:
    """Split one proposal into its tokens, as written. Nothing is validated (see
    `Proposal.problem`): ipsec.conf's strict `!` is no keyword swanctl.conf knows, so
    `ecp384!` stays a token charon rejects."""
    body = text.strip().lower()
    return Proposal(text, tuple(t.strip() for t in body.split("-") if t.strip()))


def parse_proposal(text: str, kind: str) -> Proposal:
    """One proposal charon 5.9 accepts, else ProposalError naming it and why."""
    p = tokenize(text)
    if p.is_default:
        raise ProposalError(f"{kind.upper()} proposal {text!r}: 'default' is a list, "
                            "not one proposal")
    problem = p.problem(kind)
    if problem is None:
        newer = [t for t in p.tokens if is_charon6_keyword(t)]
        if newer:
            problem = f"unknown algorithm keyword {newer[0]!r} (charon 6.0 only)"
    if problem is not None:
        raise ProposalError(f"{kind.upper()} proposal {text!r}: {problem}")
    return p


def parse_proposals(values: Iterable[str], kind: str) -> tuple[Proposal, ...]:
    """A swanctl `proposals` / `esp_proposals` list; `default` expands to charon's."""
    out: list[Proposal] = []
    for value in values:
        if value.strip().lower() == "default":
            defaults = DEFAULT_IKE if kind == "ike" else DEFAULT_ESP
            out.extend(parse_proposal(p, kind) for p in defaults)
        else:
            out.append(parse_proposal(value, kind))
    return tuple(out)
