"""The server factory: wires catalog, store, cache and servicers into a grpc.Server."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from entitlements.v1 import (
    entitlement_service_pb2_grpc,
    offer_service_pb2_grpc,
    subscription_event_service_pb2_grpc,
)
from service.bootstrap import build_application
from service.config import Settings
from service.domain.catalog import Catalog
from service.grpc_api.auth import (
    ENTITLEMENT_SERVICE,
    EVENT_SERVICE,
    OFFER_SERVICE,
    Authenticator,
    AuthInterceptor,
    load_credentials,
    server_credentials,
)
from service.grpc_api.guard import RequestGuard
from service.grpc_api.readiness import SERVING_SERVICES, ReadinessMonitor
from service.grpc_api.servicers import EntitlementServicer, OfferServicer, SubscriptionEventServicer
from service.usecases.clock import Clock, utc_now
from service.usecases.reads import ReadService
from service.usecases.writes import WriteService
from storage.repository import AccountRepository

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    reads: ReadService
    writes: WriteService
    repository: AccountRepository
    readiness: ReadinessMonitor

    def stop(self, grace_seconds: float) -> None:
        """Reports NOT_SERVING at once, refuses new RPCs, lets in-flight RPCs finish
        within the grace, then closes the store."""
        self.health.enter_graceful_shutdown()
        self.readiness.stop()
        self.server.stop(grace_seconds).wait()
        self.repository.close()


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments of the server: message and metadata limits, keepalive, and a
    maximum connection age so clients reconnect and rebalance across replicas."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(settings.max_connection_age_grace_seconds * 1000),
        ),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping idle connections (their own keepalive), but not flood them.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def build_grpc_server(
    settings: Settings, interceptors: Sequence[grpc.ServerInterceptor] = ()
) -> grpc.Server:
    """The grpc.Server every worker runs (and the benchmark floor copies): a handler
    thread pool, admission control, and the options above."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        interceptors=list(interceptors),
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or settings.threads,
    )


def start_server(
    settings: Settings,
    *,
    repository: AccountRepository | None = None,
    catalog: Catalog | None = None,
    clock: Clock = utc_now,
) -> RunningServer:
    """Builds and starts the server on settings.host:settings.port (0 picks a free port)
    and returns it with the port actually bound."""
    # Credentials and TLS material first: a configuration error leaves nothing open.
    authenticator = Authenticator(
        load_credentials(settings.credentials_file) if settings.credentials_file else ()
    )
    tls = server_credentials(settings)
    app = build_application(settings, repository=repository, catalog=catalog, clock=clock)
    catalog, repository, reads, writes = app.catalog, app.repository, app.reads, app.writes

    if not authenticator.principals:
        log.warning("no credentials_file: every RPC but health and reflection is refused")
    # Authentication runs first: a caller without credentials learns nothing more.
    server = build_grpc_server(
        settings, [AuthInterceptor(authenticator), RequestGuard(settings.max_rpc_seconds)]
    )
    entitlement_service_pb2_grpc.add_EntitlementServiceServicer_to_server(
        EntitlementServicer(reads), server
    )
    offer_service_pb2_grpc.add_OfferServiceServicer_to_server(OfferServicer(reads), server)
    subscription_event_service_pb2_grpc.add_SubscriptionEventServiceServicer_to_server(
        SubscriptionEventServicer(writes, clock), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE, health.SERVICE_NAME,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    if port == 0:
        repository.close()
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    server.start()
    for name in SERVING_SERVICES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    readiness = ReadinessMonitor(
        repository,
        health_servicer,
        settings.readiness_interval_seconds,
        settings.store_timeout_seconds,
    )
    readiness.start()
    log.info(
        "serving on %s:%d (catalog %s, storage %s, %s, %d principals)",
        settings.host,
        port,
        catalog.version,
        settings.storage_url.split("://")[0],
        ("mutual TLS" if settings.tls_client_ca_file else "TLS") if tls else "plaintext",
        len(authenticator.principals),
    )
    return RunningServer(server, port, health_servicer, reads, writes, repository, readiness)
