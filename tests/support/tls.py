"""Certificates made on the spot and an in-process server over TLS (mutual when a client CA
is given)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.config import Settings
from service.grpc_api.server import RunningServer, start_server
from tests.support.harness import (
    write_test_credentials,
)


@dataclass
class Pem:
    cert: bytes
    key: bytes
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def make_cert(name: str, issuer: Pem | None = None, *, ca: bool = False) -> Pem:
    """A certificate for `name` (also valid for localhost and 127.0.0.1), self-signed
    unless an issuer is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca or issuer is None, path_length=None), True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    )
    certificate = builder.sign(issuer.private_key if issuer else key, hashes.SHA256())
    return Pem(
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate,
        key,
    )


def tls_server(folder: Path, server: Pem, client_ca: Pem | None = None) -> RunningServer:
    settings = Settings(
        port=0,
        storage_url="memory://",
        credentials_file=write_test_credentials(folder / "credentials.yaml"),
        tls_cert_file=write(folder / "server.pem", server.cert),
        tls_key_file=write(folder / "server.key", server.key),
        tls_client_ca_file=write(folder / "client-ca.pem", client_ca.cert) if client_ca else None,
    )
    return start_server(settings)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
