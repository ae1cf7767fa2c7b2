"""A real server on a free loopback port, backed by a real SQLite file seeded with the demo
users, with a fixed clock so every decision is reproducible. Its credentials file knows an
admin and a service token; `harness.channel` sends the service token on every call,
`harness.admin_channel` the admin token.

The store is SQLite unless a module parametrizes the fixture indirectly, e.g.
`pytestmark = pytest.mark.parametrize("harness", HARNESS_BACKENDS, indirect=True)` to run
on SQLite and on a fresh database of the Cloud Spanner emulator. `harness.open_store()`
opens a second repository on the same store, as another process would."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2_grpc, offer_service_pb2_grpc
from service.config import Settings
from service.grpc_api.auth import Role, bearer_metadata, credentials_yaml, with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.repository import AccountRepository
from storage.spanner import SpannerRepository
from storage.sqlite import SqliteRepository
from tests.spanner_emulator import BUSY_MACHINE_STORE_TIMEOUT, SpannerEmulator
from tests.state_writes import seed_demo_users

# Inside the example catalog's holiday discount window (2026-11-20 .. 2027-01-06).
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

ADMIN_TOKEN = "test-admin-token-0123456789"
SERVICE_TOKEN = "test-service-token-0123456789"
ADMIN_PRINCIPAL = "test-admin"
SERVICE_PRINCIPAL = "test-service"
HARNESS_BACKENDS = ("sqlite", "spanner")


def write_test_credentials(path: Path) -> Path:
    """A credentials file knowing ADMIN_TOKEN (role admin) and SERVICE_TOKEN (service)."""
    path.write_text(
        credentials_yaml(
            [
                (ADMIN_PRINCIPAL, Role.ADMIN, ADMIN_TOKEN),
                (SERVICE_PRINCIPAL, Role.SERVICE, SERVICE_TOKEN),
            ]
        )
    )
    return path


@dataclass
class Harness:
    running: RunningServer
    channel: grpc.Channel
    entitlements: entitlement_service_pb2_grpc.EntitlementServiceStub
    offers: offer_service_pb2_grpc.OfferServiceStub
    db_path: Path | None  # the SQLite file (None on another store)
    # Same server; every call carries the admin token (for the write RPCs).
    admin_channel: grpc.Channel
    credentials_file: Path
    # A new repository on the server's store (the caller closes it).
    open_store: Callable[[], AccountRepository]
    backend: str = "sqlite"
    admin_token: str = ADMIN_TOKEN
    service_token: str = SERVICE_TOKEN

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def admin_metadata(self) -> tuple[tuple[str, str]]:
        """Per-call metadata with the admin token, for a channel without one."""
        return bearer_metadata(self.admin_token)

    @property
    def service_metadata(self) -> tuple[tuple[str, str]]:
        return bearer_metadata(self.service_token)


@pytest.fixture(scope="module")
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    backend = getattr(request, "param", "sqlite")
    folder = tmp_path_factory.mktemp("server")
    db_path: Path | None = None
    open_store: Callable[[], AccountRepository]
    if backend == "spanner":
        emulator: SpannerEmulator = request.getfixturevalue("spanner_emulator")
        database = emulator.create_database("harness")
        storage_url = database.url

        def open_store() -> AccountRepository:
            return SpannerRepository(database, endpoint=emulator.host)
    else:
        sqlite_path = db_path = folder / "entitlements.db"
        storage_url = f"sqlite:///{db_path}"

        def open_store() -> AccountRepository:
            return SqliteRepository(sqlite_path)

    seeder = open_store()
    seed_demo_users(seeder, NOW)
    seeder.close()
    credentials_file = write_test_credentials(folder / "credentials.yaml")
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=storage_url,
        credentials_file=credentials_file,
        # Admits the 50 concurrent redemptions of the write tests without shedding any,
        # and gives them time: the emulator runs read-write transactions one at a time.
        threads=64,
        max_rpc_seconds=30,
        write_timeout_seconds=30,
    )
    if backend == "spanner":
        # The emulator on a busy machine (CI) can take longer than the default 0.5 s a call.
        settings = dataclasses.replace(settings, store_timeout_seconds=BUSY_MACHINE_STORE_TIMEOUT)
    running = start_server(settings, repository=open_store(), clock=lambda: NOW)
    target = f"127.0.0.1:{running.port}"
    channel = with_bearer_token(grpc.insecure_channel(target), SERVICE_TOKEN)
    admin_channel = with_bearer_token(grpc.insecure_channel(target), ADMIN_TOKEN)
    try:
        yield Harness(
            running,
            channel,
            entitlement_service_pb2_grpc.EntitlementServiceStub(channel),
            offer_service_pb2_grpc.OfferServiceStub(channel),
            db_path,
            admin_channel,
            credentials_file,
            open_store,
            backend,
        )
    finally:
        channel.close()
        admin_channel.close()
        running.stop(grace_seconds=1)
