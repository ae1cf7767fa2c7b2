"""The ingestion in a serving worker: started beside the gRPC server on the worker's event
loop when notifications_port is set, drained and stopped with it (service/grpc_api/workers.py).

Why in every worker rather than a process of its own: notifications are rare next to
reads (a few per subscriber per month), so they cost the workers little, and this way they
share the workers' supervision (a dead worker is replaced), their drain on SIGTERM, their
metrics (summed by the supervisor) and their application: a write invalidates the
worker's own cache and wakes its watches at once, the other workers' through the change
feed. The port is claimed by the supervisor and shared with SO_REUSEPORT like the gRPC
port. Verification runs in a thread pool, so the loop that answers cache hits only parses
HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.bootstrap import Application
from service.config import Settings, SettingsError
from service.ingestion.app_store import AppStoreVerifier, load_root_certificates
from service.ingestion.app_store_api import AppStoreServerApi, LibraryAppStoreServerApi
from service.ingestion.http import NotificationIngress
from service.ingestion.play import (
    HttpPlayDeveloperApi,
    PlayDeveloperApi,
    PlayNotifications,
    PlaySubscriber,
)
from service.ingestion.stripe_webhook import StripeVerifier
from service.usecases.ingestion import IngestionObserver, IngestionService
from storage.dead_letters import DeadLetterStore
from storage.urls import open_account_links, open_dead_letters

if TYPE_CHECKING:
    from service.grpc_api.server import RunningServer

log = logging.getLogger(__name__)


def build_ingestion(
    settings: Settings,
    app: Application,
    dead_letters: DeadLetterStore | None = None,
    observer: IngestionObserver | None = None,
) -> IngestionService:
    return IngestionService(
        app.catalog,
        app.writes,
        app.store_calls,
        dead_letters or open_dead_letters(settings.storage_url),
        app.clock,
        settings.write_timeout_seconds,
        observer,
        open_account_links(settings.storage_url),
    )


def app_store_verifier(settings: Settings) -> AppStoreVerifier:
    return AppStoreVerifier(
        load_root_certificates(settings.apple_root_certificates),
        settings.apple_bundle_id,
        settings.apple_environment,
        settings.apple_app_apple_id,
    )


def app_store_api(settings: Settings) -> AppStoreServerApi:
    return LibraryAppStoreServerApi(
        settings.apple_api_key_file,
        settings.apple_api_key_id,
        settings.apple_api_issuer_id,
        settings.apple_bundle_id,
        settings.apple_environment,
        settings.apple_api_url,
    )


def build_ingress(
    settings: Settings,
    ingestion: IngestionService,
    ready: Callable[[], bool] = lambda: True,
) -> NotificationIngress:
    """The ingress with a verifier for each store configured in the settings."""
    apple = None
    if settings.apple_root_certificates or settings.apple_bundle_id:
        apple = app_store_verifier(settings)
    stripe = (
        StripeVerifier(settings.stripe_webhook_secret) if settings.stripe_webhook_secret else None
    )
    if apple is None and stripe is None:
        log.warning("notifications_port is set but no store is configured: every POST is 404")
    on_refusal = None
    if settings.metrics_port:
        from service.ingestion.metrics import ingestion_metrics

        on_refusal = ingestion_metrics().refused_one
    return NotificationIngress(
        ingestion,
        app_store_verifier=apple,
        stripe_verifier=stripe,
        ready=ready,
        on_refusal=on_refusal,
    )


@dataclass
class RunningIngress:
    """The ingestion of one worker: the HTTP ingress and the Play subscriber (either may
    be off)."""

    ingestion: IngestionService
    running: RunningServer
    ingress: NotificationIngress | None = None
    play: PlayNotifications | None = None
    subscriber: PlaySubscriber | None = None

    @property
    def port(self) -> int:
        return self.ingress.port if self.ingress is not None else 0

    def drain(self) -> None:
        """The first step of a graceful stop: the HTTP ingress's health turns 503 (load
        balancers stop sending) while it keeps answering notifications; Pub/Sub pulls go
        on (Pub/Sub needs no warning)."""
        if self.ingress is not None:
            self.running.loop_thread.run(self.ingress.drain())

    def stop(self) -> None:
        """Stops taking notifications: Pub/Sub pulls end (unacknowledged messages are
        redelivered), the HTTP port closes after the requests in flight (within the
        shutdown grace)."""
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.ingress is not None:
            self.running.loop_thread.run(self.ingress.stop())
        self.ingestion.dead_letters.close()
        if self.ingestion.account_links is not None:
            self.ingestion.account_links.close()


def play_api(settings: Settings) -> PlayDeveloperApi:
    return HttpPlayDeveloperApi(settings.play_api_url)


def start_ingress(
    settings: Settings, running: RunningServer, api: PlayDeveloperApi | None = None
) -> RunningIngress | None:
    """Starts the ingestion in a worker: the HTTP ingress on the worker's loop when
    notifications_port is set, the Play subscriber when play_subscription is (None:
    neither is)."""
    if not settings.notifications_port and not settings.play_subscription:
        return None
    observer = None
    on_refusal = None
    if settings.metrics_port:
        from service.ingestion.metrics import ingestion_metrics

        observer = ingestion_metrics()
        on_refusal = observer.refused_one
    ingestion = build_ingestion(settings, running.app, observer=observer)
    started = RunningIngress(ingestion, running)
    try:
        if settings.notifications_port:
            ingress = build_ingress(settings, ingestion, ready=lambda: running.readiness.ready)
            started.ingress = ingress
            running.loop_thread.run(
                ingress.start(
                    settings.host, settings.notifications_port, settings.shutdown_grace_seconds
                )
            )
            log.info("store notifications on http://%s:%d", settings.host, ingress.port)
        if settings.play_subscription:
            if not settings.play_package_name:
                raise SettingsError("play_subscription needs play_package_name")
            started.play = PlayNotifications(
                ingestion,
                api or play_api(settings),
                settings.play_package_name,
                running.loop_thread.loop,
                on_refusal,
            )
            started.subscriber = PlaySubscriber(settings.play_subscription, started.play)
            started.subscriber.start()
    except BaseException:
        started.stop()
        raise
    return started
