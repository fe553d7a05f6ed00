# swand in a container, beside the charon that runs on the host.
#
#   docker build -t swand .
#   touch /run/xtables.lock          # on the host, once per boot (iptables makes it too)
#   docker run -d --name swand --restart on-failure --network host \
#     --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW \
#     --security-opt no-new-privileges --read-only --tmpfs /run/swand \
#     --mount type=bind,src=/var/run/charon.vici,dst=/var/run/charon.vici \
#     --mount type=bind,src=/run/xtables.lock,dst=/run/xtables.lock \
#     --mount type=bind,src=/etc/swanctl,dst=/etc/swanctl,readonly \
#     --mount type=bind,src=/etc/swand,dst=/etc/swand,readonly \
#     swand
#
# (docs/service.md explains each flag, /proc/sys inside a container, and why --mount:
# unlike -v it fails instead of creating a directory where a file is missing.)
#
# The install steps are dev.sh's, so CI (which runs dev.sh) proves them: the same Debian
# packages (a subset of its APT_PACKAGES: the ones swand needs at run time, plus the
# compiler for python-iptables' small extension in the build stage only), Debian's own
# python3 in a venv with --system-site-packages (python3-nftables is a Debian package),
# pip upgraded, then the package installed. tests/unit/test_dockerfile.py keeps the two
# in step.
#
# charon is not in this image: it runs on the host, installed with its plugins as
# docs/service.md says (tests/unit/test_dockerfile.py checks this list matches dev.sh's):
#   charon-packages: charon-systemd strongswan-swanctl libstrongswan strongswan-libcharon
#     libstrongswan-standard-plugins libstrongswan-extra-plugins libcharon-extra-plugins
#     libcharon-extauth-plugins
# `swand check` in the container asks that charon (over the mounted VICI socket) which
# plugins it loaded and names the host package of any the configuration needs.

ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- build: compile python-iptables' extension, install swand into /opt/swand ----------
FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc \
      iptables nftables python3-nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY swand ./swand
RUN python3 -m venv --system-site-packages /opt/swand \
 && /opt/swand/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/swand/bin/pip install --no-cache-dir . \
 && /opt/swand/bin/swand --help >/dev/null

# --- run: no compiler, no headers, no pip cache ----------------------------------------
FROM ${DEBIAN_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# iptables: libxtables/libip4tc and the match/target extensions python-iptables loads,
# and iptables-save for `swand check`; nftables + python3-nftables: the nftables back end;
# iproute2: `ip` for `swand check`'s address probe.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 iptables nftables python3-nftables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/swand /opt/swand
COPY etc/swand/swand.toml /usr/share/doc/swand/swand.toml.example
ENV PATH=/opt/swand/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Root inside the container, with only CAP_NET_ADMIN and CAP_NET_RAW (docker run
# --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW). It cannot be another user:
# - swand reads /etc/swanctl/private/* (0600, owned by root) to load the keys into charon;
# - charon's VICI socket is root's (srwxrwx--- root root);
# - Docker grants added capabilities to root only: a non-root user gets none (no ambient
#   capabilities), and libiptc needs CAP_NET_RAW + CAP_NET_ADMIN, netlink and
#   /proc/sys/net writes need CAP_NET_ADMIN.
# Dropping every other capability is what keeps root small here (no CAP_DAC_OVERRIDE,
# CAP_SYS_ADMIN, CAP_SYS_MODULE...).
USER root

# The metrics endpoint is the health: it answers only while the event loop runs.
# (host network: 127.0.0.1 is the host's loopback, where swand listens by default)
ENV SWAND_HEALTH_URL=http://127.0.0.1:9817/metrics
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/swand/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SWAND_HEALTH_URL'], timeout=4).read(1)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/swand/bin/swand"]
CMD ["run"]
