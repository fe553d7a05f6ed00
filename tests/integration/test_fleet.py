"""A fleet: two gateways each running `swand run` with [routes], FRR (BGP) carrying the
routes to an internal router, an internal host behind it (see `swand.lab.fleet`).

- t520 (client1, pinned to 10.8.0.1 on every gateway) on gateway A: the internal host
  reaches it; A's charon dies, t520 moves to B: the internal host reaches 10.8.0.1
  through B within 5 s of the SA being up on B, A holds no route within 2 s.
- 200 clients spread over both gateways: the internal router's table is the union of the
  leases, every route pointing at the gateway holding the SA.
- kill -9 of swand and charon on A, restart: no route left behind.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from swand.lab import Lab, configs, wait_for
from swand.lab.daemon import SwandProcess, start_swand
from swand.lab.fleet import GATEWAY_B_ADDRESS, INTERNAL, PINNED, Fleet
from swand.lab.lab import GATEWAY_ADDRESS, Host

pytestmark = pytest.mark.lab

PROTO = 157
BULK_PSK = "fleet-lab-only-psk-not-a-secret-0123"  # throw-away lab secret
BULK_IKE = "aes128-sha256-x25519"
BULK_ESP = "aes128gcm16"
#: each gateway its own slice of the bulk clients' pool; t520 pinned on both
BULK_POOLS = {"gateway": "10.8.1.0/24", "gatewayb": "10.8.2.0/24"}


def gateway_conf(pool: str, gateway_id: str) -> str:
    return f"""connections {{
    t520 {{
        version = 2
        proposals = {configs.IKE_PROPOSAL}
        encap = yes
        dpd_delay = 2s
        pools = t520_pool
        local {{
            auth = pubkey
            certs = gateway.pem
            id = {gateway_id}
        }}
        remote {{
            auth = pubkey
            id = client1@lab.test
        }}
        children {{
            t520 {{
                local_ts = {INTERNAL}
                esp_proposals = {configs.ESP_PROPOSAL}
                dpd_action = clear
            }}
        }}
    }}
    bulk {{
        version = 2
        proposals = {BULK_IKE}
        encap = yes
        unique = never
        dpd_delay = 30s
        pools = bulk_pool
        local {{
            auth = psk
            id = {gateway_id}
        }}
        remote {{
            auth = psk
        }}
        children {{
            bulk {{
                local_ts = {INTERNAL}
                esp_proposals = {BULK_ESP}
            }}
        }}
    }}
}}
pools {{
    t520_pool {{
        addrs = {PINNED}/32
    }}
    bulk_pool {{
        addrs = {pool}
    }}
}}
secrets {{
    ike-bulk {{
        secret = "{BULK_PSK}"
    }}
}}
"""


def t520_conf(gateway_id: str) -> str:
    """The home server's two connections, one per gateway (same identity, same VIP)."""
    conns = ""
    for name, address in (("a", GATEWAY_ADDRESS), ("b", GATEWAY_B_ADDRESS)):
        conns += f"""    {name} {{
        version = 2
        remote_addrs = {address}
        vips = 0.0.0.0
        proposals = {configs.IKE_PROPOSAL}
        encap = yes
        dpd_delay = 2s
        local {{
            auth = pubkey
            certs = client1.pem
            id = client1@lab.test
        }}
        remote {{
            auth = pubkey
            id = {gateway_id}
        }}
        children {{
            {name} {{
                remote_ts = {INTERNAL}
                esp_proposals = {configs.ESP_PROPOSAL}
            }}
        }}
    }}
"""
    return "connections {\n" + conns + "}\n"


def routes_toml(name: str) -> str:
    """Routes through eth0, as kernel ESP gets them: `device = "auto"` would pick
    libipsec's ipsec0 here, whose routes the kernel drops by itself when charon dies;
    through eth0 "nothing left behind" is swand's work. Packets still enter the tunnel
    through charon's table 220 (its rule comes before main)."""
    return (f"[routes]\nenabled = true\nprotocol = {PROTO}\ninterval = 1.0\n"
            f'device = "eth0"\n[fleet]\ngateway = "{name}"\n')


def owned_routes(host: Host) -> set[str]:
    proc = host.run(["ip", "-j", "route", "show", "proto", str(PROTO)])
    return {r["dst"] for r in json.loads(proc.stdout or "[]")}


def leases(host: Host) -> set[str]:
    return {vip for sa in host.list_sas() for vip in sa.get("remote-vips", [])
            if any(c.get("state") == "INSTALLED" for c in sa.get("child-sas", {}).values())}


def timed(predicate: Callable[[], object], timeout: float, message: str) -> float:
    """Seconds until `predicate` holds (raises after `timeout`)."""
    t0 = time.monotonic()
    wait_for(predicate, timeout, interval=0.02, message=message)
    return time.monotonic() - t0


def build(make_lab: Callable[..., Lab], version: str
          ) -> tuple[Lab, Fleet, dict[str, SwandProcess]]:
    lab = make_lab(clients=2, charon=version)
    fleet = Fleet(lab).up()
    daemons = {}
    for gw in fleet.gateways:
        gw.write_swanctl_conf(gateway_conf(BULK_POOLS[gw.name], lab.gateway_id))
        daemons[gw.name] = start_swand(gw, firewall=False, extra=routes_toml(gw.name))
    t520 = lab.client(1)
    t520.write_swanctl_conf(t520_conf(lab.gateway_id))
    t520.swanctl("--load-all")
    return lab, fleet, daemons


def test_pinned_client_moves_to_the_other_gateway(make_lab: Callable[..., Lab],
                                                  charon_version: str) -> None:
    lab, fleet, daemons = build(make_lab, charon_version)
    a, b, t520 = lab.gateway, fleet.gateway_b, lab.client(1)
    t520.initiate("a", ike="a")
    assert t520.virtual_ips() == [PINNED]
    wait_for(lambda: fleet.inner_routes() == {PINNED: "gateway"}, 10.0,
             message=lambda: f"the inner router's route via A: {fleet.inner_routes()}")
    assert fleet.internal.ping(PINNED, count=1, timeout=3)

    # A's charon dies; t520 gives up on A and connects to B
    a.kill9()
    a_clear = timed(lambda: not owned_routes(a), 2.0, "A to withdraw its route")
    t520.swanctl("--terminate", "--ike", "a", "--force", "--timeout", "2", check=False)
    t520.initiate("b", ike="b")
    sa_up = time.monotonic()
    assert t520.virtual_ips() == [PINNED]
    wait_for(lambda: fleet.internal.ping(PINNED, count=1, timeout=1), 5.0,
             message=lambda: f"10.8.0.1 through B; inner routes {fleet.inner_routes()}")
    reachable_after = time.monotonic() - sa_up
    assert fleet.inner_routes() == {PINNED: "gatewayb"}
    print(f"A withdrew its route {a_clear:.2f} s after its charon died; the internal host "
          f"reached 10.8.0.1 through B {reachable_after:.2f} s after the SA was up on B")
    assert owned_routes(b) == {PINNED}
    for d in daemons.values():
        d.check_alive()


def bulk_connect(client: Host, per_gateway: int, timeout: float = 120.0) -> None:
    """`per_gateway` PSK road warriors to each gateway, all from one client charon,
    initiated in waves of 50; a connection that did not come up (the lab's retransmits
    give up after ~3 s, and bursts of IKE_SA_INITs on two shared cores lose some) is
    initiated again once its wave stops making progress."""
    names = [f"g{g}c{k}" for g in range(2) for k in range(per_gateway)]
    with client.session(timeout=60) as s:
        s.load_shared({"type": "IKE", "data": BULK_PSK})
        for name in names:
            address = GATEWAY_ADDRESS if name.startswith("g0") else GATEWAY_B_ADDRESS
            s.load_conn({name: {
                "version": "2", "encap": "yes", "remote_addrs": [address],
                "vips": ["0.0.0.0"], "proposals": [BULK_IKE],
                "local-1": {"auth": "psk", "id": f"{name}@bulk.lab.test"},
                "remote-1": {"auth": "psk"},
                "children": {name: {"remote_ts": [INTERNAL],
                                    "esp_proposals": [BULK_ESP]}},
            }})

    def up() -> set[str]:
        return {sa["name"] for sa in client.list_sas() if sa.get("state") == "ESTABLISHED"
                and any(c.get("state") == "INSTALLED"
                        for c in sa.get("child-sas", {}).values())}

    deadline = time.monotonic() + timeout
    while (missing := [n for n in names if n not in up()]) and time.monotonic() < deadline:
        wave = missing[:50]
        with client.session(timeout=60) as s:
            for name in wave:
                for _ in s.initiate({"child": name, "ike": name, "timeout": "-1"}):
                    pass
        # until the wave is up or stops making progress (the rest is initiated again)
        done, stalled_since = 0, time.monotonic()
        while time.monotonic() - stalled_since < 3.0:
            now_up = len(set(wave) & up())
            if now_up == len(wave):
                break
            if now_up > done:
                done, stalled_since = now_up, time.monotonic()
            time.sleep(0.3)


def test_200_clients_and_crashes_leave_nothing(make_lab: Callable[..., Lab],
                                               charon_version: str) -> None:
    lab, fleet, daemons = build(make_lab, charon_version)
    a, b = lab.gateway, fleet.gateway_b
    per_gateway = 100
    t0 = time.monotonic()
    bulk_connect(lab.client(2), per_gateway)
    print(f"200 clients connected in {time.monotonic() - t0:.1f} s")
    wait_for(lambda: len(leases(a)) == per_gateway and len(leases(b)) == per_gateway, 30.0,
             message=lambda: f"{per_gateway} leases each: A {len(leases(a))}, "
             f"B {len(leases(b))}")
    want = {vip: "gateway" for vip in leases(a)} | {vip: "gatewayb" for vip in leases(b)}
    took = timed(lambda: fleet.inner_routes() == want, 30.0,
                 "the inner router's table to equal the union of the leases")
    print(f"inner router: {len(want)} routes, each via its gateway, {took:.2f} s after the "
          f"last SA was seen")
    assert owned_routes(a) == set(leases(a)) and owned_routes(b) == set(leases(b))

    # kill -9 of swand and charon on A, restart both: nothing of A's is left anywhere
    daemons["gateway"].proc.send_signal(signal.SIGKILL)
    daemons["gateway"].proc.wait()
    a.kill9()
    want_a = {v for v, g in want.items() if g == "gateway"}
    assert owned_routes(a) == want_a
    a.start_charon()
    daemons["gateway"] = start_swand(a, firewall=False, extra=routes_toml("gateway"))
    wait_for(lambda: not owned_routes(a), 5.0, message="A's stale routes to go")
    wait_for(lambda: set(fleet.inner_routes()) == set(want) - want_a, 10.0,
             message="the inner router to forget A's clients")
    assert all(g == "gatewayb" for g in fleet.inner_routes().values())
    for d in daemons.values():
        d.check_alive()
