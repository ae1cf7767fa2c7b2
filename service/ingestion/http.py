"""The HTTP ingress of store notifications (aiohttp), on the worker's event loop.

Routes: POST /notifications/app-store ({"signedPayload": JWS}), POST /notifications/stripe
(the event, signed in Stripe-Signature), GET /healthz. Answers:

- 200: the notification is durable (recorded, a duplicate, nothing to record, or kept as a
  dead letter); the store stops sending it;
- 400 / 401 / 403: it will never verify (malformed, forged or expired chain, another app
  or environment); 404: that store is not configured here; 409: its id was recorded with
  another content; 413: too large. Counted by reason;
- 503 (Retry-After): a transient fault (store unavailable, event not yet applicable,
  the worker stopping); the store redelivers.

On SIGTERM the worker drains first (drain(): /healthz answers 503 so that load balancers
stop sending, notifications are still answered as usual for the drain delay), then stops
(stop(): the port closes, requests in flight finish within the grace).

Verification (certificate chains, ECDSA, HMAC) runs in the loop's default thread pool,
never on the loop that answers cache hits; the write runs in the store pool.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from service.domain.app_store_mapping import map_app_store
from service.domain.ingestion import from_millis, from_seconds
from service.domain.stripe_mapping import map_stripe
from service.ingestion import app_store, stripe_webhook
from service.ingestion.app_store import AppStoreVerifier
from service.ingestion.errors import NotVerifiable, VerificationUnavailable
from service.ingestion.stripe_api import StripeApi, StripeApiUnavailable, expand_refund
from service.ingestion.stripe_webhook import StripeVerifier
from service.usecases.ingestion import IngestionService, IngestResult, Mapper, Verdict

log = logging.getLogger(__name__)

# The largest notification body accepted (App Store payloads are a few KB, Stripe's tens).
MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = 5

Refusal = Callable[[str, str], None]


class NotificationIngress:
    def __init__(
        self,
        ingestion: IngestionService,
        *,
        app_store_verifier: AppStoreVerifier | None = None,
        stripe_verifier: StripeVerifier | None = None,
        ready: Callable[[], bool] = lambda: True,
        on_refusal: Refusal | None = None,
        stripe_api: StripeApi | None = None,
    ) -> None:
        self.ingestion = ingestion
        self._stripe_api = stripe_api
        self._app_store = app_store_verifier
        self._stripe = stripe_verifier
        self._ready = ready
        self._on_refusal = on_refusal
        # Refusals before mapping, per (source, reason): tests and the metrics.
        self.refusals: dict[tuple[str, str], int] = {}
        # Draining: health answers 503 (load balancers stop sending), notifications are
        # still taken. Stopping: the port is closing; a request on a connection still open
        # is answered 503 (the store redelivers).
        self.draining = False
        self.stopping = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/notifications/app-store", self._app_store_notification)
        app.router.add_post("/notifications/stripe", self._stripe_notification)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self, host: str, port: int, shutdown_grace_seconds: float = 5.0) -> int:
        """Listens on host:port (SO_REUSEPORT, shared by the workers; 0: a free port)."""
        self._runner = web.AppRunner(
            self.application(),
            access_log=None,
            shutdown_timeout=shutdown_grace_seconds,
            handle_signals=False,
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]
        return self.port

    async def drain(self) -> None:
        """Health turns 503 (load balancers stop sending); notifications are still taken
        and answered as usual."""
        self.draining = True

    async def stop(self) -> None:
        """Stops listening and waits for the requests in flight (within the grace given
        to start)."""
        self.draining = self.stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not self._ready():
            return web.json_response({"status": "store unavailable"}, status=503)
        return web.json_response({"status": "serving"})

    def _refuse(self, source: str, error: NotVerifiable) -> web.Response:
        key = (source, error.reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if self._on_refusal is not None:
            self._on_refusal(source, error.reason)
        log.warning("%s notification refused (%s): %s", source, error.reason, error)
        return web.json_response(
            {"refused": error.reason, "detail": str(error)}, status=error.status
        )

    async def _read(self, request: web.Request, source: str) -> bytes | web.Response:
        if self.stopping:
            return _retry("stopping")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(source, NotVerifiable(413, "too_large", "body too large"))

    async def _app_store_notification(self, request: web.Request) -> web.Response:
        source = app_store.SOURCE
        if self._app_store is None:
            return web.json_response(
                {"error": "App Store notifications are not configured"}, status=404
            )
        body = await self._read(request, source)
        if isinstance(body, web.Response):
            return body
        try:
            uuid, notification = await asyncio.get_running_loop().run_in_executor(
                None, self._app_store.verify, body
            )
        except NotVerifiable as error:
            return self._refuse(source, error)
        except VerificationUnavailable as error:
            return _retry(f"verification: {error}")
        sent_at = from_millis(notification.get("signedDate"))
        return await self._ingest(source, uuid, notification, map_app_store, sent_at)

    async def _stripe_notification(self, request: web.Request) -> web.Response:
        source = stripe_webhook.SOURCE
        if self._stripe is None:
            return web.json_response(
                {"error": "Stripe notifications are not configured"}, status=404
            )
        body = await self._read(request, source)
        if isinstance(body, web.Response):
            return body
        signature = request.headers.get("Stripe-Signature")
        try:
            event_id, event = await asyncio.get_running_loop().run_in_executor(
                None, self._stripe.verify, body, signature
            )
        except NotVerifiable as error:
            return self._refuse(source, error)
        if self._stripe_api is not None:
            # A refund or dispute naming its charge or invoice only by id: fetched.
            try:
                event = await asyncio.get_running_loop().run_in_executor(
                    None, expand_refund, event, self._stripe_api
                )
            except StripeApiUnavailable as error:
                return _retry(f"Stripe API: {error}")
        sent_at = from_seconds(event.get("created"))
        return await self._ingest(source, event_id, event, map_stripe, sent_at)

    async def _ingest(
        self,
        source: str,
        delivery_id: str,
        notification: dict[str, Any],
        mapper: Mapper,
        sent_at: datetime | None,
    ) -> web.Response:
        result = await self.ingestion.ingest(source, delivery_id, notification, mapper, sent_at)
        return _answer(delivery_id, result)


def _retry(detail: str) -> web.Response:
    return web.json_response(
        {"verdict": Verdict.RETRY.value, "detail": detail},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _answer(delivery_id: str, result: IngestResult) -> web.Response:
    if result.verdict is Verdict.RETRY:
        log.info("notification %s not taken in yet: %s", delivery_id, result.detail)
        return _retry(result.detail)
    body = {"id": delivery_id, "verdict": result.verdict.value, "detail": result.detail}
    if result.verdict is Verdict.CONFLICT:
        log.warning("notification %s refused: %s", delivery_id, result.detail)
        return web.json_response(body, status=409)
    return web.json_response(body, status=200)
