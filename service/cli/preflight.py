"""What `serve` checks once, in the parent, before any worker starts: the catalog, the
credentials file, the TLS files and the store. A mistake there would make every worker
fail the same way (with --workers N, N tracebacks); checked here, it is one `error: ...`
line and exit status 2, whatever the number of workers.

Nothing here may leave state a forked worker would inherit: no gRPC object is created
(TLS files are only read; gRPC does not support forking a process that has gRPC state),
and the store opened for the check is closed again. A SQLite database is created and
migrated here, once, before the workers open it. A Spanner store is not contacted (its
client is gRPC): only its URL is checked.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from service.catalog import load_catalog
from service.config import Settings
from service.domain.errors import StoreError
from service.grpc_api.auth import CredentialsError, load_credentials
from storage.urls import MEMORY_URL, SPANNER_PREFIX, UnsupportedStorageUrl, open_repository


class StoreConfigurationError(ValueError):
    """The configured store cannot be opened when the server starts: not a database, a
    corrupt one, a path that cannot be created, a file held locked by another process."""


def check_serving_configuration(settings: Settings) -> None:
    """Raises CatalogError, CredentialsError, UnsupportedStorageUrl or
    StoreConfigurationError for what would keep the server from starting."""
    load_catalog(settings.catalog_path)
    if settings.credentials_file is not None:
        load_credentials(settings.credentials_file)
    _check_tls_files(settings)
    _check_store(settings.storage_url)


def workers_for_the_store(settings: Settings) -> tuple[Settings, str | None]:
    """memory:// lives inside one process: with several workers each would hold its own
    store, and reads after a write would alternate between them (GRANTED, then DENIED).
    An explicit --workers above 1 with it is refused (StoreConfigurationError); left to
    the default (one per core), it runs one worker. Returns the settings to serve and,
    when they changed, what to tell the operator."""
    if settings.storage_url != MEMORY_URL or settings.workers == 1:
        return settings, None
    if settings.workers > 1:
        raise StoreConfigurationError(
            f"{MEMORY_URL} lives inside one process: {settings.workers} workers would each "
            f"hold a store of their own (a write reaches one of them). Use --workers 1, or a "
            f"shared store (sqlite:///PATH or spanner://...) for several workers"
        )
    return (
        dataclasses.replace(settings, workers=1),
        f"one worker: {MEMORY_URL} lives inside one process (several workers would each "
        f"hold a store of their own)",
    )


def _check_tls_files(settings: Settings) -> None:
    for setting in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = getattr(settings, setting)
        if path is None:
            continue
        try:
            with open(path, "rb") as pem:
                pem.read(1)
        except OSError as exc:
            raise CredentialsError(f"TLS: cannot read {setting} {path}: {exc.strerror}") from exc


def _check_store(url: str) -> None:
    if url.startswith(SPANNER_PREFIX):
        open_repository(url).close()  # parses the URL; connecting would create gRPC state
        return
    try:
        # The one place a served SQLite database is created and migrated: here, in the
        # parent, before any worker exists (workers open it as it is).
        repository = open_repository(url, create=True)
        try:
            repository.check()
        finally:
            repository.close()
    except UnsupportedStorageUrl:
        raise
    except (StoreError, sqlite3.Error, OSError, ValueError) as exc:
        raise StoreConfigurationError(f"cannot open the store {url}: {exc}") from exc
