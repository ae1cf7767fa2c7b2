"""An in-process real server over a fault-injecting SQLite store (a slow or failing store
on demand), and the status code of a call."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from storage.faults import FaultInjectingRepository
from storage.sqlite import SqliteRepository
from tests.support.harness import SERVICE_TOKEN, write_test_credentials

SERVING = health_pb2.HealthCheckResponse.SERVING


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclasses.dataclass
class FaultyServer:
    running: RunningServer
    store: FaultInjectingRepository
    stub: entitlement_service_pb2_grpc.EntitlementServiceStub
    health: health_pb2_grpc.HealthStub

    def get(self, user_id: str, timeout: float = 5.0) -> es.GetEntitlementResponse:
        return self.stub.GetEntitlement(
            es.GetEntitlementRequest(user_id=user_id, feature_id="offline_downloads"),
            timeout=timeout,
        )

    def status(self) -> int:
        request = health_pb2.HealthCheckRequest(service="")
        return int(self.health.Check(request, timeout=5).status)  # type: ignore[attr-defined]


@contextmanager
def faulty_server(tmp_path: Path, **overrides: object) -> Iterator[FaultyServer]:
    store = FaultInjectingRepository(SqliteRepository(tmp_path / "faults.db"))
    settings = dataclasses.replace(
        Settings(
            host="127.0.0.1",
            port=0,
            credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        ),
        **overrides,  # type: ignore[arg-type]
    )
    running = start_server(settings, repository=store)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield FaultyServer(
            running,
            store,
            entitlement_service_pb2_grpc.EntitlementServiceStub(
                with_bearer_token(channel, SERVICE_TOKEN)
            ),
            health_pb2_grpc.HealthStub(channel),
        )
    finally:
        store.delay_seconds = 0
        store.failing = False
        channel.close()
        running.stop(grace_seconds=1)


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK
