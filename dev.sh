#!/usr/bin/env bash
# swand's two entry points on a fresh Debian 12 machine, run as root:
#   ./dev.sh demo   install what is missing, build the lab, run swand as its gateway
#   ./dev.sh test   install what is missing, run ruff, mypy and the whole test suite
# Everything the tests need is installed here, so CI (.ci/run) calls `./dev.sh test`.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: charon and its tools, both firewall back ends, namespaces and probes,
# a Python that can build python-iptables' extension, promtool and systemd-analyze,
# radvd (the lab's provider router advertising IPv6 to the gateway) and FRR (zebra, bgpd:
# the fleet lab's routers).
# charon's plugins are spread over several packages, some only Recommends (skipped by
# --no-install-recommends): every package the lab's charon loads a plugin from is listed
# (tests/unit/test_plugins.py checks this against swand/lab/charon.py's DEFAULT_PLUGINS).
# strongswan-starter: starter and the stroke plugin, the reference side of `swand import`'s
# conformance test.
# strongswan-libcharon also ships /usr/lib/ipsec/_updown and the updown plugin:
# bench/bench_storm.py's reference (`_updown iptables` per CHILD_SA, leftfirewall=yes).
APT_PACKAGES=(
  charon-systemd strongswan-swanctl strongswan-pki
  libstrongswan strongswan-libcharon libstrongswan-standard-plugins
  libstrongswan-extra-plugins libcharon-extra-plugins libcharon-extauth-plugins
  strongswan-starter
  iptables nftables python3-nftables
  iproute2 iputils-ping tcpdump procps util-linux curl
  python3 python3-venv python3-dev gcc
  debootstrap
  radvd
  prometheus systemd openssl
  frr
)
VENV=.venv
PY=/usr/bin/python3   # Debian's Python, so python3-nftables is importable in the venv

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "dev.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # charon-systemd, strongswan-starter, frr, radvd and prometheus would each start a
    # service in this machine's own namespace on a systemd host; the lab runs its own in
    # namespaces, so package scripts may not start anything (policy-rc.d, exit 101)
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    apt-get install -y --no-install-recommends "${missing[@]}" || {
      [[ -z $own_policy ]] || rm -f "$policy"; return 1; }
    [[ -z $own_policy ]] || rm -f "$policy"
  fi
}

install_python_package() {
  if [[ ! -x $VENV/bin/python ]]; then
    "$PY" -m venv --system-site-packages "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e ".[test]"
}

setup() {
  install_debian_packages
  install_python_package
}

case "${1:-}" in
  demo)
    shift
    setup
    exec "$VENV/bin/swand" demo "$@"
    ;;
  test)
    shift
    setup
    "$VENV/bin/ruff" check swand tests bench
    "$VENV/bin/mypy"   # [tool.mypy] in pyproject.toml: swand/ must type-check clean
    # charon 6.0 for the lab: Debian trixie in a cached chroot (built once, ~45 s); if it
    # cannot be built, the 6.0 tests fail with the reason
    "$VENV/bin/python" -m swand.lab build-trixie || true
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: $0 demo|test|setup [args...]" >&2
    exit 2
    ;;
esac
