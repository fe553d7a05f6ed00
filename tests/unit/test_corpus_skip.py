"""A clean clone has no ../shared/corpus: the conformance tests skip with that reason,
and fail when CI requires the corpus (SWAND_REQUIRE_CORPUS=1, set by .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST = "tests/integration/test_conformance.py::test_messages_match_swanctl"


def _run_in_clone(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on a copy of the conformance test in a folder with no ../shared."""
    clone = tmp_path / "clone"
    for rel in ("tests/conftest.py", "tests/integration/test_conformance.py"):
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, clone / rel)
    base = {k: v for k, v in os.environ.items()
            if k not in ("SWAND_CORPUS", "SWAND_REQUIRE_CORPUS")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider",
         "--rootdir", str(clone), TEST],
        cwd=clone, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_without_the_corpus_the_conformance_test_skips_saying_why(tmp_path: Path) -> None:
    proc = _run_in_clone(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
    assert f"conformance corpus not found at {tmp_path}/shared/corpus" in proc.stdout


@pytest.mark.parametrize("env", [{"SWAND_REQUIRE_CORPUS": "1"},
                                 {"SWAND_CORPUS": "/nonexistent/corpus"}])
def test_ci_or_a_named_corpus_turns_the_skip_into_a_failure(
        tmp_path: Path, env: dict[str, str]) -> None:
    proc = _run_in_clone(tmp_path, **env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # pytest.fail in a fixture reports an error: exit status 1 either way
    assert "1 error" in proc.stdout and "conformance corpus not found" in proc.stdout


def test_ci_requires_the_corpus_and_runs_dev_sh_test() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "export SWAND_REQUIRE_CORPUS=1" in ci
    assert ci.rstrip().endswith("exec ./dev.sh test")
