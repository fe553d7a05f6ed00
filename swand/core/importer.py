"""ipsec.conf + ipsec.secrets -> swanctl.conf + a swand.toml fragment + a report: the pure
translation behind `swand import`.

The translation follows what starter and charon's stroke plugin (5.9) make of each
setting, not what the keyword's name suggests, because that is what the gateway does
today. The differences that bite when translating by hand:
- ipsec.conf loads a conn only with `auto=add|route|start`; the default is `ignore`.
- IKE SAs *reauthenticate* by default (`reauth=yes`): reauth_time = ikelifetime -
  margintime, no rekeying; swanctl's default is the opposite, so both are written out.
- Lifetimes: ikelifetime 3h, keylife 1h, margintime 9m, rekeyfuzz 100 % are ipsec.conf's
  defaults, not swanctl's: every time is written out.
- `uniqueids=yes` (the default) is `unique = replace` on every connection.
- `dpddelay` does nothing without `dpdaction` (default none).
- `ike=`/`esp=` without `!` append charon's default proposals (`default` in swanctl).
- `rightid` defaults to `right` when that is an address; swanctl's default is %any.
- `%host` / `leftallowany` also accept any address.
- `rightsourceip` ranges become named pools (`<conn>`), `rightdns` their `dns`.

Everything becomes a report line: `mapped` (carried over as is), `note` (carried over;
read it once), `todo` (needs a person: no equivalent, or changed meaning) or `error` (not
imported). Report lines name file:line and never contain a secret.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from swand.core.ipsecconf import (
    KEY_TYPES,
    ConfSection,
    IpsecConf,
    SecretEntry,
    Value,
)
from swand.core.settings import Origin

LEVELS = ("mapped", "note", "todo", "error")

#: ipsec.conf defaults that differ from swanctl's (seconds, percent, count)
IKE_LIFETIME = 10800
CHILD_LIFETIME = 3600
MARGIN = 540
FUZZ = 100
KEYINGTRIES = 3

#: ipsec.d folder -> swanctl folder
IPSEC_D_FOLDERS = {
    "cacerts": "x509ca", "certs": "x509", "private": "private", "aacerts": "x509aa",
    "ocspcerts": "x509ocsp", "acerts": "x509ac", "crls": "x509crl",
}


@dataclass(frozen=True)
class ReportLine:
    level: str
    origin: Origin | None
    message: str

    def __str__(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        return f"{self.level:6} {where}{self.message}"


@dataclass
class Node:
    """A swanctl.conf section being built: entries in order, each a setting
    (key, value, origin) or a subsection."""

    name: str
    origin: Origin | None = None
    settings: dict[str, tuple[str, Origin | None]] = field(default_factory=dict)
    sections: dict[str, Node] = field(default_factory=dict)
    comment: str = ""

    def set(self, key: str, value: str, origin: Origin | None) -> None:
        self.settings[key] = (value, origin)

    def sub(self, name: str, origin: Origin | None = None) -> Node:
        node = self.sections.get(name)
        if node is None:
            node = self.sections[name] = Node(name, origin)
        return node


@dataclass(frozen=True)
class FileCopy:
    """A credential file to copy: from `source` (absolute) to `folder/name`; `key` files
    are written 0600."""

    source: str
    folder: str
    name: str
    origin: Origin | None
    key: bool = False


@dataclass
class ImportResult:
    tree: Node
    toml: dict[str, dict[str, object]]
    report: list[ReportLine]
    copies: list[FileCopy]

    @property
    def needs_person(self) -> bool:
        return any(line.level in ("todo", "error") for line in self.report)

    @property
    def has_secrets(self) -> bool:
        return "secrets" in self.tree.sections


def normalize_dn(dn: str) -> str:
    """A DN as strongSwan prints it (`C=CH, O=x, CN=y`), for comparing subjects."""
    parts = [p.strip() for p in dn.split(",") if p.strip()]
    return ", ".join("=".join(x.strip() for x in p.split("=", 1)) for p in parts)


class _Ctx:
    def __init__(self, ipsec_d: str, ca_files: dict[str, str]) -> None:
        self.ipsec_d = ipsec_d
        #: CA subject (normalize_dn) -> its file in ipsec.d/cacerts
        self.ca_files = ca_files
        self.report: list[ReportLine] = []
        self.copies: dict[tuple[str, str], FileCopy] = {}
        self.toml: dict[str, dict[str, object]] = {}
        self.root = Node("")
        self.pools_by_range: dict[str, str] = {}
        #: this host's addresses (None: unknown), for stroke's left/right swap
        self.local_addresses: Collection[str] | None = None

    def add(self, level: str, origin: Origin | None, message: str) -> None:
        self.report.append(ReportLine(level, origin, message))

    def mapped(self, v: Value, to: str) -> None:
        self.add("mapped", v.origin, f"{v.key}={_show(v)} -> {to}")

    def copy(self, source: str, folder: str, origin: Origin | None, key: bool = False) -> str:
        """Plan copying a credential file; the name it gets in `folder`."""
        name = os.path.basename(source)
        existing = self.copies.get((folder, name))
        if existing is not None and existing.source != source:
            stem, ext = os.path.splitext(name)
            n = 2
            while (folder, f"{stem}-{n}{ext}") in self.copies:
                n += 1
            name = f"{stem}-{n}{ext}"
        self.copies.setdefault((folder, name), FileCopy(source, folder, name, origin, key))
        return name


def _show(v: Value) -> str:
    return v.value if v.value is not None else ""


# --- values -------------------------------------------------------------------------------


_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_time(text: str) -> int | None:
    """ipsec.conf time (`30`, `30s`, `10m`, `3h`, `1d`) in seconds, None if malformed."""
    m = _TIME.match(text)
    if not m:
        return None
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(float(m.group(1)) * factor)


def _yes(v: Value | None, default: bool) -> bool:
    if v is None or v.value is None:
        return default
    return v.value == "yes"


def _split(value: str) -> list[str]:
    """An ipsec.conf comma list. Not `swanctl.split_list`: ipsec.conf is another language
    with its own quoting rules, read by starter's parser, not by swanctl."""
    return [t.strip() for t in value.split(",") if t.strip()]


def _proposals(value: str) -> str:
    """`a,b!` -> `a, b`; without `!` charon's defaults follow (`default`)."""
    strict = value.rstrip().endswith("!")
    items = _split(value.rstrip().rstrip("!"))
    if not strict:
        items.append("default")
    return ", ".join(items)


#: key exchanges strongSwan 6.0 removed (5.9 has them with the ntru/newhope plugins)
_REMOVED_ALGORITHMS = re.compile(r"\b(ntru\d+|newhope\d+)\b")


def is_address(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address (not a network, not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host_list(v: Value, ctx: _Ctx, allow_any: bool) -> str | None:
    """left/right -> the addresses for swanctl, None for %any."""
    out: list[str] = []
    for token in _split(v.value or ""):
        if token in ("%any", "%any4", "%any6", "%defaultroute", "%group"):
            if token == "%any6":
                out.append("%any6")
            elif token == "%defaultroute":
                ctx.add("note", v.origin, f"{v.key}=%defaultroute -> %any (charon picks the "
                        "address by its routes)")
            continue
        if token.startswith("%"):
            token = token[1:]
            allow_any = True
        out.append(token)
    if out and allow_any:
        out += ["0.0.0.0/0", "::/0"]
    return ", ".join(out) if out else None


def _ts(subnets: str | None, protoport: str | None) -> str | None:
    if subnets is None and protoport is None:
        return None
    items = [i[1:] if i.startswith("%dynamic") else i
             for i in (_split(subnets) if subnets else ["dynamic"])]
    if protoport:
        pp = protoport.strip()
        if pp.startswith("%"):
            pp = pp[1:]
        items = [f"{i}[{pp}]" if "[" not in i else i for i in items]
    return ", ".join(items)


# --- the translation ----------------------------------------------------------------------


AUTH_BY = {
    "pubkey": "pubkey", "rsasig": "pubkey", "rsa": "pubkey", "ecdsasig": "pubkey",
    "ecdsa": "pubkey", "secret": "psk", "psk": "psk",
}
SENDCERT = {"always": "always", "yes": "always", "ifasked": "ifasked", "never": "never",
            "no": "never"}
DPD_ACTION = {"clear": "clear", "hold": "trap", "restart": "restart"}
CLOSE_ACTION = {"clear": "clear", "hold": "trap", "restart": "start"}
#: yes/no keywords: (ipsec.conf key, "ike" or "child", swanctl key, ipsec.conf default)
FLAGS = (
    ("aggressive", "ike", "aggressive", False), ("mobike", "ike", "mobike", True),
    ("forceencaps", "ike", "encap", False), ("compress", "child", "ipcomp", False),
    ("installpolicy", "child", "policies", True), ("sha256_96", "child", "sha256_96", False),
)
MODES = {"tunnel": "tunnel", "transport": "transport", "beet": "beet",
         "transport_proxy": "transport", "passthrough": "pass", "pass": "pass",
         "drop": "drop", "reject": "drop"}


class _Conn:
    """Translates one conn: `take(key)` marks a key as handled; what is left over at the
    end is reported, so nothing is dropped silently."""

    def __init__(self, ctx: _Ctx, conf: IpsecConf, sec: ConfSection,
                 values: dict[str, Value]) -> None:
        self.ctx = ctx
        self.conf = conf
        self.sec = sec
        self.values = values
        self.unused = set(values)
        self.name = sec.name
        self.node = ctx.root.sub("connections").sub(self.name, sec.origin)
        self.child = self.node.sub("children").sub(self.name, sec.origin)

    def take(self, key: str) -> Value | None:
        self.unused.discard(key)
        return self.values.get(key)

    def put(self, node: Node, key: str, value: str, v: Value | None, *,
            level: str = "mapped", why: str = "") -> None:
        node.set(key, value, v.origin if v else None)
        if v is not None:
            path = self._path(node)
            text = f"{v.key}={_show(v)} -> {path}{key} = {value}"
            if why:
                text += f" ({why})"
            self.ctx.add(level, v.origin, text)

    def _path(self, node: Node) -> str:
        if node is self.child:
            return f"connections.{self.name}.children.{self.name}."
        if node is self.node:
            return f"connections.{self.name}."
        return f"connections.{self.name}.{node.name}."

    def translate(self) -> None:
        c, ch = self.node, self.child
        v = self.take("keyexchange")
        version = {"ikev1": "1", "ikev2": "2", "ike": "0"}.get(v.value if v and v.value
                                                                   else "ike")
        if version is None and v is not None:
            self.ctx.add("error", v.origin, f"keyexchange={_show(v)}: not ikev1, ikev2 or ike")
            version = "0"
        if v is not None:
            self.put(c, "version", str(version), v)
        ikev1 = version == "1"

        self._addresses()
        self._lifetimes()

        for key, node, out in (("ike", c, "proposals"), ("esp", ch, "esp_proposals"),
                               ("ah", ch, "ah_proposals")):
            v = self.take(key)
            if v and v.value:
                self.put(node, out, _proposals(v.value), v,
                         why="" if v.value.rstrip().endswith("!") else
                         "no '!': charon's default proposals follow, as with stroke")
                gone = sorted({m.group(0) for m in _REMOVED_ALGORITHMS.finditer(v.value)})
                if gone:
                    self.ctx.add("todo", v.origin, f"{key}: {', '.join(gone)} no longer exist "
                                 "in strongSwan 6.0 (charon refuses the whole connection; "
                                 "stroke skipped the proposal): choose another key "
                                 "exchange, e.g. x25519 or mlkem768 on 6.0")
        for key, where, out, default in FLAGS:
            v = self.take(key)
            if v:
                self.put(c if where == "ike" else ch, out,
                         "yes" if _yes(v, default) else "no", v)
        v = self.take("fragmentation")
        if v and v.value:
            self.put(c, "fragmentation", v.value, v)
        v = self.take("ikedscp")
        if v and v.value:
            self.put(c, "dscp", v.value, v)
        v = self.take("keyingtries")
        if v and v.value:
            tries = "0" if v.value == "%forever" else v.value
            self.put(c, "keyingtries", tries, v)
        else:
            self.put(c, "keyingtries", str(KEYINGTRIES), None)

        self._dpd()
        self._unique()

        v = self.take("closeaction")
        if v and v.value and v.value != "none":
            action = CLOSE_ACTION.get(v.value)
            if action is None:
                self.ctx.add("error", v.origin, f"closeaction={v.value}: unknown action")
            else:
                self.put(ch, "close_action", action, v)
        v = self.take("auto")
        if v and v.value in ("route", "start"):
            self.put(ch, "start_action", "trap" if v.value == "route" else "start", v)
        elif v:
            self.ctx.add("mapped", v.origin, f"auto={v.value} -> (swanctl's default: loaded, "
                         "waits for the peer)")

        v = self.take("type")
        mode = MODES.get(v.value or "") if v else "tunnel"
        if v is not None:
            if mode is None:
                self.ctx.add("error", v.origin, f"type={_show(v)}: unknown mode")
            else:
                self.put(ch, "mode", mode, v)
                if v.value == "transport_proxy":
                    self.ctx.add("todo", v.origin, "type=transport_proxy (Mobile IPv6) has no "
                                 "swanctl equivalent; written as transport")
        for key, out in (("reqid", "reqid"), ("replay_window", "replay_window"),
                         ("inactivity", "inactivity"), ("tfc", "tfc_padding")):
            v = self.take(key)
            if v and v.value:
                self.put(ch, out, v.value, v)
        v = self.take("mark")
        if v and v.value:
            self.put(ch, "mark_in", v.value, v)
            self.put(ch, "mark_out", v.value, v)
        for key in ("mark_in", "mark_out"):
            v = self.take(key)
            if v and v.value:
                self.put(ch, key, v.value, v)
        v = self.take("modeconfig")
        if v and v.value:
            self.put(c, "pull", "no" if v.value == "push" else "yes", v)
        for key, out in (("mediation", "mediation"), ("mediated_by", "mediated_by"),
                         ("me_peerid", "mediation_peer")):
            v = self.take(key)
            if v and v.value:
                self.put(c, out, v.value, v)

        self._auth(ikev1)
        self._ends()

        for key in sorted(self.unused):
            v = self.values[key]
            self.ctx.add("todo", v.origin, f"{key}={_show(v)} in conn {self.name}: not carried "
                         "over (no swanctl equivalent known to swand import)")

    # --- parts ------------------------------------------------------------------------

    def _addresses(self) -> None:
        c = self.node
        for side, addrs_key, port_key in (("left", "local_addrs", "local_port"),
                                          ("right", "remote_addrs", "remote_port")):
            v = self.take(side)
            allow = self.take(f"{side}allowany")
            allow_any = _yes(allow, False)
            if v and v.value:
                addrs = _host_list(v, self.ctx, allow_any)
                if addrs:
                    self.put(c, addrs_key, addrs, v,
                             why="'%' prefix or allowany: any address is accepted too"
                             if "0.0.0.0/0" in addrs else "")
                else:
                    self.ctx.mapped(v, f"{addrs_key} = %any (swanctl's default)")
            if allow is not None:
                self.ctx.mapped(allow, f"{addrs_key} (0.0.0.0/0, ::/0 appended)")
            v = self.take(f"{side}ikeport")
            if v and v.value:
                self.put(c, port_key, v.value, v)
        left, right = self.values.get("left"), self.values.get("right")
        if self.ctx.local_addresses is None and left and right and left.value and \
                right.value and not left.value.startswith("%") and \
                not right.value.startswith("%"):
            self.ctx.add("note", left.origin, f"conn {self.name}: left is taken as this host "
                         "(stroke swaps left and right when only right is a local address; "
                         "this host's addresses are unknown: give --local-address)")
        elif self.ctx.local_addresses is not None and left and right and \
                not _is_this_host(left, self.ctx.local_addresses) and \
                not _is_this_host(right, self.ctx.local_addresses) and left.value and \
                is_address(left.value.lstrip("%")):
            self.ctx.add("note", left.origin, f"conn {self.name}: neither left nor right is "
                         "an address of this host; left is taken as this host, as stroke "
                         "does")

    def _lifetimes(self) -> None:
        c, ch = self.node, self.child
        values = {}
        for key, default in (("ikelifetime", IKE_LIFETIME), ("keylife", CHILD_LIFETIME),
                             ("lifetime", None), ("rekeymargin", MARGIN),
                             ("margintime", None)):
            v = self.take(key)
            if v and v.value:
                seconds = parse_time(v.value)
                if seconds is None:
                    self.ctx.add("error", v.origin, f"{key}={v.value}: not a time")
                    continue
                values[key] = (seconds, v)
            elif default is not None:
                values.setdefault(key, (default, None))  # type: ignore[arg-type]
        ike_life, ike_v = values["ikelifetime"]
        child_life, child_v = values.get("lifetime", values["keylife"])
        margin, margin_v = values.get("margintime", values["rekeymargin"])
        v = self.take("rekeyfuzz")
        fuzz = FUZZ
        if v and v.value:
            try:
                fuzz = int(v.value.rstrip("%"))
            except ValueError:
                self.ctx.add("error", v.origin, f"rekeyfuzz={v.value}: not a percentage")
        fuzz_v = v
        rekey = self.take("rekey")
        reauth = self.take("reauth")
        if not _yes(rekey, True):
            assert rekey is not None
            self.put(c, "rekey_time", "0", rekey)
            self.put(c, "reauth_time", "0", rekey)
            self.put(ch, "rekey_time", "0", rekey)
            self.put(ch, "life_time", "0", rekey, why="stroke sends no lifetime with rekey=no")
            if reauth is not None:
                self.ctx.mapped(reauth, "(no effect with rekey=no)")
            for v in (ike_v, child_v, margin_v, fuzz_v):
                if v is not None:
                    self.ctx.add("note", v.origin, f"{v.key}={v.value}: no effect with "
                                 "rekey=no (stroke ignores it)")
            return
        jitter = margin * fuzz // 100
        ike_time = max(ike_life - margin, 0)
        if _yes(reauth, True):
            self.put(c, "reauth_time", f"{ike_time}s", ike_v if ike_v is not None else reauth,
                     why="ipsec.conf reauthenticates by default (reauth=yes)")
            self.put(c, "rekey_time", "0", reauth)
        else:
            self.put(c, "rekey_time", f"{ike_time}s", ike_v if ike_v is not None else reauth)
            self.put(c, "reauth_time", "0", reauth)
        self.put(c, "over_time", f"{margin}s", margin_v)
        self.put(c, "rand_time", f"{jitter}s", fuzz_v)
        self.put(ch, "life_time", f"{child_life}s", child_v)
        self.put(ch, "rekey_time", f"{max(child_life - margin, 0)}s",
                 child_v if child_v is not None else margin_v)
        self.put(ch, "rand_time", f"{jitter}s", fuzz_v)
        for life_key, margin_key, prefix in (("lifebytes", "marginbytes", "bytes"),
                                             ("lifepackets", "marginpackets", "packets")):
            life = self.take(life_key)
            marg = self.take(margin_key)
            if life and life.value:
                total = int(life.value)
                m = int(marg.value) if marg and marg.value else 0
                self.put(ch, f"life_{prefix}", str(total), life)
                self.put(ch, f"rekey_{prefix}", str(max(total - m, 0)), marg or life)
                self.put(ch, f"rand_{prefix}", str(m * fuzz // 100), marg or life)
            elif marg is not None:
                self.ctx.add("note", marg.origin, f"{margin_key} without {life_key}: no effect")

    def _dpd(self) -> None:
        c, ch = self.node, self.child
        action = self.take("dpdaction")
        delay = self.take("dpddelay")
        timeout = self.take("dpdtimeout")
        # starter always sends dpdtimeout (150 s unless set): charon uses it for IKEv1
        self.put(c, "dpd_timeout", timeout.value if timeout and timeout.value else "150s",
                 timeout)
        if action is None or action.value in (None, "none"):
            for v in (delay,):
                if v is not None:
                    self.ctx.add("note", v.origin, f"{v.key}={v.value}: no effect without "
                                 "dpdaction (as with stroke); not carried over")
            if action is not None:
                self.ctx.mapped(action, "(no dead peer detection, swanctl's default)")
            return
        mapped = DPD_ACTION.get(action.value)
        if mapped is None:
            self.ctx.add("error", action.origin, f"dpdaction={action.value}: unknown action")
            return
        self.put(ch, "dpd_action", mapped, action)
        self.put(c, "dpd_delay", delay.value if delay and delay.value else "30s", delay)

    def _unique(self) -> None:
        v = self.conf.setup.settings.get("uniqueids")
        value = v.value if v and v.value else "yes"
        unique = {"yes": "replace", "replace": "replace", "keep": "keep", "never": "never",
                  "no": "no"}.get(value)
        if unique is None:
            self.ctx.add("error", v.origin if v else None, f"uniqueids={value}: unknown")
            return
        self.node.set("unique", unique, v.origin if v else None)

    def _auth(self, ikev1: bool) -> None:
        """authby/leftauth/rightauth/xauth -> local/remote(/2) auth rounds."""
        c = self.node
        authby = self.take("authby")
        xauth = self.take("xauth")
        left_auth = self.take("leftauth")
        right_auth = self.take("rightauth")
        auth = {"local": left_auth.value if left_auth and left_auth.value else None,
                "remote": right_auth.value if right_auth and right_auth.value else None}
        origins = {"local": left_auth, "remote": right_auth}
        by = authby.value if authby and authby.value else "pubkey"
        second: dict[str, str] = {}
        if authby is not None and (auth["local"] is None or auth["remote"] is None):
            first = by.split("|")[0]
            base = AUTH_BY.get(first)
            if first in ("xauthpsk", "xauthrsasig"):
                base = "psk" if first == "xauthpsk" else "pubkey"
                server = xauth is not None and xauth.value == "server"
                second["remote" if server else "local"] = "xauth"
            elif first == "never":
                base = None
            elif base is None:
                self.ctx.add("error", authby.origin, f"authby={by}: unknown method")
            for end in ("local", "remote"):
                if auth[end] is None and base is not None:
                    auth[end] = base
                    origins[end] = authby
            if "|" in by:
                self.ctx.add("todo", authby.origin, f"authby={by}: swanctl takes one method "
                             "per round; the first is used")
        for end in ("local", "remote"):
            v = origins[end]
            node = c.sub(end)
            if auth[end] == "any":
                self.ctx.add("todo", v.origin if v else None, f"{end} auth=any (accept any "
                             "method) has no swanctl equivalent: swanctl needs the method; "
                             "pubkey is used")
                auth[end] = None
                continue
            if auth[end] is not None:
                node.set("auth", auth[end] or "", v.origin if v else None)
                if v is not None:
                    self.ctx.mapped(v, f"connections.{self.name}.{end}.auth = {auth[end]}")
            else:
                node.set("auth", "pubkey", None)
        for end in second:
            c.sub(f"{end}-xauth").set("auth", "xauth", authby.origin if authby else None)
        if xauth is not None:
            side = "remote" if xauth.value == "server" else "local"
            self.ctx.mapped(xauth, f"an XAuth round on the {side} side")
        for side, end in (("left", "local"), ("right", "remote")):
            v = self.take(f"{side}auth2")
            if v and v.value:
                self.put(c.sub(f"{end}2"), "auth", v.value, v)
        # identities of the EAP / XAuth / AAA rounds
        v = self.take("eap_identity")
        if v and v.value:
            eap_end = "remote" if (auth["remote"] or "").startswith("eap") or \
                (self.values.get("rightauth2") and "eap" in (self.values["rightauth2"].value
                                                             or "")) else "local"
            node = c.sub(eap_end)
            if eap_end == "remote" and not (auth["remote"] or "").startswith("eap"):
                node = c.sub("remote2")
            if eap_end == "local" and not (auth["local"] or "").startswith("eap"):
                node = c.sub("local2")
            self.put(node, "eap_id", "%any" if v.value == "%identity" else v.value, v)
        v = self.take("aaa_identity")
        if v and v.value:
            # the AAA server's id belongs to the EAP round: the client's own (local) one
            # when it authenticates with EAP, else the peer's
            end = "local" if (auth["local"] or "").startswith("eap") else "remote"
            self.put(c.sub(end), "aaa_id", v.value, v)
        v = self.take("xauth_identity")
        if v and v.value:
            # the round that does XAuth: the client's own first or second one, else the
            # server's
            rounds = [n for n in ("local", "local2", "local-xauth", "remote", "remote2",
                                  "remote-xauth")
                      if c.sections.get(n) is not None and
                      c.sections[n].settings.get("auth", ("",))[0].startswith("xauth")]
            self.put(c.sub(rounds[0] if rounds else "local2"), "xauth_id", v.value, v)

    def _ends(self) -> None:
        c, ch = self.node, self.child
        strict = self.conf.setup.settings.get("strictcrlpolicy")
        for side, end, ts_key in (("left", "local", "local_ts"),
                                  ("right", "remote", "remote_ts")):
            node = c.sub(end)
            host = self.values.get(side)
            v = self.take(f"{side}id")
            if v and v.value:
                self.put(node, "id", v.value, v)
            elif host and host.value and is_address(host.value) and (
                    end == "remote" or not self.values.get(f"{side}cert")):
                node.set("id", host.value, host.origin)
                self.ctx.add("note", host.origin, f"{side}id unset: the id is the address "
                             f"{host.value}, as with stroke (swanctl's default is "
                             + ("%any)" if end == "remote" else "the address too)"))
            v = self.take(f"{side}id2")
            if v and v.value:
                self.put(c.sub(f"{end}2"), "id", v.value, v)
            for key, out, folder in ((f"{side}cert", "certs", "x509"),
                                     (f"{side}cert2", "certs", "x509")):
                v = self.take(key)
                if v and v.value:
                    target = node if not key.endswith("2") else c.sub(f"{end}2")
                    if any(t.endswith((".asc", ".gpg")) for t in _split(v.value)):
                        self.ctx.add("todo", v.origin, f"{key}: a PGP certificate; swanctl "
                                     "loads X.509 only: issue an X.509 certificate")
                        continue
                    names = [self._cert_file(t, folder, v) for t in _split(v.value)]
                    if end == "remote":
                        self.ctx.add("note", v.origin, f"{key}: the peer's certificate, "
                                     "trusted as is")
                    self.put(target, out, ", ".join(names), v)
            for key in (f"{side}sigkey", f"{side}rsasigkey"):
                v = self.take(key)
                if v and v.value:
                    if v.value == "%cert":
                        self.ctx.mapped(v, "(the certificate's key, swanctl's default)")
                        continue
                    if v.value.startswith(("0x", "0s", "dns:", "ssh:")):
                        self.ctx.add("todo", v.origin, f"{key}: an inline key; write it to "
                                     f"pubkey/ and name it in {end} {{ pubkeys = ... }}")
                        continue
                    self.put(node, "pubkeys", self._cert_file(v.value, "pubkey", v), v)
            for key, target in ((f"{side}ca", node), (f"{side}ca2", c.sub(f"{end}2"))):
                v = self.take(key)
                if v and v.value:
                    if v.value == "%same":
                        self.ctx.add("todo", v.origin, f"{key}=%same: name the CA explicitly")
                        continue
                    found = self.ctx.ca_files.get(normalize_dn(v.value))
                    if found is None:
                        self.ctx.add("todo", v.origin, f"{key}: no CA certificate with this "
                                     "subject in ipsec.d/cacerts; stroke drops such a "
                                     "constraint (any CA is accepted), so does the import: "
                                     "put the CA into x509ca/ and name it in cacerts")
                        continue
                    name = self.ctx.copy(found, "x509ca", v.origin)
                    self.put(target, "cacerts", name, v)
            v = self.take(f"{side}sendcert")
            if v and v.value:
                send = SENDCERT.get(v.value)
                if send is None:
                    self.ctx.add("error", v.origin, f"{side}sendcert={v.value}: unknown")
                elif end == "local":
                    self.put(c, "send_cert", send, v)
                else:
                    self.ctx.add("note", v.origin, f"{side}sendcert: the peer's setting, "
                                 "nothing to carry over")
            v = self.take(f"{side}certpolicy")
            if v and v.value:
                self.put(node, "cert_policy", ", ".join(v.value.split()), v)
            for key in (f"{side}groups", f"{side}groups2"):
                v = self.take(key)
                if v and v.value:
                    target = node if not key.endswith("2") else c.sub(f"{end}2")
                    if end == "remote":
                        self.put(target, "groups", v.value, v)
                    else:
                        self.ctx.add("note", v.origin, f"{key}: groups of this host, no "
                                     "effect (stroke ignores it too)")
            if end == "remote" and strict is not None and strict.value in ("yes", "ifuri"):
                node.set("revocation", "strict" if strict.value == "yes" else "ifuri",
                         strict.origin)
            # traffic selectors
            subnet = self.take(f"{side}subnet")
            protoport = self.take(f"{side}protoport")
            ts = _ts(subnet.value if subnet else None,
                     protoport.value if protoport else None)
            if ts is not None:
                ch.set(ts_key, ts, (subnet or protoport).origin)  # type: ignore[union-attr]
                for v in (subnet, protoport):
                    if v is not None:
                        self.ctx.mapped(v, f"connections.{self.name}.children.{self.name}."
                                        f"{ts_key} = {ts}")
            self._sourceip(side, end)
            self._firewall(side)
        # stroke gives the local second round the first round's identity (unless leftid2)
        for end in ("local",):
            first = c.sections.get(end)
            first_id = first.settings.get("id") if first is not None else None
            for name, node in c.sections.items():
                if name != end and name.startswith(end) and "auth" in node.settings and \
                        "id" not in node.settings and first_id is not None:
                    node.set("id", *first_id)
        for name in [n for n, node in c.sections.items()
                     if not node.settings and not node.sections]:
            del c.sections[name]

    def _cert_file(self, token: str, folder: str, v: Value) -> str:
        base = os.path.join(self.ctx.ipsec_d, "certs")
        path = token if os.path.isabs(token) else os.path.join(base, token)
        return self.ctx.copy(path, folder, v.origin)

    def _sourceip(self, side: str, end: str) -> None:
        c = self.node
        v = self.take(f"{side}sourceip")
        dns = self.take(f"{side}dns")
        if v and v.value:
            tokens = _split(v.value)
            if end == "local":
                vips = []
                for t in tokens:
                    if t in ("%config", "%cfg", "%modeconfig", "%modecfg", "%config4"):
                        vips.append("0.0.0.0")
                    elif t == "%config6":
                        vips.append("::")
                    elif is_address(t):
                        vips.append(t)
                    else:
                        self.ctx.add("error", v.origin, f"{side}sourceip={t}: not an address "
                                     "or %config")
                self.put(c, "vips", ", ".join(vips), v)
            else:
                pools = []
                for t in tokens:
                    if t in ("%config", "%cfg", "%modeconfig", "%modecfg", "%config4",
                             "%config6"):
                        self.ctx.add("note", v.origin, f"{side}sourceip={t}: the peer picks "
                                     "its own virtual IP; nothing to carry over")
                        continue
                    if t.startswith("%"):
                        pools.append(t[1:])
                        self.ctx.add("note", v.origin, f"{side}sourceip={t}: pool '{t[1:]}' "
                                     "must exist (swanctl pools, attr-sql, dhcp or radius "
                                     "plugin)")
                        continue
                    pools.append(self._pool(t, v, dns))
                if pools:
                    self.put(c, "pools", ", ".join(pools), v)
        if dns and dns.value:
            if end == "remote" and v and v.value and any(
                    not t.startswith("%") for t in _split(v.value)):
                self.ctx.mapped(dns, "dns of the connection's pool(s)")
            elif end == "local":
                self.ctx.add("note", dns.origin, f"{side}dns: charon asks for DNS servers "
                             "with every virtual IP request; nothing to carry over")
            else:
                self.ctx.add("todo", dns.origin, f"{side}dns without an address pool: add a "
                             "swanctl pool with these dns servers (or use the attr plugin)")

    def _pool(self, text: str, v: Value, dns: Value | None) -> str:
        try:
            if "-" in text:
                lo, hi = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
                addrs = f"{lo}-{hi}"
            elif "/" in text:
                addrs = str(ipaddress.ip_network(text, strict=False))
                addrs = text if addrs != text else addrs
            else:
                addr = ipaddress.ip_address(text)
                addrs = f"{addr}/{addr.max_prefixlen}"
        except ValueError:
            self.ctx.add("error", v.origin, f"{v.key}={text}: not an address, range or subnet")
            return self.name
        dns_value = ", ".join(_split(dns.value)) if dns and dns.value else ""
        key = f"{addrs}|{dns_value}"
        name = self.ctx.pools_by_range.get(key)
        if name is None:
            name = self.name if not any(n == self.name for n in
                                        self.ctx.pools_by_range.values()) \
                else f"{self.name}_{len(self.ctx.pools_by_range)}"
            self.ctx.pools_by_range[key] = name
            pool = self.ctx.root.sub("pools").sub(name, v.origin)
            pool.set("addrs", addrs, v.origin)
            if dns_value and dns is not None:
                pool.set("dns", dns_value, dns.origin)
        return name

    def _firewall(self, side: str) -> None:
        fw = self.take(f"{side}firewall")
        hostaccess = self.take(f"{side}hostaccess")
        updown = self.take(f"{side}updown")
        if fw is not None and _yes(fw, False):
            if updown is not None and updown.value:
                self.ctx.add("error", fw.origin, f"cannot have both {side}firewall and "
                             f"{side}updown (starter refuses this)")
            section = self.ctx.toml.setdefault("firewall", {})
            section["enabled"] = True
            section["forward_rules"] = True
            self.ctx.add("mapped", fw.origin, f"{side}firewall=yes -> swand.toml [firewall] "
                         "enabled = true, forward_rules = true (swand's own chains instead "
                         "of _updown's iptables rules)")
        elif fw is not None:
            self.ctx.mapped(fw, "(no firewall rules, nothing to write)")
        if hostaccess is not None:
            if _yes(hostaccess, False):
                self.put(self.child, "hostaccess", "yes", hostaccess, level="note",
                         why="the updown script's variable; swand's forward rules do not "
                         "use it")
            else:
                self.ctx.mapped(hostaccess, "(off, the default)")
        if updown is not None and updown.value:
            self.put(self.child, "updown", updown.value, updown, level="todo",
                     why="the script runs as before; check it is on this host and does not "
                     "fight swand's firewall")


def _ike_key(node: Node) -> str:
    """A connection's IKE part (everything but its children), values only."""
    def walk(n: Node) -> object:
        return (sorted((k, v) for k, (v, _) in n.settings.items()),
                sorted((name, walk(sub)) for name, sub in n.sections.items()
                       if name != "children"))
    return repr(walk(node))


def _merge_shared_ike(ctx: _Ctx) -> None:
    """stroke adds a conn whose IKE and peer settings equal an earlier conn's as a child
    of that earlier conn (one IKE SA carries both); swanctl would negotiate two IKE SAs.
    Do what stroke does."""
    conns = ctx.root.sections.get("connections")
    if conns is None:
        return
    first_by_key: dict[str, Node] = {}
    for name, node in list(conns.sections.items()):
        key = _ike_key(node)
        first = first_by_key.setdefault(key, node)
        if first is node:
            continue
        for child_name, child in node.sections.get("children", Node("")).sections.items():
            first.sub("children").sections[child_name] = child
        del conns.sections[name]
        ctx.add("note", node.origin, f"conn {name} has the same IKE settings as conn "
                f"{first.name}: stroke runs it as a child of {first.name}, and so does the "
                f"import (connections.{first.name}.children.{name})")


def _setup(ctx: _Ctx, conf: IpsecConf) -> None:
    for key, v in conf.setup.settings.items():
        if v.value is None:
            continue
        if key == "uniqueids":
            ctx.mapped(v, "unique on every connection")
        elif key == "strictcrlpolicy":
            if v.value in ("yes", "ifuri"):
                ctx.mapped(v, "revocation on every connection's remote side")
            else:
                ctx.mapped(v, "(relaxed, swanctl's default)")
        elif key == "charondebug":
            ctx.add("todo", v.origin, "charondebug: log levels live in strongswan.conf "
                    "(charon.filelog/syslog ... default/ike/cfg = N); not written")
        elif key == "cachecrls":
            ctx.add("todo", v.origin, "cachecrls: strongswan.conf charon.cache_crls; not "
                    "written")
        elif key.startswith("pkcs11"):
            ctx.add("todo", v.origin, f"{key}: strongswan.conf libstrongswan.plugins.pkcs11 "
                    "modules; not written")
        else:
            ctx.add("note", v.origin, f"{key}: obsolete, ignored by starter too")


def _cas(ctx: _Ctx, conf: IpsecConf) -> None:
    loaded = {ca.name: values for ca, values in conf.loaded(conf.cas)}
    for ca in conf.cas.values():
        if ca.name == "%default":
            continue
        if ca.name not in loaded:
            for v in conf.effective(ca).values():
                ctx.add("note", v.origin, f"{v.key} in ca {ca.name}: not loaded by starter "
                        "(auto is not add); not carried over")
            continue
        values = loaded[ca.name]
        node = ctx.root.sub("authorities").sub(ca.name, ca.origin)
        for key, v in values.items():
            if key == "auto":
                ctx.mapped(v, "(authorities are always loaded)")
            elif key == "cacert" and v.value:
                path = v.value if os.path.isabs(v.value) else os.path.join(
                    ctx.ipsec_d, "cacerts", v.value)
                node.set("cacert", ctx.copy(path, "x509ca", v.origin), v.origin)
                ctx.mapped(v, f"authorities.{ca.name}.cacert")
            elif key in ("crluri", "crluri1", "crluri2"):
                _append(node, "crl_uris", v)
                ctx.mapped(v, f"authorities.{ca.name}.crl_uris")
            elif key in ("ocspuri", "ocspuri1", "ocspuri2"):
                _append(node, "ocsp_uris", v)
                ctx.mapped(v, f"authorities.{ca.name}.ocsp_uris")
            elif key == "certuribase":
                node.set("cert_uri_base", v.value or "", v.origin)
                ctx.mapped(v, f"authorities.{ca.name}.cert_uri_base")
            else:
                ctx.add("note", v.origin, f"{key} in ca {ca.name}: obsolete, ignored")


def _append(node: Node, key: str, v: Value) -> None:
    old = node.settings.get(key)
    value = v.value or ""
    node.set(key, f"{old[0]}, {value}" if old else value, v.origin)


def _secrets(ctx: _Ctx, entries: Iterable[SecretEntry]) -> None:
    counters: dict[str, int] = {}
    for e in entries:
        where = e.origin
        sel = ", ".join(e.selectors) or "any id"
        if e.kind in KEY_TYPES:
            assert e.file is not None
            if e.smartcard:
                ctx.add("todo", where, f"{e.kind} {e.file}: a smartcard key; configure the "
                        "pkcs11 plugin and a swanctl `token` secret")
                continue
            if e.kind == "BLISS":
                ctx.add("todo", where, "BLISS key: charon 6.0 dropped BLISS; copied to "
                        "private/ for 5.9")
            folder = "pkcs12" if e.kind == "PKCS12" else "private"
            path = e.file if os.path.isabs(e.file) else os.path.join(ctx.ipsec_d, "private",
                                                                       e.file)
            name = ctx.copy(path, folder, where, key=True)
            ctx.add("mapped", where, f"{e.kind} {e.file} -> {folder}/{name}")
            if e.prompt:
                ctx.add("todo", where, f"{e.kind} {e.file}: passphrase %prompt; swand loads "
                        f"without a terminal: add secrets {{ {folder}-N {{ file = {name} "
                        "secret = ... }} }} or decrypt the key")
            elif e.secret is not None:
                kind = "pkcs12" if e.kind == "PKCS12" else "private"
                n = counters[kind] = counters.get(kind, 0) + 1
                node = ctx.root.sub("secrets").sub(f"{kind}-import{n}", where)
                node.set("file", name, where)
                node.set("secret", e.secret, where)
                ctx.add("mapped", where, f"{e.kind} passphrase -> secrets.{kind}-import{n}")
            if e.selectors:
                ctx.add("note", where, f"{e.kind}: selectors ({sel}) are ignored for keys, "
                        "by stroke and swanctl alike")
            continue
        if e.kind == "PIN":
            ctx.add("todo", where, "PIN: smartcard PINs become swanctl `token` secrets "
                    "(handle, slot, module, pin); write it by hand")
            continue
        kind = {"PSK": "ike", "EAP": "eap", "XAUTH": "xauth", "NTLM": "ntlm"}[e.kind]
        if e.prompt:
            ctx.add("todo", where, f"{e.kind} for {sel}: %prompt cannot be carried over; put "
                    "the secret into swanctl.conf")
            continue
        n = counters[kind] = counters.get(kind, 0) + 1
        node = ctx.root.sub("secrets").sub(f"{kind}-import{n}", where)
        for i, selector in enumerate(e.selectors, 1):
            node.set(f"id-{i}" if len(e.selectors) > 1 else "id", selector, where)
        node.set("secret", e.secret or "", where)
        ctx.add("mapped", where, f"{e.kind} for {sel} -> secrets.{kind}-import{n}")
        if e.kind == "NTLM":
            ctx.add("note", where, "NTLM secret: used by eap-mschapv2 as a hash, as before")


def _is_this_host(v: Value | None, local: Collection[str]) -> bool:
    """Whether a left/right value names this host: %defaultroute (starter resolves it to
    this host's address) or one of `local` (hostnames are not resolved)."""
    if v is None or not v.value:
        return False
    for token in _split(v.value):
        if token == "%defaultroute":
            return True
        token = token.lstrip("%")
        with contextlib.suppress(ValueError):
            if any(ipaddress.ip_address(token) == ipaddress.ip_address(a) for a in local):
                return True
    return False


def _right_is_this_host(values: dict[str, Value], local: Collection[str]) -> bool:
    """stroke's rule: the ends are swapped when right is a local address and left is
    not."""
    return _is_this_host(values.get("right"), local) and \
        not _is_this_host(values.get("left"), local)


def _swapped(values: dict[str, Value]) -> dict[str, Value]:
    """left* <-> right* (each Value keeps the key as written, for the report)."""
    out: dict[str, Value] = {}
    for key, v in values.items():
        if key.startswith("left"):
            key = "right" + key[4:]
        elif key.startswith("right"):
            key = "left" + key[5:]
        out[key] = v
    return dict(sorted(out.items()))


def translate(conf: IpsecConf, secrets: list[SecretEntry], ipsec_d: str,
              ipsec_d_files: dict[str, list[str]] | None = None,
              ca_subjects: dict[str, str] | None = None,
              local_addresses: Collection[str] | None = None) -> ImportResult:
    """The swanctl tree, swand.toml fragment, report and files to copy for a parsed
    ipsec.conf and ipsec.secrets. `ipsec_d_files` lists the files of ipsec.d's folders
    (folder name -> names) that stroke loads wholesale (cacerts, crls, ...);
    `ca_subjects` maps the subject of each CA certificate there (as strongSwan prints
    it) to its path, for leftca/rightca. `local_addresses` are the addresses of the host
    the result is for: a conn whose right is one of them (and left not) has its ends
    swapped, as stroke does; None: unknown, left is this host."""
    ctx = _Ctx(ipsec_d, {normalize_dn(k): v for k, v in (ca_subjects or {}).items()})
    for note in conf.notes:
        ctx.add("note", note.origin, note.message)
    ctx.local_addresses = local_addresses
    _setup(ctx, conf)
    loaded = set()
    for conn, values in conf.loaded(conf.conns):
        loaded.add(conn.name)
        if local_addresses is not None and _right_is_this_host(values, local_addresses):
            values = _swapped(values)
            where = values["left"].origin
            ctx.add("mapped", where, f"conn {conn.name}: right={_show(values['left'])} is "
                    "this host and left is not: left* and right* swapped, as stroke does "
                    "(swanctl's local is always this host)")
        _Conn(ctx, conf, conn, values).translate()
    _merge_shared_ike(ctx)
    for conn in conf.conns.values():
        if conn.name == "%default" or conn.name in loaded:
            continue
        ctx.add("note", conn.origin, f"conn {conn.name}: auto=ignore (the default), starter "
                "does not load it; not carried over")
    _cas(ctx, conf)
    _secrets(ctx, secrets)
    for folder, names in sorted((ipsec_d_files or {}).items()):
        target = IPSEC_D_FOLDERS.get(folder)
        if target is None or folder in ("certs", "private"):
            continue
        for name in names:
            ctx.copy(os.path.join(ipsec_d, folder, name), target, None)
            ctx.add("mapped", None, f"{ipsec_d}/{folder}/{name} -> {target}/ (stroke loads "
                    "every file there, so does swanctl)")
    return ImportResult(ctx.root, ctx.toml, ctx.report, list(ctx.copies.values()))


# --- rendering ----------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@%*,+\-\[\] ]*$")


def _quote(value: str) -> str:
    if value and _PLAIN.match(value) and value == value.strip() and "  " not in value:
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_swanctl(tree: Node, header: str = "") -> str:
    """swanctl.conf text; each setting followed by a comment naming its source line."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    if lines:
        lines.append("")

    def walk(node: Node, depth: int) -> None:
        pad = "    " * depth
        for key, (value, origin) in node.settings.items():
            text = f"{pad}{key} = {_quote(value)}"
            if origin is not None:
                text += f"  # {origin}"
            lines.append(text)
        for sub in node.sections.values():
            head = f"{pad}{sub.name} {{"
            if sub.origin is not None:
                head += f"  # {sub.origin}"
            lines.append(head)
            walk(sub, depth + 1)
            lines.append(f"{pad}}}")

    walk(tree, 0)
    return "\n".join(lines) + "\n"


def render_toml(toml: dict[str, dict[str, object]]) -> str:
    out = ["# swand.toml fragment written by `swand import`: merge into /etc/swand/swand.toml"]
    for section, values in toml.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                out.append(f"{key} = {'true' if value else 'false'}")
            else:
                out.append(f"{key} = {value!r}")
    return "\n".join(out) + "\n"
