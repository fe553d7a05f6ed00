"""`swand pki init|gateway|crl`: the CA and the gateway certificate, in the swanctl folder.

    swand pki init --dn "C=DE, O=example, CN=example Root CA" [--rsa]
    swand pki gateway --id vpn.example.org [--san 192.0.2.1 ...]
    swand pki crl [--days 365]       # re-sign the CRL before its next update

Keys go to `private/` (mode 0600, created so), certificates to `x509ca/` and `x509/`,
named as the reference swanctl.conf expects (`ca.pem`, `gateway.pem`). Nothing is ever
overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509

from swand.adapters.pki_files import (
    PkiError,
    SwanctlPki,
    dn_string,
    init_ca,
    issue_gateway,
    sign_crl,
)
from swand.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create the CA (ECDSA P-384 unless --rsa)")
    init.add_argument("--dn", required=True,
                      help='the CA\'s subject, e.g. "C=DE, O=example, CN=example Root CA"')
    init.add_argument("--rsa", action="store_true", help="RSA 3072 instead of ECDSA P-384")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    gw = sub.add_parser("gateway", help="issue the gateway certificate")
    gw.add_argument("--id", required=True, dest="identity",
                    help="the gateway's IKE id and the name clients dial (DNS name or IP)")
    gw.add_argument("--san", action="append", default=[],
                    help="another subjectAltName (DNS name, IP or e-mail); repeatable")
    gw.add_argument("--dn", default=None,
                    help="subject DN (default: the CA's DN with CN = the id)")
    gw.add_argument("--rsa", action="store_true", help="RSA 3072 instead of ECDSA P-384")
    gw.add_argument("--days", type=int, default=1825, help="validity (default 1825)")
    crl = sub.add_parser("crl", help="re-sign the CRL (x509crl/ca.crl) before it goes stale")
    crl.add_argument("--days", type=int, default=365, help="next update in DAYS (default 365)")


def pki_for(args: argparse.Namespace) -> SwanctlPki:
    cfg = load_config(args.config).with_overrides(swanctl_dir=args.swanctl_dir)
    return SwanctlPki(Path(cfg.swanctl.dir))


def run(args: argparse.Namespace) -> int:
    try:
        pki = pki_for(args)
        if args.pki_command == "init":
            cert = init_ca(pki, args.dn, use_rsa=args.rsa, days=args.days)
            print(f"CA {dn_string(cert.subject)}")
            print(f"  certificate {pki.ca_cert}")
            print(f"  key         {pki.ca_key} (0600)")
            print(f"  valid until {cert.not_valid_after_utc:%Y-%m-%d}")
            return 0
        if args.pki_command == "crl":
            der = sign_crl(pki, crl_days=args.days)
            crl = x509.load_der_x509_crl(der)
            print(f"CRL {pki.crl}: {len(list(crl))} revoked, next update "
                  f"{crl.next_update_utc:%Y-%m-%d}; reload swand (or swanctl --load-creds) "
                  "to load it")
            return 0
        cert = issue_gateway(pki, args.identity, args.san, dn=args.dn, days=args.days,
                             use_rsa=args.rsa)
        print(f"gateway {dn_string(cert.subject)} (id {args.identity})")
        print(f"  certificate {pki.gateway_cert}")
        print(f"  key         {pki.gateway_key} (0600)")
        print(f"  valid until {cert.not_valid_after_utc:%Y-%m-%d}")
        print(f"  swanctl.conf: local {{ auth = pubkey; certs = {pki.gateway_cert.name}; "
              f"id = {args.identity} }}")
        return 0
    except (PkiError, ConfigError) as exc:
        print(f"swand pki: {exc}", file=sys.stderr)
        return 1
