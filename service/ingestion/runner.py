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

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
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
from service.ingestion.stripe_api import LibraryStripeApi
from service.ingestion.stripe_webhook import StripeVerifier
from service.usecases.ingestion import IngestionObserver, IngestionService, Verdict
from storage.dead_letters import DeadLetterStore
from storage.urls import open_account_links, open_dead_letters

if TYPE_CHECKING:
    from service.grpc_api.server import RunningServer
    from service.ingestion.metrics import IngestionMetrics

log = logging.getLogger(__name__)

# How often a worker counts the open dead letters for their gauge (besides at start and
# right after it keeps one): letters resolved by a replay, or kept by other workers.
OPEN_DEAD_LETTERS_REFRESH_SECONDS = 30.0


class OpenDeadLetters:
    """Keeps the gauge of open dead letters (entitlements_dead_letters_open) from the
    store's count: at start, right after this worker keeps a letter (wake), and every
    `interval_seconds`. Runs on the worker's loop; the count in a thread."""

    def __init__(
        self,
        store: DeadLetterStore,
        publish: Callable[[int], None],
        loop: asyncio.AbstractEventLoop,
        interval_seconds: float = OPEN_DEAD_LETTERS_REFRESH_SECONDS,
    ) -> None:
        self._store = store
        self._publish = publish
        self._loop = loop
        self._interval = interval_seconds
        self._wake = asyncio.Event()
        self._task: Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                self._task.result(timeout=5)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._publish(await asyncio.to_thread(self._store.open_count))
            except Exception as error:  # the store unavailable: the next round counts
                log.warning("cannot count open dead letters: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)


@dataclass
class CountingObserver:
    """The ingestion's metrics, and the open dead letters counted again after each kept."""

    metrics: IngestionMetrics
    open_letters: OpenDeadLetters

    def ingested(self, source: str, verdict: Verdict, lag_seconds: float | None) -> None:
        self.metrics.ingested(source, verdict, lag_seconds)

    def dead_letter(self, source: str, reason: str) -> None:
        self.metrics.dead_letter(source, reason)
        self.open_letters.wake()


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
    stripe_api = (
        LibraryStripeApi(settings.stripe_api_key, settings.stripe_api_url)
        if settings.stripe_api_key
        else None
    )
    return NotificationIngress(
        ingestion,
        app_store_verifier=apple,
        stripe_verifier=stripe,
        ready=ready,
        on_refusal=on_refusal,
        stripe_api=stripe_api,
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
    open_letters: OpenDeadLetters | None = None

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
        if self.open_letters is not None:
            self.open_letters.stop()
        self.ingestion.dead_letters.close()
        if self.ingestion.account_links is not None:
            self.ingestion.account_links.close()


def play_api(settings: Settings) -> PlayDeveloperApi:
    return HttpPlayDeveloperApi(settings.play_api_url)


def start_ingress(
    settings: Settings,
    running: RunningServer,
    api: PlayDeveloperApi | None = None,
    open_letters_refresh_seconds: float = OPEN_DEAD_LETTERS_REFRESH_SECONDS,
) -> RunningIngress | None:
    """Starts the ingestion in a worker: the HTTP ingress on the worker's loop when
    notifications_port is set, the Play subscriber when play_subscription is (None:
    neither is); with metrics, the gauge of open dead letters."""
    if not settings.notifications_port and not settings.play_subscription:
        return None
    observer: IngestionObserver | None = None
    on_refusal = None
    open_letters = None
    dead_letters = open_dead_letters(settings.storage_url)
    if settings.metrics_port:
        from service.ingestion.metrics import ingestion_metrics

        metrics = ingestion_metrics()
        on_refusal = metrics.refused_one
        open_letters = OpenDeadLetters(
            dead_letters,
            metrics.open_dead_letters_now,
            running.loop_thread.loop,
            open_letters_refresh_seconds,
        )
        observer = CountingObserver(metrics, open_letters)
    ingestion = build_ingestion(settings, running.app, dead_letters, observer)
    started = RunningIngress(ingestion, running, open_letters=open_letters)
    try:
        if open_letters is not None:
            open_letters.start()
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
