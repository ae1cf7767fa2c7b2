"""Transport security: TLS credentials for the server port and for client channels, read
from the PEM files the settings or the caller name."""

from __future__ import annotations

from pathlib import Path

import grpc

from service.config import Settings
from service.grpc_api.auth.credentials import CredentialsError


def _read_pem(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"TLS: cannot read {setting} {path}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server port, or None for plaintext. With a client CA, every
    client must present a certificate it signed (mutual TLS): gRPC enforces client
    certificates only when it has root certificates to check them against."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None  # Settings rejects a key without a certificate and the reverse
    chain = _read_pem("tls_cert_file", settings.tls_cert_file)
    key = _read_pem("tls_key_file", settings.tls_key_file)
    client_ca = (
        _read_pem("tls_client_ca_file", settings.tls_client_ca_file)
        if settings.tls_client_ca_file is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials for a client: the CA to trust (None: the system's roots) and an
    optional client certificate and key for mutual TLS."""
    if (cert_file is None) != (key_file is None):
        raise CredentialsError("TLS: a client certificate needs its key, and the reverse")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem("CA file", ca_file) if ca_file else None,
        private_key=_read_pem("client key", key_file) if key_file else None,
        certificate_chain=_read_pem("client certificate", cert_file) if cert_file else None,
    )
