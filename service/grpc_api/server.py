"""The server factory: wires catalog, store, cache and servicers into a grpc.Server."""

from __future__ import annotations

import logging
import threading
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
from service.config import Settings
from service.domain.catalog import Catalog, load_catalog
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
from service.grpc_api.servicers import EntitlementServicer, OfferServicer, SubscriptionEventServicer
from service.usecases.cache import UserStateCache
from service.usecases.clock import Clock, utc_now
from service.usecases.reads import CachePolicy, ReadService
from service.usecases.writes import WriteService
from storage.deadline import DeadlineExceeded, deadline_in
from storage.faults import FaultInjectingRepository
from storage.repository import AccountRepository, StoreError
from storage.urls import open_repository

log = logging.getLogger(__name__)

# Services whose health is reported ("" is the server as a whole).
SERVING_SERVICES = ("", ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE)


class ReadinessMonitor:
    """Probes the store every interval and reports health NOT_SERVING while it cannot
    serve, SERVING again when it recovers. The process stays up meanwhile, so its cache
    keeps serving what it can (stale-if-error)."""

    def __init__(
        self,
        repository: AccountRepository,
        health_servicer: health.HealthServicer,
        interval_seconds: float,
        store_timeout_seconds: float,
    ) -> None:
        self._repository = repository
        self._health = health_servicer
        self._interval = interval_seconds
        self._store_timeout = store_timeout_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self.ready = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + self._store_timeout + 1)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                with deadline_in(self._store_timeout):
                    self._repository.check()
                ready = True
            except (StoreError, DeadlineExceeded):
                ready = False
            if ready != self.ready:
                self.ready = ready
                log.warning("store %s", "recovered: serving" if ready else "unreachable")
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in SERVING_SERVICES:
                    self._health.set(name, status)


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
    catalog = catalog or load_catalog(settings.catalog_path)
    repository = repository or open_repository(settings.storage_url)
    if settings.fault_store_delay_ms > 0:
        log.warning("fault injection: every store call waits %d ms", settings.fault_store_delay_ms)
        repository = FaultInjectingRepository(repository, settings.fault_store_delay_ms / 1000)
    cache = UserStateCache(settings.cache_max_entries, settings.cache_ttl_seconds)
    policy = CachePolicy(settings.store_timeout_seconds, settings.max_staleness_seconds)
    reads = ReadService(catalog, repository, cache, clock, policy)
    writes = WriteService(catalog, repository, cache, clock, settings.write_timeout_seconds)

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
