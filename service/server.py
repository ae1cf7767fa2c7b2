"""The server factory: wires catalog, store, cache and servicers into a grpc.Server."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from entitlements.v1 import (
    entitlement_service_pb2,
    entitlement_service_pb2_grpc,
    offer_service_pb2,
    offer_service_pb2_grpc,
    subscription_event_service_pb2,
    subscription_event_service_pb2_grpc,
)
from service.auth import Authenticator, AuthInterceptor, load_credentials, server_credentials
from service.cache import UserStateCache
from service.config import Settings
from service.domain.catalog import Catalog, load_catalog
from service.reads import Clock, ReadService, utc_now
from service.servicers import EntitlementServicer, OfferServicer, SubscriptionEventServicer
from service.writes import WriteService
from storage.repository import AccountRepository
from storage.urls import open_repository

log = logging.getLogger(__name__)

ENTITLEMENT_SERVICE = entitlement_service_pb2.DESCRIPTOR.services_by_name[
    "EntitlementService"
].full_name
OFFER_SERVICE = offer_service_pb2.DESCRIPTOR.services_by_name["OfferService"].full_name
EVENT_SERVICE = subscription_event_service_pb2.DESCRIPTOR.services_by_name[
    "SubscriptionEventService"
].full_name
# Services whose health is reported ("" is the server as a whole).
SERVING_SERVICES = ("", ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    reads: ReadService
    writes: WriteService
    repository: AccountRepository

    def stop(self, grace_seconds: float) -> None:
        """Reports NOT_SERVING, lets in-flight RPCs finish within the grace, then closes
        the store."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_seconds).wait()
        self.repository.close()


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
    cache = UserStateCache(settings.cache_max_entries, settings.cache_ttl_seconds)
    reads = ReadService(catalog, repository, cache, clock)
    writes = WriteService(catalog, repository, cache, clock)

    if not authenticator.principals:
        log.warning("no credentials_file: every RPC but health and reflection is refused")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        interceptors=[AuthInterceptor(authenticator)],
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
    log.info(
        "serving on %s:%d (catalog %s, storage %s, %s, %d principals)",
        settings.host,
        port,
        catalog.version,
        settings.storage_url.split("://")[0],
        ("mutual TLS" if settings.tls_client_ca_file else "TLS") if tls else "plaintext",
        len(authenticator.principals),
    )
    return RunningServer(server, port, health_servicer, reads, writes, repository)
