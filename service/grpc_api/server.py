"""The server factory: a grpc.aio server (on uvloop) around the application.

Cache hits are answered on the event loop, with no thread hop; blocking store calls run
in the application's bounded store pool (service.usecases.store_calls). Each method of
our services is registered wrapped by the RPC guard (auth, malformed requests, deadline
budget, error mapping, audit); health and reflection are registered as they are.
Admission is the guard's: while the worker's queueing delay (the event loop's lag) is
above its target (service.grpc_api.overload), or beyond `max_concurrent_rpcs` calls of
our services in flight, a call is answered RESOURCE_EXHAUSTED at once, and counted; a call
whose deadline passed before its handler started is dropped DEADLINE_EXCEEDED, counted.
grpc's own bound stays as a backstop at twice max_concurrent_rpcs (it also counts health
and reflection calls, and refuses before any of our code runs, uncounted). The server's
options bound what queues before our code: streams per connection, handshake and idle
timeouts, keepalive enforcement.

Health: "liveness" is SERVING while the process runs (the store does not change it);
"" and each of our services report readiness, which follows the store. On stop, readiness
turns NOT_SERVING at once, the server keeps serving for the drain delay (load balancers
notice), then stops within the grace.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from entitlements.v1 import (
    admin_service_pb2,
    entitlement_service_pb2,
    offer_service_pb2,
    subscription_event_service_pb2,
)
from service.bootstrap import Application, build_application
from service.config import Settings
from service.domain.catalog import Catalog
from service.grpc_api.admin import AdminServicer
from service.grpc_api.auth import (
    ADMIN_SERVICE,
    ENTITLEMENT_SERVICE,
    EVENT_SERVICE,
    OFFER_SERVICE,
    Authenticator,
    load_credentials,
    server_credentials,
)
from service.grpc_api.event_loop import LoopThread, loop_kind
from service.grpc_api.guard import RpcGuard, tolerant
from service.grpc_api.overload import QueueDelayMonitor
from service.grpc_api.readiness import ReadinessMonitor, set_health
from service.grpc_api.servicers import EntitlementServicer, OfferServicer, SubscriptionEventServicer
from service.usecases.clock import Clock, utc_now
from service.usecases.reads import ReadService
from service.usecases.writes import WriteService
from storage.repository import AccountRepository

log = logging.getLogger(__name__)

# In-flight RPCs a worker admits when max_concurrent_rpcs is 0 (see Settings).
DEFAULT_MAX_CONCURRENT_RPCS = 256
# grpc's own admission bound, a backstop above the guard's: this many times it.
GRPC_BACKSTOP_FACTOR = 2
# The health service name of liveness (SERVING while the process runs).
LIVENESS_SERVICE = "liveness"
# Pings sooner than min_ping_interval_without_data a client may send before its connection
# is closed (grpc's default, stated).
MAX_PING_STRIKES = 2


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments of the server: message and metadata limits, keepalive, and a
    maximum connection age so clients reconnect and rebalance across replicas."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        # The soft limit alone refuses calls above it only at random, up to the hard limit
        # (1.25 times it): both, so max_metadata_bytes is exact.
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(settings.max_connection_age_grace_seconds * 1000),
        ),
        ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping idle connections (their own keepalive), but not flood them: a
        # ping sooner than this is a strike, and after max_ping_strikes (2) the connection
        # is closed (GOAWAY ENHANCE_YOUR_CALM).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.keepalive_permit_without_calls", 1),
        # Bounds on what can queue before our code runs (issue 21): connections that never
        # finish their handshake, connections left idle, and (when set) calls per
        # connection.
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * 1000)),
        ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_seconds * 1000)),
    ] + (
        [("grpc.max_concurrent_streams", settings.max_streams_per_connection)]
        if settings.max_streams_per_connection
        else []
    )


def max_concurrent_rpcs(settings: Settings) -> int:
    return settings.max_concurrent_rpcs or DEFAULT_MAX_CONCURRENT_RPCS


def queue_delay_monitor(settings: Settings) -> QueueDelayMonitor:
    """The worker's CoDel state on the event loop's lag, the lag histogram told each
    sample when metrics are on."""
    on_lag = None
    if settings.metrics_port:
        from service.grpc_api.metrics import metrics

        on_lag = metrics().loop_lag.observe
    return QueueDelayMonitor(
        settings.overload_target_ms / 1000,
        settings.overload_interval_ms / 1000,
        on_lag=on_lag,
    )


def build_aio_server(settings: Settings) -> grpc.aio.Server:
    """The grpc.aio server every worker runs (and the benchmark floor copies): admission
    control and the options above. Call on the loop that will run it."""
    return grpc.aio.server(
        options=server_options(settings),
        maximum_concurrent_rpcs=max_concurrent_rpcs(settings) * GRPC_BACKSTOP_FACTOR,
    )


def register(
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, guard: RpcGuard
) -> None:
    """Registers every method of `service` (unary, or server-streaming) with the
    servicer's method of the same name, wrapped by the guard, with a deserializer that
    tolerates bad bytes."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        name = f"/{service.full_name}/{method.name}"
        behaviour = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                guard.wrap_stream(name, behaviour),
                request_deserializer=tolerant(request_class.FromString),
                response_serializer=response_class.SerializeToString,
            )
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            guard.wrap(name, behaviour),
            request_deserializer=tolerant(request_class.FromString),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # Registered methods skip grpc's per-call lookup through the generic handlers.
    server.add_registered_method_handlers(service.full_name, handlers)


@dataclass
class RunningServer:
    """A started server, driven from another thread (its loop runs in its own)."""

    port: int
    app: Application
    health: health.aio.HealthServicer
    readiness: ReadinessMonitor
    server: grpc.aio.Server
    loop_thread: LoopThread
    guard: RpcGuard | None = None
    # Copies the worker's counts into the metrics (None: metrics off).
    metrics: Any = field(default=None)
    # The worker's queueing delay and whether it sheds on it (service.grpc_api.overload).
    overload: QueueDelayMonitor | None = None

    @property
    def reads(self) -> ReadService:
        return self.app.reads

    @property
    def writes(self) -> WriteService:
        return self.app.writes

    @property
    def repository(self) -> AccountRepository:
        return self.app.repository

    def stop(self, grace_seconds: float, drain_delay_seconds: float = 0.0) -> None:
        """Reports readiness NOT_SERVING at once, keeps serving for the drain delay,
        then refuses new RPCs, lets in-flight RPCs finish within the grace, and closes
        the store."""
        try:
            self.drain(drain_delay_seconds)
            self.loop_thread.run(self._stop(grace_seconds))
        finally:
            self.loop_thread.stop()
            self.app.close()

    def drain(self, delay_seconds: float) -> None:
        """The first step of stop, alone (what else the worker serves drains alongside:
        service/grpc_api/workers.py): readiness NOT_SERVING at once, serving for the delay."""
        if delay_seconds > 0:
            self.loop_thread.run(self._drain(delay_seconds))

    async def _drain(self, delay_seconds: float) -> None:
        await self.readiness.stop()  # it must not turn readiness back to SERVING
        await set_health(self.health, serving=False)
        log.info("draining: readiness NOT_SERVING, serving %g s more", delay_seconds)
        await asyncio.sleep(delay_seconds)

    async def _stop(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.readiness.stop()
        # Streams never end by themselves: ended first, UNAVAILABLE, so that their
        # clients resume on another server instead of holding this one for the grace.
        self.app.end_streams()
        await self.server.stop(grace_seconds)
        if self.overload is not None:
            await self.overload.stop()
        await self.app.stop_feed()
        if self.metrics is not None:
            await self.metrics.stop()
        if (tracing := self.app.observers.tracing) is not None:
            await asyncio.to_thread(tracing.flush)


def start_server(
    settings: Settings,
    *,
    repository: AccountRepository | None = None,
    catalog: Catalog | None = None,
    clock: Clock = utc_now,
    tracer_provider: Any = None,
    feed_relay: str | None = None,
) -> RunningServer:
    """Builds and starts the server on settings.host:settings.port (0 picks a free port)
    and returns it with the port actually bound. With settings.tracing on, spans go to
    `tracer_provider` when given (tests: an in-memory exporter), else to the process's
    (service.grpc_api.tracing.tracer_provider). With `feed_relay`, the change feed is
    followed through the pod's relay at that Unix socket (service.grpc_api.feed_reader)."""
    # Credentials and TLS material first: a configuration error leaves nothing open.
    authenticator = Authenticator(
        load_credentials(settings.credentials_file) if settings.credentials_file else ()
    )
    tls = server_credentials(settings)
    app = build_application(
        settings,
        repository=repository,
        catalog=catalog,
        clock=clock,
        feed_relay=feed_relay,
        tracer_provider=tracer_provider,
    )
    if not authenticator.principals:
        log.warning("no credentials_file: every RPC but health and reflection is refused")
    loop_thread = LoopThread("grpc-server")
    try:
        running = loop_thread.run(_start(settings, app, authenticator, tls, loop_thread))
    except BaseException:
        loop_thread.stop()
        app.close()
        raise
    log.info(
        "serving on %s:%d (catalog %s, storage %s, %s, %d principals, grpc.aio on %s)",
        settings.host,
        running.port,
        app.catalog.version,
        settings.storage_url.split("://")[0],
        ("mutual TLS" if settings.tls_client_ca_file else "TLS") if tls else "plaintext",
        len(authenticator.principals),
        loop_kind(),
    )
    return running


async def _start(
    settings: Settings,
    app: Application,
    authenticator: Authenticator,
    tls: grpc.ServerCredentials | None,
    loop_thread: LoopThread,
) -> RunningServer:
    server = build_aio_server(settings)
    overload = queue_delay_monitor(settings)
    guard = RpcGuard(
        authenticator,
        settings.max_rpc_seconds,
        max_in_flight=max_concurrent_rpcs(settings),
        observer=app.observers.rpc,
        tracing=app.observers.tracing,
        overload=overload,
    )
    _register_services(server, app, guard)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ENTITLEMENT_SERVICE, OFFER_SERVICE, EVENT_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME,
         reflection.SERVICE_NAME),
        server,
    )  # fmt: skip
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    await app.start_feed()
    await server.start()
    overload.start()
    await set_health(health_servicer, serving=True)
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    readiness = ReadinessMonitor(
        app.repository,
        health_servicer,
        app.store_calls,
        settings.readiness_interval_seconds,
        settings.store_timeout_seconds,
    )
    readiness.start()
    worker_metrics = _worker_metrics(settings, app, guard, readiness)
    return RunningServer(
        port,
        app,
        health_servicer,
        readiness,
        server,
        loop_thread,
        guard,
        worker_metrics,
        overload,
    )


def _register_services(server: grpc.aio.Server, app: Application, guard: RpcGuard) -> None:
    """Our four services, each method wrapped by the guard."""
    services = (
        (
            entitlement_service_pb2,
            ENTITLEMENT_SERVICE,
            EntitlementServicer(app.reads, app.watches, app.changes),
        ),
        (offer_service_pb2, OFFER_SERVICE, OfferServicer(app.reads)),
        (subscription_event_service_pb2, EVENT_SERVICE, SubscriptionEventServicer(app.writes)),
        (admin_service_pb2, ADMIN_SERVICE, AdminServicer(app.support)),
    )
    for module, name, servicer in services:
        register(
            server, module.DESCRIPTOR.services_by_name[name.rpartition(".")[2]], servicer, guard
        )


def _worker_metrics(
    settings: Settings, app: Application, guard: RpcGuard, readiness: ReadinessMonitor
) -> Any:
    """The worker's counts copied into the metrics now and then (None: metrics off)."""
    if not settings.metrics_port:
        return None
    from service.grpc_api.metrics import WorkerMetrics

    worker_metrics = WorkerMetrics(
        cache_stats=lambda: app.cache.stats,
        cache_entries=lambda: len(app.cache),
        single_flight_waits=lambda: app.reads.single_flight_waits,
        rpcs_shed=lambda: guard.shed,
        rpcs_shed_queue_delay=lambda: guard.shed_queue_delay,
        rpcs_expired=lambda: guard.expired,
        store_ready=lambda: readiness.ready,
        catalog_version=app.catalog.version,
        feed_stats=(lambda: feed.stats) if (feed := app.feed) is not None else None,
        watch_streams=lambda: app.watches.open_watches,
        change_streams=lambda: app.changes,
    )
    worker_metrics.start()
    return worker_metrics
