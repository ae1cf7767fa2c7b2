"""An in-process real server on an existing SQLite file, opened as a worker opens it,
with a client of its own; another connection holding the write lock."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import common_pb2
from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from entitlements.v1 import subscription_event_service_pb2 as ev
from entitlements.v1 import subscription_event_service_pb2_grpc as ev_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.sqlite import SqliteRepository
from tests.support.harness import ADMIN_TOKEN, SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually

# How often readiness probes the store in these tests.
PROBE_SECONDS = 0.2
# The longest health may take to follow the store: a few probes, on a busy machine too.
HEALTH_WITHIN_SECONDS = 5.0


@dataclasses.dataclass
class Client:
    channel: grpc.Channel
    writes: ev_grpc.SubscriptionEventServiceStub
    reads: es_grpc.EntitlementServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def to(cls, target: str) -> Client:
        channel = grpc.insecure_channel(target)
        return cls(
            channel,
            ev_grpc.SubscriptionEventServiceStub(with_bearer_token(channel, ADMIN_TOKEN)),
            es_grpc.EntitlementServiceStub(with_bearer_token(channel, SERVICE_TOKEN)),
            health_pb2_grpc.HealthStub(channel),
        )

    def grant(self, user_id: str, request_id: str, timeout: float | None = 10.0) -> str:
        """A support grant; its consistency token."""
        response = self.writes.GrantEntitlement(
            ev.GrantEntitlementRequest(
                request_id=request_id,
                user_id=user_id,
                grant=ev.Grant(kind=ev.GRANT_KIND_SUPPORT, feature_id="offline_downloads"),
            ),
            timeout=timeout,
        )
        return str(response.consistency_token)

    def entitled(self, user_id: str, timeout: float = 10.0, token: str = "") -> bool:
        response = self.reads.GetEntitlement(
            es.GetEntitlementRequest(
                user_id=user_id,
                feature_id="offline_downloads",
                consistency=common_pb2.ReadConsistency(consistency_token=token),
            ),
            timeout=timeout,
        )
        return bool(response.entitlement.granted)

    def status(self) -> int:
        request = health_pb2.HealthCheckRequest(service="")
        return int(self.health.Check(request, timeout=5).status)  # type: ignore[attr-defined]

    def await_status(self, wanted: int, within: float = HEALTH_WITHIN_SECONDS) -> float:
        """Seconds until health reports `wanted` (fails the test if it does not)."""
        return eventually(
            lambda: self.status() == wanted,
            within,
            0.05,
            lambda: f"health still {self.status()} after {within} s, wanted {wanted}",
        )


def create_database(path: Path) -> Path:
    """Creates and migrates the database, as the explicit creating step does."""
    SqliteRepository(path, create=True).close()
    return path


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return dataclasses.replace(
        Settings(
            host="127.0.0.1",
            port=0,
            storage_url="sqlite:///unused",  # the repository is given
            credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
            readiness_interval_seconds=PROBE_SECONDS,
        ),
        **overrides,  # type: ignore[arg-type]
    )


@contextmanager
def serving(
    tmp_path: Path, db: Path, **overrides: object
) -> Iterator[tuple[RunningServer, Client]]:
    """An in-process server on the existing database `db`, opened as a worker opens it."""
    running = start_server(
        settings_for(tmp_path, **overrides), repository=SqliteRepository(db, create=False)
    )
    client = Client.to(f"127.0.0.1:{running.port}")
    try:
        yield running, client
    finally:
        client.channel.close()
        running.stop(grace_seconds=1)


@contextmanager
def lock_held_elsewhere(db: Path) -> Iterator[None]:
    """Another connection holds the write lock (BEGIN IMMEDIATE) until the block ends."""
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
