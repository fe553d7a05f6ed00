"""The load plan: desired state vs charon's names and swand's record -> ordered steps."""

from __future__ import annotations

from swand.core.loadplan import LoadRecord, Observed, plan
from swand.core.settings import parse_text
from swand.core.swanctl import CredentialSource, DesiredState, conn_children, translate

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
