"""Shared pytest fixtures: the lab (see `swand.lab`) with guaranteed, checked teardown.

- `make_lab(**kwargs)` builds a started `swand.lab.Lab` (any number per test); after the
  test every lab is torn down and the test fails if anything was left behind
  (namespaces, charon or other processes, the lab folder).
- `lab`: one default lab (2 clients, charon 5.9). Parametrize the version indirectly:
  `@pytest.mark.parametrize("lab", ["6.0"], indirect=True)`.
- `charon_version`: parametrized over `SWAND_LAB_VERSIONS` (default "5.9,6.0"), and
  `versioned_lab`, a default lab for each; use them for tests that must pass on both.
  A test needing 6.0 without a trixie tree fails with the reason; it never skips.
- `rw_lab`: a `versioned_lab` whose gateway is configured by swanctl with
  `configs.gateway_conf()`, clients configured, gateway NAT on (nothing connected yet).
- Every test marked `lab` is checked afterwards: each lab it brought up (directly or via
  a fixture) must have left no namespace, process, folder or mount.
- `corpus`: the folder of strongSwan's test scenarios (`$SWAND_CORPUS`, default
  `<repo>/../shared/corpus/strongswan-testing`). A clone without it skips the tests that
  need it, with that reason; `SWAND_REQUIRE_CORPUS=1` (set by .ci/run) or an explicit
  `SWAND_CORPUS` that names nothing makes them fail instead, so CI cannot go green
  without them. `ipsec_corpus`: the same for swand import's ipsec.conf corpus
  (`$SWAND_IPSEC_CORPUS`, default `<repo>/../shared/corpus/strongswan-ipsec-conf`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swand.lab import VERSIONS, Lab
from swand.lab import lab as lab_module

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared/corpus/strongswan-testing"
DEFAULT_IPSEC_CORPUS = REPO.parent / "shared/corpus/strongswan-ipsec-conf"
REQUIRE_CORPUS = "SWAND_REQUIRE_CORPUS"

CHARON_VERSIONS = [
    v.strip() for v in os.environ.get("SWAND_LAB_VERSIONS", ",".join(VERSIONS)).split(",")
    if v.strip()
]


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(**kwargs: object) -> Lab:
        lab = Lab(**kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        return lab.up()

    yield make
    errors: list[str] = []
    for lab in labs:
        try:
            lab.down()
        except Exception as exc:
            errors.append(f"lab {lab.id}: {exc}")
    left = [f"lab {lab.id}: {item}" for lab in labs for item in lab.leftovers()]
    assert not errors and not left, "lab left things behind: " + "; ".join(errors + left)


@pytest.fixture
def lab(make_lab: Callable[..., Lab], request: pytest.FixtureRequest) -> Lab:
    return make_lab(charon=getattr(request, "param", "5.9"))


@pytest.fixture(params=CHARON_VERSIONS)
def charon_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def versioned_lab(make_lab: Callable[..., Lab], charon_version: str) -> Lab:
    return make_lab(charon=charon_version)


@pytest.fixture
def rw_lab(versioned_lab: Lab) -> Lab:
    versioned_lab.configure_gateway_with_swanctl()
    versioned_lab.configure_clients()
    versioned_lab.gateway_nat()
    return versioned_lab


@pytest.fixture(autouse=True)
def _lab_leaves_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a lab test (and its fixtures' teardown), nothing of its labs may remain."""
    if request.node.get_closest_marker("lab") is None:
        yield
        return
    before = len(lab_module.created_lab_ids)
    yield
    left = [f"lab {lab_id}: {item}" for lab_id in lab_module.created_lab_ids[before:]
            for item in lab_module.leftovers_of(lab_id)]
    assert not left, "lab test left things behind: " + "; ".join(left)


def _find_corpus(env: str, default: Path) -> Path:
    """A corpus folder; skips (or fails, when it is required or named) without it."""
    named = os.environ.get(env, "")
    path = Path(named) if named else default
    if path.is_dir():
        return path
    if os.environ.get(REQUIRE_CORPUS, "") not in ("", "0"):
        pytest.fail(f"conformance corpus not found at {path} ({REQUIRE_CORPUS} is set)")
    if named:
        pytest.fail(f"conformance corpus not found at {path} ({env} names it)")
    pytest.skip(f"conformance corpus not found at {path} (set {env} to run it)")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The conformance corpus; skips (or fails, when it is required) without it."""
    return _find_corpus("SWAND_CORPUS", DEFAULT_CORPUS)


@pytest.fixture(scope="session")
def ipsec_corpus() -> Path:
    """swand import's corpus of ipsec.conf files, found like `corpus`."""
    return _find_corpus("SWAND_IPSEC_CORPUS", DEFAULT_IPSEC_CORPUS)
