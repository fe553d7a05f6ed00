"""The load plan: desired state vs charon's names and swand's record -> ordered steps;
and the executor's rules (gating, quiet retries) against a fake charon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swand.adapters.vici import ViciCommandError
from swand.core.loadplan import LoadRecord, Observed, plan
from swand.core.settings import parse_text
from swand.core.swanctl import CredentialSource, DesiredState, Item, conn_children, translate
from swand.runtime.loader import ConfigLoader

DIR = "/etc/swanctl"
BASE = """
connections {
    rw {
        pools = pool4
        local { certs = gw.pem }
        children { rw { local_ts = 0.0.0.0/0 } }
    }
    site { children { a { } b { } } }
}
pools { pool4 { addrs = 10.8.0.128/25 } }
authorities { ca { cacert = ca.pem } }
secrets { ike-1 { secret = s3cret } }
"""
FOLDERS = {"x509ca": (("ca.pem", b"CA"),), "private": (("gw.pem", b"KEY"),)}
FILES = {f"{DIR}/x509/gw.pem": b"GW", f"{DIR}/x509ca/ca.pem": b"CA"}


def desired(text: str = BASE, folders: dict | None = None) -> DesiredState:
    src = CredentialSource(DIR, FOLDERS if folders is None else folders, FILES, {})
    state, _ = translate(parse_text(text), src)
    return state


def loaded(state: DesiredState, key_ids: dict[str, str] | None = None
           ) -> tuple[Observed, LoadRecord]:
    """What charon and the record look like after swand loaded `state`."""
    ids = key_ids if key_ids is not None else {n: f"id-{n}" for n in state.keys}
    observed = Observed(conns=frozenset(state.conns), pools=frozenset(state.pools),
                        authorities=frozenset(state.authorities),
                        key_ids=frozenset(ids.values()), shared_ids=frozenset(state.shared))
    record = LoadRecord({(i.kind, i.name): i.digest for i in state.items()}, ids,
                        {n: conn_children(i) for n, i in state.conns.items()})
    return observed, record


def test_fresh_charon_gets_everything_in_swanctl_order() -> None:
    steps = plan(desired(), Observed(), LoadRecord()).steps
    assert [(s.action, s.kind, s.name) for s in steps] == [
        ("load", "cert", "x509ca/ca.pem"),
        ("load", "key", "private/gw.pem"),
        ("load", "shared", "ike-1"),
        ("load", "authority", "ca"),
        ("load", "pool", "pool4"),
        ("load", "conn", "rw"),
        ("load", "conn", "site"),
    ]


def test_unchanged_reload_is_an_empty_plan() -> None:
    state = desired()
    observed, record = loaded(state)
    again = desired()  # parsed anew: same digests
    assert not plan(again, observed, record)
    assert plan(again, observed, record).actions() == []


def test_full_reloads_everything_despite_the_record() -> None:
    state = desired()
    observed, record = loaded(state)
    steps = plan(state, observed, record, full=True).steps
    assert sum(s.action == "load" for s in steps) == 7


def test_changed_added_removed_connections() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(BASE.replace("site { children { a { } b { } } }",
                               "new { version = 2 }")
                  .replace("pools = pool4", "pools = pool4\n        mobike = no"))
    steps = [(s.action, s.kind, s.name) for s in plan(new, observed, record).steps]
    assert steps == [
        ("load", "conn", "rw"),
        ("load", "conn", "new"),
        ("unload", "conn", "site"),
        ("terminate", "conn", "site"),
    ]
    quiet = plan(new, observed, record, terminate_removed=False).steps
    assert [s.action for s in quiet] == ["load", "load", "unload"]


def test_removed_child_of_a_kept_connection_is_terminated() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(BASE.replace("children { a { } b { } }", "children { a { } }"))
    steps = plan(new, observed, record).steps
    assert [(s.action, s.kind, s.name, s.target) for s in steps] == [
        ("load", "conn", "site", ""),
        ("terminate", "child", "site/b", "b"),
    ]


def test_objects_someone_else_unloaded_are_repaired() -> None:
    state = desired()
    observed, record = loaded(state)
    gone = Observed(conns=frozenset({"site"}), pools=frozenset(),
                    authorities=observed.authorities, key_ids=observed.key_ids,
                    shared_ids=observed.shared_ids)
    steps = [(s.action, s.kind, s.name) for s in plan(state, gone, record).steps]
    assert steps == [("load", "pool", "pool4"), ("load", "conn", "rw")]


def test_foreign_objects_are_unloaded_like_swanctl_does() -> None:
    state = desired()
    observed, record = loaded(state)
    extra = Observed(conns=observed.conns | {"foreign"}, pools=observed.pools | {"p2"},
                     authorities=observed.authorities | {"ca2"},
                     key_ids=observed.key_ids | {"feed"},
                     shared_ids=observed.shared_ids | {"eap-x"})
    steps = [(s.action, s.kind, s.name) for s in
             plan(state, extra, record, terminate_removed=False).steps]
    assert steps == [
        ("unload", "conn", "foreign"), ("unload", "pool", "p2"),
        ("unload", "authority", "ca2"),
        ("unload-key", "key", "feed"), ("unload-shared", "shared", "eap-x"),
    ]


def test_a_broken_connection_is_neither_loaded_nor_unloaded() -> None:
    state = desired()
    observed, record = loaded(state)
    broken = desired(BASE.replace("certs = gw.pem", "certs = missing.pem"))
    assert ("conn", "rw") in broken.broken
    assert not plan(broken, observed, record)


def test_removed_key_and_secret_are_unloaded_by_id() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(BASE.replace("secrets { ike-1 { secret = s3cret } }", ""),
                  folders={"x509ca": FOLDERS["x509ca"]})
    steps = [(s.action, s.target) for s in plan(new, observed, record).steps]
    assert steps == [("unload-key", "id-private/gw.pem"), ("unload-shared", "ike-1")]


def test_a_changed_secret_is_loaded_again_under_the_same_id() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(BASE.replace("s3cret", "n3w"))
    steps = plan(new, observed, record).steps
    assert [(s.action, s.name) for s in steps] == [("load", "ike-1")]


def test_a_removed_certificate_needs_clear_and_full_reload_last() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(folders={"x509ca": (("other.pem", b"CA2"),),
                           "private": FOLDERS["private"]})
    steps = [(s.action, s.name) for s in plan(new, observed, record).steps]
    assert steps == [("load", "x509ca/other.pem"), ("clear-creds", "*"),
                     ("reload-creds", "*")]


def test_an_added_certificate_is_just_loaded() -> None:
    state = desired()
    observed, record = loaded(state)
    new = desired(folders={**FOLDERS, "x509": (("extra.pem", b"X"),)})
    steps = [(s.action, s.name) for s in plan(new, observed, record).steps]
    assert steps == [("load", "x509/extra.pem")]


def test_credentials_cleared_by_someone_else_are_all_reloaded_first() -> None:
    state = desired()
    observed, record = loaded(state)
    cleared = Observed(conns=observed.conns, pools=observed.pools,
                       authorities=observed.authorities)
    steps = [(s.action, s.kind) for s in plan(state, cleared, record).steps]
    assert steps == [("reload-creds", "cred")]


def test_a_broken_key_keeps_its_last_good_id() -> None:
    state = desired()
    observed, record = loaded(state)
    broken = desired()
    broken = DesiredState(conns=broken.conns, pools=broken.pools,
                          authorities=broken.authorities, certs=broken.certs, keys={},
                          shared=broken.shared,
                          broken=frozenset({("key", "private/gw.pem")}))
    assert not plan(broken, observed, record)


# --- the executor, against a fake charon (no root) --------------------------------------


class FakeCharon:
    """Enough of charon's VICI for the loader: names in, names out; `refuse` maps a
    (command, name) to the errmsg charon would answer."""

    def __init__(self) -> None:
        self.generation = 1
        self.conns: list[str] = []
        self.pools: set[str] = set()
        self.authorities: set[str] = set()
        self.certs: list[bytes] = []
        self.keys: set[str] = set()
        self.shared: set[str] = set()
        self.refuse: dict[tuple[str, str], str] = {}
        self.sent: list[str] = []

    async def request(self, command: str, message: Any = None, **_: Any) -> dict:
        message = message or {}
        name = (next(iter(message)) if command in ("load-conn", "load-pool", "load-authority")
                else str(message.get("name", message.get("id", ""))))
        self.sent.append(command)
        if (command, name) in self.refuse:
            raise ViciCommandError(command, self.refuse[(command, name)])
        if command == "stats":
            return {"uptime": {"since": "Nov 26 10:00:00 2026"}}
        if command == "get-conns":
            return {"conns": list(self.conns)}
        if command == "get-pools":
            return {p: {} for p in self.pools}
        if command == "get-authorities":
            return {"authorities": sorted(self.authorities)}
        if command == "get-keys":
            return {"keys": sorted(self.keys)}
        if command == "get-shared":
            return {"keys": sorted(self.shared)}
        if command == "load-conn" and name not in self.conns:
            self.conns.append(name)
        elif command == "load-pool":
            self.pools.add(name)
        elif command == "load-authority":
            self.authorities.add(name)
        elif command == "load-cert":
            self.certs.append(message["data"])
        elif command == "load-key":
            key_id = f"id-{len(message['data'])}"
            self.keys.add(key_id)
            return {"success": "yes", "id": key_id}
        elif command == "clear-creds":
            self.certs.clear()
            self.keys.clear()
            self.shared.clear()
        elif command == "unload-conn":
            self.conns.remove(name)
        elif command == "unload-pool":
            self.pools.discard(name)
        return {"success": "yes"}


def folder(tmp_path: Path, conf: str, ca: bytes = b"CA") -> str:
    d = tmp_path / "swanctl"
    (d / "x509ca").mkdir(parents=True, exist_ok=True)
    (d / "x509ca" / "ca.pem").write_bytes(ca)
    (d / "swanctl.conf").write_text(conf)
    return str(d)


CONF = """
authorities { ca { cacert = ca.pem } }
pools { p { addrs = 10.0.0.0/24 } }
connections { c { pools = p } }
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_failing_authority_stops_pools_and_connections(tmp_path: Path) -> None:
    charon = FakeCharon()
    charon.refuse[("load-authority", "ca")] = "bad CA"
    report = run(ConfigLoader(folder(tmp_path, CONF)).reconcile(charon, reread=True))
    assert "load-pool" not in charon.sent and "load-conn" not in charon.sent
    lines = report.failure_lines()
    assert "authority 'ca': bad CA" in lines[0]
    assert len(lines) == 3
    assert all(line.endswith("(an authority failed to load)") for line in lines[1:]), lines


def test_pool_with_leases_does_not_stop_connections(tmp_path: Path) -> None:
    charon = FakeCharon()
    charon.refuse[("load-pool", "p")] = "pool p has online leases, unable to replace"
    report = run(ConfigLoader(folder(tmp_path, CONF)).reconcile(charon, reread=True))
    assert charon.conns == ["c"]
    assert len(report.failure_lines()) == 1


def test_refusals_are_retried_quietly_and_converge(tmp_path: Path) -> None:
    charon = FakeCharon()
    charon.refuse[("load-conn", "c")] = "invalid proposal"
    loader = ConfigLoader(folder(tmp_path, CONF))
    first = run(loader.reconcile(charon, reread=True))
    assert [line.split(": ", 1)[1] for line in first.failure_lines()] == [
        "load connection 'c': invalid proposal"]
    second = run(loader.reconcile(charon))
    assert second.failure_lines() == [] and second.refused == ["load connection 'c'"]
    assert not second.ok
    del charon.refuse[("load-conn", "c")]
    third = run(loader.reconcile(charon))
    assert third.ok and charon.conns == ["c"]
    assert run(loader.reconcile(charon)).results == []  # converged: nothing more


def test_refused_certificate_forbids_clear_creds(tmp_path: Path) -> None:
    charon = FakeCharon()
    path = folder(tmp_path, CONF)
    loader = ConfigLoader(path)
    assert run(loader.reconcile(charon, reread=True)).ok
    (Path(path) / "x509ca" / "ca.pem").write_bytes(b"GARBAGE")
    charon.refuse[("load-cert", "")] = "parsing certificate failed"
    charon.refuse[("load-authority", "ca")] = "parsing certificate failed"
    charon.sent.clear()
    report = run(loader.reconcile(charon, reread=True))
    assert "clear-creds" not in charon.sent and charon.certs == [b"CA"]
    assert not report.ok
    charon.sent.clear()
    again = run(loader.reconcile(charon))
    assert "clear-creds" not in charon.sent and again.failure_lines() == []


# --- properties -------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "d", "e"])


def _items(kind: str, contents: dict[str, int]) -> dict[str, Item]:
    command = {"conn": "load-conn", "pool": "load-pool"}[kind]
    return {n: Item(kind, n, command, {n: {"v": str(v)}}, None, f"{kind}{n}{v}")
            for n, v in contents.items()}


@given(desired_conns=st.dictionaries(NAMES, st.integers(0, 2)),
       desired_pools=st.dictionaries(NAMES, st.integers(0, 2)),
       observed_conns=st.sets(NAMES), observed_pools=st.sets(NAMES),
       recorded=st.dictionaries(st.tuples(st.sampled_from(["conn", "pool"]), NAMES),
                                st.integers(0, 2)))
def test_plan_converges_and_sends_only_what_differs(
        desired_conns: dict[str, int], desired_pools: dict[str, int],
        observed_conns: set[str], observed_pools: set[str],
        recorded: dict[tuple[str, str], int]) -> None:
    state = DesiredState(conns=_items("conn", desired_conns),
                         pools=_items("pool", desired_pools))
    record = LoadRecord({(k, n): f"{k}{n}{v}" for (k, n), v in recorded.items()})
    observed = Observed(conns=frozenset(observed_conns), pools=frozenset(observed_pools))
    steps = plan(state, observed, record, terminate_removed=False).steps
    charon = {"conn": set(observed_conns), "pool": set(observed_pools)}
    for step in steps:
        if step.action == "load":
            charon[step.kind].add(step.name)
        elif step.action == "unload":
            charon[step.kind].discard(step.name)
    # converges: charon has exactly the configured names
    assert charon == {"conn": set(desired_conns), "pool": set(desired_pools)}
    # minimal: a load only for what is missing in charon or differs from the record
    for step in steps:
        if step.action == "load":
            present = step.name in (observed_conns if step.kind == "conn" else observed_pools)
            assert not present or record.digest_of(step.kind, step.name) != \
                (step.item.digest if step.item else None)
    # and nothing twice
    assert len({(s.action, s.kind, s.name) for s in steps}) == len(steps)


def test_removed_certificate_clears_and_reloads_back_to_back(tmp_path: Path) -> None:
    charon = FakeCharon()
    path = folder(tmp_path, CONF.replace("connections { c { pools = p } }",
                                         "connections { c {\n pools = p\n"
                                         " local { cacerts = ca.pem }\n } }"))
    (Path(path) / "x509ca" / "old.pem").write_bytes(b"OLD")
    loader = ConfigLoader(path)
    assert run(loader.reconcile(charon, reread=True)).ok
    (Path(path) / "x509ca" / "old.pem").unlink()
    charon.sent.clear()
    report = run(loader.reconcile(charon, reread=True))
    assert report.ok, report.failure_lines()
    # nothing between the clear and the reload; the connection that brought a
    # certificate of its own and the authority are sent again
    assert charon.sent[charon.sent.index("clear-creds"):] == [
        "clear-creds", "load-cert", "load-authority", "load-conn"]
    assert charon.certs == [b"CA"]


def test_charon_is_asked_while_the_folder_is_parsed(tmp_path: Path) -> None:
    """The pass's questions to charon go out before the parse; a folder that does not
    parse still lets them finish, and a parse that crashes leaves none running."""
    charon = FakeCharon()
    loader = ConfigLoader(folder(tmp_path, CONF))
    parsed = loader.reread

    def reread() -> Any:
        asked_before_parse.extend(charon.sent)
        return parsed()

    asked_before_parse: list[str] = []
    loader.reread = reread  # type: ignore[method-assign]
    assert run(loader.reconcile(charon, reread=True)).ok
    assert asked_before_parse[:1] == ["get-conns"]  # (this fake answers at once)

    broken = ConfigLoader(folder(tmp_path / "b", "connections {"))
    report = run(broken.reconcile(charon, reread=True))
    assert not report.parsed and report.standing_errors

    def crash() -> Any:
        raise RuntimeError("bug")

    class SilentCharon(FakeCharon):
        async def request(self, command: str, message: Any = None, **_: Any) -> dict:
            await asyncio.Event().wait()  # never answers
            return {}

    crashing = ConfigLoader(folder(tmp_path / "c", CONF))
    crashing.reread = crash  # type: ignore[method-assign]

    async def crashed_pass() -> list[asyncio.Task[Any]]:
        with pytest.raises(RuntimeError):
            await crashing.reconcile(SilentCharon(), reread=True)
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks()
                if t is not asyncio.current_task() and not t.done()]

    assert run(crashed_pass()) == []


class _Node:
    """An object that can sit in a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.me: _Node | None = self


def test_only_the_first_parse_freezes_the_heap(tmp_path: Path) -> None:
    """The first parse (start-up) freezes what is alive; a later reread (SIGHUP, months
    later) must not: a garbage cycle of that moment would never be collected."""
    import gc
    import weakref

    (tmp_path / "swanctl.conf").write_text("connections {\n  a {\n    version = 2\n  }\n}\n")
    loader = ConfigLoader(str(tmp_path))
    try:
        assert loader.reread()[0]
        node = _Node()
        gc.collect()  # still referenced: survives into the oldest generation
        watch = weakref.ref(node)
        del node  # now garbage that only a full collection finds
        (tmp_path / "swanctl.conf").write_text(
            "connections {\n  b {\n    version = 2\n  }\n}\n")
        assert loader.reread()[0]
        gc.collect()
        assert watch() is None, "a reread froze a garbage cycle"
    finally:
        gc.unfreeze()
