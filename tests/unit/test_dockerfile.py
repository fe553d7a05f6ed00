"""No Docker engine runs in CI, so the Dockerfile is kept honest by construction: its
install steps must be dev.sh's (which CI runs on a fresh Debian 12), and its final stage
must carry no compiler."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DEV_SH = (ROOT / "dev.sh").read_text()
BUILD_ONLY = {"gcc", "python3-dev", "python3-venv"}


def _dev_sh_packages() -> set[str]:
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", DEV_SH, re.S | re.M)
    assert m, "APT_PACKAGES=( ... ) not found in dev.sh"
    words = re.sub(r"#.*", "", m.group(1)).split()
    return set(words)


def _stages() -> list[str]:
    """The Dockerfile's stages, each as its text with continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    parts = re.split(r"^FROM ", joined, flags=re.M)[1:]
    return ["FROM " + p for p in parts]


def _apt_packages(stage: str) -> set[str]:
    packages: set[str] = set()
    for m in re.finditer(r"apt-get install (.*?)(?:&&|$)", stage, re.M):
        packages |= {w for w in m.group(1).split() if not w.startswith("-")}
    return packages


def test_two_stages_on_debian_12() -> None:
    stages = _stages()
    assert len(stages) == 2
    assert "ARG DEBIAN_IMAGE=debian:bookworm-slim" in DOCKERFILE


def test_every_apt_package_is_one_dev_sh_installs() -> None:
    dev = _dev_sh_packages()
    for stage in _stages():
        packages = _apt_packages(stage)
        assert packages, stage[:40]
        assert packages <= dev, f"not in dev.sh's APT_PACKAGES: {packages - dev}"


def test_final_stage_has_no_compiler_and_what_swand_needs() -> None:
    build, final = _stages()
    assert _apt_packages(build) >= BUILD_ONLY
    runtime = _apt_packages(final)
    assert not runtime & BUILD_ONLY
    assert {"python3", "iptables", "nftables", "python3-nftables"} <= runtime
    assert "COPY --from=build /opt/swand /opt/swand" in final


def test_python_install_mirrors_dev_sh() -> None:
    # Debian's python3 in a venv that sees python3-nftables, pip upgraded, then swand
    assert "-m venv --system-site-packages" in DEV_SH
    assert "python3 -m venv --system-site-packages /opt/swand" in DOCKERFILE
    assert re.search(r"pip\" install .*--upgrade pip", DEV_SH)
    assert "/opt/swand/bin/pip install --no-cache-dir --upgrade pip" in DOCKERFILE
    assert "/opt/swand/bin/pip install --no-cache-dir ." in DOCKERFILE


def test_healthcheck_uses_the_metrics_endpoint() -> None:
    from swand.config import DEFAULT_METRICS_LISTEN

    assert "HEALTHCHECK" in DOCKERFILE
    assert f"http://{DEFAULT_METRICS_LISTEN}/metrics" in DOCKERFILE


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M))
    for sources in copied:
        for src in sources.split():
            assert src.split("/")[0] not in ignored, src


def _healthcheck_argv() -> list[str]:
    import json

    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", joined, re.M)
    assert m, "HEALTHCHECK CMD [...] not found"
    return json.loads(m.group(1))


def test_healthcheck_command_passes_and_fails_as_it_should() -> None:
    """Run the image's health command (with this Python) against a metrics endpoint that
    answers and one that does not."""
    import http.server
    import socket
    import subprocess
    import sys
    import threading

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"swand_charon_up 1\n"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    argv = _healthcheck_argv()
    assert argv[0] == "/opt/swand/bin/python"
    argv[0] = sys.executable
    try:
        port = server.server_address[1]
        ok = subprocess.run(argv, env={"SWAND_HEALTH_URL": f"http://127.0.0.1:{port}/metrics"},
                            capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = subprocess.run(argv, env={"SWAND_HEALTH_URL": f"http://127.0.0.1:{closed}/metrics"},
                          capture_output=True, timeout=30)
    assert down.returncode != 0


def test_the_hosts_charon_packages_named_here_are_dev_sh_and_docs_ones() -> None:
    """charon runs on the host, not in the image: the Dockerfile names the packages the
    host needs (charon and every package its plugins come from), the same as dev.sh
    installs and docs/service.md's install step lists."""
    m = re.search(r"^#\s+charon-packages:(.*\n(?:#\s{3,}.*\n)*)", DOCKERFILE, re.M)
    assert m, "Dockerfile: '# charon-packages: ...' comment not found"
    named = set(m.group(1).replace("#", " ").split())
    dev = _dev_sh_packages()
    # strongswan-starter is the test's reference (stroke) for swand import, not the host's
    charon_like = {p for p in dev if "strongswan" in p or "charon" in p} - {
        "strongswan-pki", "strongswan-starter"}
    assert named == charon_like
    docs = (ROOT / "docs/service.md").read_text()
    step = re.search(r"```sh\n(?:apt-get update\n)?"
                     r"apt-get install --no-install-recommends (.*?)\n(?!\s)", docs,
                     re.S)
    assert step, "docs/service.md: apt-get install step not found"
    assert named <= set(step.group(1).replace("\\", " ").split())
