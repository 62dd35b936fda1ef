"""Test certificates made with ``cryptography``: one CA, and server and client certificates for
127.0.0.1/localhost (PEM), for the TLS tests of Kafka, Redis and Triton."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_pki(
    root: Path, who: tuple[str, ...] = ("broker", "client")
) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """A CA (``root/ca.pem``) and, for each name in ``who``, a certificate and its unencrypted
    PKCS#8 key (0600) signed by it, valid for 127.0.0.1 and localhost: (ca, certs, keys)."""
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key_pair() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key_pair()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("slidr test CA"))
        .issuer_name(name("slidr test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca = root / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs, keys = {}, {}
    for each in who:
        key = key_pair()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"slidr {each}"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        certs[each] = root / f"{each}.pem"
        certs[each].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keys[each] = root / f"{each}-key.pem"
        keys[each].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        keys[each].chmod(0o600)
    return ca, certs, keys
