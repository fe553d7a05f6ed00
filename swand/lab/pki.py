"""A throw-away CA for the lab: ECDSA P-384 certificates made with `cryptography`.

Certificates are what a real road-warrior deployment uses (the product's PKI is
swand.adapters.pki_files); the lab's CA is deliberately separate and simple so tests never
depend on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

#: RFC 4945 / strongSwan's "ikeIntermediate" EKU, which macOS/Windows clients like to see
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")


@dataclass(frozen=True)
class Issued:
    """One end-entity certificate and its key, in memory as PEM."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8, what swanctl's `private/` folder loads."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def install(self, swanctl_dir: Path, ca: LabCA) -> None:
        """Write CA cert, own cert and key into a swanctl folder (key mode 0600)."""
        ca.install_ca(swanctl_dir)
        (swanctl_dir / "x509").mkdir(parents=True, exist_ok=True)
        (swanctl_dir / "x509" / f"{self.name}.pem").write_bytes(self.cert_pem)
        write_private(swanctl_dir / "private" / f"{self.name}.pem", self.key_pem)


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable only by its owner, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swand lab"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class LabCA:
    """ECDSA P-384 root CA valid for a day either side of now."""

    def __init__(self, name: str = "swand lab CA") -> None:
        self.key = ec.generate_private_key(ec.SECP384R1())
        now = dt.datetime.now(dt.UTC)
        self.not_before = now - dt.timedelta(days=1)
        self.not_after = now + dt.timedelta(days=2)
        self.subject = _name(name)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.subject).issuer_name(self.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before).not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA384())
        )
        self._revoked: list[x509.RevokedCertificate] = []

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def install_ca(self, swanctl_dir: Path) -> None:
        (swanctl_dir / "x509ca").mkdir(parents=True, exist_ok=True)
        (swanctl_dir / "x509ca" / "lab-ca.pem").write_bytes(self.cert_pem)

    def issue(
        self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
        emails: tuple[str, ...] = (), server: bool = False, common_name: str | None = None,
    ) -> Issued:
        """An end-entity certificate. `server=True` adds serverAuth + ikeIntermediate
        (a gateway), otherwise clientAuth (a road warrior). `name` names the files."""
        key = ec.generate_private_key(ec.SECP384R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.RFC822Name(e) for e in emails]
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE] if server else [
            ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or name)).issuer_name(self.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before).not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return Issued(name=name, cert=builder.sign(self.key, hashes.SHA384()), key=key)

    def revoke(self, issued: Issued) -> None:
        """Mark a certificate revoked; `crl_pem()` then lists it."""
        self._revoked.append(
            x509.RevokedCertificateBuilder()
            .serial_number(issued.cert.serial_number)
            .revocation_date(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            .build()
        )

    def crl_pem(self) -> bytes:
        """A CRL over everything revoked so far (for swanctl's `x509crl/`)."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + dt.timedelta(days=1))
        )
        for revoked in self._revoked:
            builder = builder.add_revoked_certificate(revoked)
        return builder.sign(self.key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)
