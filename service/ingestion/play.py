"""Google Play real-time developer notifications: a Pub/Sub pull subscriber
(google-cloud-pubsub; PUBSUB_EMULATOR_HOST points it at the emulator) and the Play
Developer API's purchases.subscriptionsv2 behind an interface (PlayDeveloperApi).

A notification is only a trigger: its content is not signed, so the subscription's state is
always read from the Play Developer API (authenticated with the service's own Google
credentials), and a forged message can at most make us read a real purchase again. Each
message is acknowledged to Pub/Sub only once its event is durable (recorded, a duplicate,
nothing to record, or a dead letter); a transient failure (the API or our store
unavailable, an event not applicable yet) nacks it, and Pub/Sub redelivers. After a new
purchase is recorded, the purchase is acknowledged to Play (Play refunds purchases left
unacknowledged for three days).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Protocol

import requests

from service.domain.play_mapping import map_play, purchase_token
from service.usecases.ingestion import IngestionService, IngestResult, Verdict

log = logging.getLogger(__name__)

SOURCE = "google_play"
ANDROID_PUBLISHER_SCOPE = "https://www.googleapis.com/auth/androidpublisher"
API_TIMEOUT_SECONDS = 10.0
INGEST_TIMEOUT_SECONDS = 30.0
ACKNOWLEDGE_PENDING = "ACKNOWLEDGEMENT_STATE_PENDING"


class PlayApiUnavailable(Exception):
    """The Play Developer API did not answer usably now: the message is redelivered."""


class PlayDeveloperApi(Protocol):
    def get_subscription(self, package_name: str, token: str) -> dict[str, Any]:
        """purchases.subscriptionsv2.get: the SubscriptionPurchaseV2 resource."""

    def acknowledge(self, package_name: str, product_id: str, token: str) -> None:
        """purchases.subscriptions.acknowledge."""


class HttpPlayDeveloperApi:
    """The Play Developer API over HTTP (JSON). Against Google (an https base URL) the
    session carries the environment's Google credentials (Application Default
    Credentials) with the androidpublisher scope; against a local stand-in (tests) a plain
    session."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self._base = base_url.rstrip("/") + "/androidpublisher/v3/applications/"
        if session is None:
            if base_url.startswith("https://"):
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(scopes=[ANDROID_PUBLISHER_SCOPE])
                session = AuthorizedSession(credentials)
            else:
                session = requests.Session()
        self._session = session

    def _url(self, package_name: str, path: str) -> str:
        return self._base + urllib.parse.quote(package_name, safe="") + path

    def get_subscription(self, package_name: str, token: str) -> dict[str, Any]:
        quoted = urllib.parse.quote(token, safe="")
        url = self._url(package_name, f"/purchases/subscriptionsv2/tokens/{quoted}")
        try:
            response = self._session.get(url, timeout=API_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise PlayApiUnavailable(f"subscriptionsv2.get: {error}") from error
        if response.status_code != 200:
            raise PlayApiUnavailable(f"subscriptionsv2.get: HTTP {response.status_code}")
        resource = response.json()
        if not isinstance(resource, dict):
            raise PlayApiUnavailable("subscriptionsv2.get: not a JSON object")
        return resource

    def acknowledge(self, package_name: str, product_id: str, token: str) -> None:
        product = urllib.parse.quote(product_id, safe="")
        quoted = urllib.parse.quote(token, safe="")
        url = self._url(
            package_name, f"/purchases/subscriptions/{product}/tokens/{quoted}:acknowledge"
        )
        try:
            response = self._session.post(url, json={}, timeout=API_TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise PlayApiUnavailable(f"acknowledge: {error}") from error
        if response.status_code not in (200, 204):
            raise PlayApiUnavailable(f"acknowledge: HTTP {response.status_code}")


Refusal = Callable[[str, str], None]


class PlayNotifications:
    """Takes one RTDN message (its data, id and publish time) to a verdict; the Pub/Sub
    side (ack or nack) is the subscriber's. Runs in a Pub/Sub callback thread: the API
    calls block there, the ingestion runs on the worker's event loop."""

    def __init__(
        self,
        ingestion: IngestionService,
        api: PlayDeveloperApi,
        package_name: str,
        loop: asyncio.AbstractEventLoop,
        on_refusal: Refusal | None = None,
    ) -> None:
        self.ingestion = ingestion
        self._api = api
        self._package = package_name
        self._loop = loop
        self._on_refusal = on_refusal
        self.refusals: dict[str, int] = {}
        self.acknowledged = 0

    def _refuse(self, reason: str, detail: str) -> bool:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        if self._on_refusal is not None:
            self._on_refusal(SOURCE, reason)
        log.warning("Play notification refused (%s): %s", reason, detail)
        return True  # acknowledged: it will never be taken in

    def handle(self, data: bytes, message_id: str, published: datetime | None) -> bool:
        """True: acknowledge the message (durable, or never takeable); False: redeliver."""
        try:
            notification = json.loads(data)
            if not isinstance(notification, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            return self._refuse("malformed", str(error))
        if notification.get("packageName") != self._package:
            return self._refuse("wrong_app", f"package {notification.get('packageName')!r}")
        token = purchase_token(notification)
        resource: dict[str, Any] = {}
        if token is not None:
            try:
                resource = self._api.get_subscription(self._package, token)
            except PlayApiUnavailable as error:
                log.warning("Play message %s redelivered later: %s", message_id, error)
                return False
        payload = {"messageId": message_id, "notification": notification, "subscription": resource}
        result = self._ingest(message_id, payload, published)
        if result.verdict is Verdict.RETRY:
            return False
        if result.verdict is Verdict.CONFLICT:
            # A redelivered message read a newer state than its first delivery recorded:
            # the first recording stands, and the newer state has its own notification.
            log.info("Play message %s recorded before with an older state", message_id)
            return True
        if result.verdict is Verdict.RECORDED and token is not None:
            return self._acknowledge_purchase(resource, token)
        return True

    def _ingest(
        self, message_id: str, payload: Mapping[str, Any], published: datetime | None
    ) -> IngestResult:
        future: Future[IngestResult] = asyncio.run_coroutine_threadsafe(
            self.ingestion.ingest(SOURCE, message_id, payload, map_play, published), self._loop
        )
        return future.result(INGEST_TIMEOUT_SECONDS)

    def _acknowledge_purchase(self, resource: Mapping[str, Any], token: str) -> bool:
        if resource.get("acknowledgementState") != ACKNOWLEDGE_PENDING:
            return True
        items = resource.get("lineItems") or []
        product = items[0].get("productId") if items and isinstance(items[0], dict) else None
        if not isinstance(product, str):
            return True
        try:
            self._api.acknowledge(self._package, product, token)
        except PlayApiUnavailable as error:
            # Redelivered: the event is then a duplicate, and the acknowledgement is retried.
            log.warning("Play purchase not acknowledged yet: %s", error)
            return False
        self.acknowledged += 1
        return True


class PlaySubscriber:
    """A streaming pull on the RTDN subscription; each worker runs one (Pub/Sub spreads
    the messages over them)."""

    def __init__(self, subscription: str, notifications: PlayNotifications) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        self._subscription = subscription
        self._notifications = notifications
        self._client = pubsub_v1.SubscriberClient()
        self._future: Any = None
        self._flow = pubsub_v1.types.FlowControl(max_messages=16)

    def start(self) -> None:
        self._future = self._client.subscribe(
            self._subscription, self._callback, flow_control=self._flow
        )
        log.info("Google Play notifications from %s", self._subscription)

    def _callback(self, message: Any) -> None:
        try:
            published = message.publish_time
            take = self._notifications.handle(message.data, message.message_id, published)
        except Exception:
            log.exception("Play message %s failed; redelivered later", message.message_id)
            take = False
        if take:
            message.ack()
        else:
            message.nack()

    def stop(self, timeout: float = 5.0) -> None:
        if self._future is not None:
            self._future.cancel()
            # Cancelled: what a stopped stream ends with.
            with contextlib.suppress(Exception):
                self._future.result(timeout=timeout)
        self._client.close()
