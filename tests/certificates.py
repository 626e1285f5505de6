"""Certificates made for a test: a CA, a broker certificate for 127.0.0.1 and localhost, and a
client certificate, as PEM files (the `cryptography` package; nothing is fetched or kept).

EC P-256 keys: quick to make, and both OpenSSL (the services) and Java (the broker) read them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Authority:
    """A certificate authority: signs the certificates a test hands out."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    #: The CA's certificate as PEM (what a client's KAFKA_SSL_CA_FILE holds).
    cert_file: Path


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files; the key encrypted when `key_password` is set."""

    cert_file: Path
    key_file: Path
    key_password: str | None
    #: Key, then certificate, in one file: what Kafka's PEM keystore reads.
    bundle_file: Path


def authority(directory: Path, name: str = "tierline-test-ca") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{name}.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, certificate, cert_file)


def issue(
    ca: Authority,
    directory: Path,
    name: str,
    *,
    server: bool,
    key_password: str | None = None,
) -> Issued:
    """A certificate signed by `ca`: for a server, valid for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(ca.key, hashes.SHA256())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(key_password.encode())
        if key_password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    bundle_file = directory / f"{name}.bundle.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    bundle_file.write_bytes(key_pem + cert_pem)
    for private in (key_file, bundle_file):
        private.chmod(0o600)
    return Issued(cert_file, key_file, key_password, bundle_file)
