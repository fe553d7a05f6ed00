"""The swand lab: a road-warrior VPN in network namespaces, for tests and `swand demo`.

    from swand.lab import Lab, configs, wait_for

    with Lab(clients=2, charon="5.9") as lab:          # or charon="6.0" (trixie chroot)
        gw, c1 = lab.gateway, lab.client(1)
        gw.write_swanctl_conf(configs.gateway_conf())
        gw.swanctl("--load-all")
        c1.write_swanctl_conf(configs.client_conf(client_id=c1.ike_id, cert="client1.pem"))
        c1.swanctl("--load-all")
        lab.gateway_nat()                               # NAT in the gateway ns only
        vip = lab.connect(c1)                           # -> "10.8.0.129"
        assert c1.ping(INTERNET_HOST)

What `Lab.up()` builds (names carry a random 6-hex lab id; parallel labs never collide):

- namespaces `swl-<id>-router`, `swl-<id>-gateway`, `swl-<id>-client<N>`;
- router: `gw0` 192.0.2.254/24 to the gateway, bridge `br0` 198.51.100.254/24 to the
  clients, on `lo` the "internet host" 203.0.113.10 (`INTERNET_HOST`), IPv4
  forwarding on, and no route to the clients' virtual IPs (pings need the gateway's NAT);
- gateway: `eth0` 192.0.2.1/24, default via the router; id `vpn.lab.test`;
- clients: `eth0` 198.51.100.(10+N)/24, default via the router; id `clientN@lab.test`;
- with `ipv6=True`, IPv6 beside it (nodad, usable at once): router 2001:db8:2::fe
  (gateway side) and 2001:db8:100::fe (clients), internet host 2001:db8:113::10
  (`INTERNET_HOST6`), gateway 2001:db8:2::1, clients 2001:db8:100::(10+N) written as
  hex digits, e.g. ::11 (`Host.address6`). The gateway's 2001:db8:2::/64
  (`GATEWAY_PREFIX6`) is on-link at the router, which reaches an address in it only when
  neighbour discovery for it is answered (routed IPv6: swand's NDP proxy entries);
- a throw-away ECDSA P-384 CA (`lab.ca`, a `LabCA`): gateway cert with SAN DNS
  vpn.lab.test + IP 192.0.2.1, EKU serverAuth + ikeIntermediate; client certs with CN and
  rfc822 SAN `clientN@lab.test`, EKU clientAuth. Each host's swanctl folder gets
  `x509ca/lab-ca.pem`, `x509/<host>.pem`, `private/<host>.pem` (0600, PKCS#8);
- one charon-systemd per gateway/client, started in parallel, ready when VICI answers.
  Files per host under `/run/swand-lab/<id>/<host>/`: `strongswan.conf`, `charon.log`
  (filelog, flushed per line), `charon.vici` (socket), `charon.stdout`, `swanctl/`.
  Plugins: `charon.DEFAULT_PLUGINS` (kernel-libipsec, vici, counters, ...); fast
  retransmits (tries 2, timeout 1.0, base 1.2).

`Lab(clients=2, charon="5.9", *, gateway_id="vpn.lab.test", plugins=DEFAULT_PLUGINS,
extra_conf="", start_charons=True, client_charon=None, ipv6=False, binds=())`
  `extra_conf` goes inside `charon { }` of every strongswan.conf; `client_charon` mixes
  versions (a 5.9 gateway with 6.0 clients); `binds`: see charon 6.0 below.
  Attributes: `id`, `workdir`, `ca`, `router`, `gateway`, `clients`, `hosts` (by name),
  `charon_hosts`, `netns_prefix`, `timings` (seconds: network, pki, charons, up, down).
  Methods: `up()`, `down()`, `leftovers()`, `client(i)` (1-based),
  `add_host(name, charon=None, binds=())` (extra namespace with only lo, its own charon
  and an empty swanctl folder: the reference charon of a conformance test),
  `web_host()` (the internet's web host in the router namespace, on INTERNET_HOST and
  INTERNET_HOST6 port 80; a GET returns the source address it saw:
  `swand.lab.internet.fetch(client, lab.web_host().url(INTERNET_HOST6))`),
  `radvd(iface="gw0", prefix=GATEWAY_PREFIX6)` (router advertisements to the gateway
  every 3-4 s; `stop()`),
  `gateway_nat(source="10.8.0.0/16", source6=None)`, `disconnect(host)` /
  `reconnect(host)` (silently cut its link at the router, for DPD),
  `configure_gateway_with_swanctl(**gateway_conf_kwargs)`,
  `configure_clients(clients=None, **client_conf_kwargs)`,
  `connect(client, child="rw") -> virtual IP`.
  `down()` runs on `with` exit, at interpreter exit and on SIGTERM/SIGHUP;
  `sweep_stale()` (called by `up()`) removes labs whose owning process was SIGKILLed
  (their charons already died with it: PR_SET_PDEATHSIG).

`Host` (router, gateway, clients, extra hosts): `name`, `netns`, `address`, `address6`,
`workdir`, `ike_id`, `cert`.
  Any host: `run(cmd, check=True, timeout=30, input=None, env=None)` (str → `sh -c`),
  `popen(argv, **popen_kwargs)` (killed on teardown), `sysctl(k, v)`,
  `ping(dst, count=1, timeout=2) -> bool`, `http_get(url) -> body`,
  `tcpdump(iface="any", bpf="") -> Capture` (`lines()`, `wait_for(text)`, `stop()`;
  a context manager), `set_address(ip)` (a road warrior's changing home IP).
  Charon hosts also: `vici_uri`, `vici_socket`, `swanctl_dir`, `log_path`,
  `strongswan_conf`, `charon_version`, `charon_pid`, `charon` (the `Charon`),
  `start_charon()`, `stop_charon()`, `kill9()`, `restart_charon()`, `log()`,
  `log_tail(n)`, `wait_for_log(text)`, `swanctl(*args)` (the same version's swanctl with
  `--uri` and `SWANCTL_DIR` set; raises LabError with its output on failure unless
  `check=False`), `write_swanctl_conf(text, name="swanctl.conf")`, `session()` (a
  blocking `vici.Session`), `version()`, `list_sas()` (dicts with "name"),
  `list_conns()`, `virtual_ips()`, `wait_for_sa(conn=None)`, `initiate(child)`.

Helpers: `wait_for(predicate, timeout=10, interval=0.05, message=...)` returns the truthy
value or raises TimeoutError; `decode()` turns VICI bytes into str; `configs` has
`gateway_conf()` and `client_conf()` (ECDSA certs, aes256-sha384-prfsha384-ecp384,
aes256gcm16-ecp384, pool 10.8.0.128/25, encap = yes, dpd_delay 2s); `LabCA.issue()`,
`revoke()`, `crl_pem()` for extra certificates.

charon "6.0" runs Debian trixie's charon-systemd chrooted into a tree built once with
debootstrap and cached at /var/cache/swand-lab/trixie (`trixie.trixie_tree()`;
`SWAND_LAB_TRIXIE` names a prebuilt tree; `python -m swand.lab build-trixie`); without
one the lab raises LabError saying why. Chrooted, charon and `Host.swanctl()` see only
/run/swand-lab and the folders given as `binds=` (read-only, same path): copy or bind
anything else they must read. Each chrooted process mounts /dev, /proc, /sys and those
folders in its own mount namespace, so there is never anything to unmount.
"""

from swand.lab import configs
from swand.lab.charon import DEFAULT_PLUGINS, VERSIONS, Charon
from swand.lab.lab import (
    CLIENT_DOMAIN,
    GATEWAY_ADDRESS,
    GATEWAY_ID,
    GATEWAY_PREFIX6,
    INTERNET_HOST,
    INTERNET_HOST6,
    POOL,
    Capture,
    Host,
    Lab,
    list_netns,
    sweep_stale,
)
from swand.lab.pki import Issued, LabCA
from swand.lab.util import LabError, decode, wait_for

__all__ = [
    "CLIENT_DOMAIN",
    "DEFAULT_PLUGINS",
    "GATEWAY_ADDRESS",
    "GATEWAY_ID",
    "GATEWAY_PREFIX6",
    "INTERNET_HOST",
    "INTERNET_HOST6",
    "POOL",
    "VERSIONS",
    "Capture",
    "Charon",
    "Host",
    "Issued",
    "Lab",
    "LabCA",
    "LabError",
    "configs",
    "decode",
    "list_netns",
    "sweep_stale",
    "wait_for",
]
