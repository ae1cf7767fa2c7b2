"""Google Play RTDN end to end: the Pub/Sub emulator (Debian google-cloud-cli-pubsub-emulator)
carries the notifications, a local HTTP stand-in of purchases.subscriptionsv2 answers the
state (the real Play Developer API is unreachable from here), a real server on SQLite
records, and GetEntitlement shows the effect."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from service.config import Settings
from service.domain.play_mapping import subscription_id
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from service.ingestion.play import PlayNotifications
from service.ingestion.runner import RunningIngress, start_ingress
from storage.sqlite import SqliteRepository
from tests.support.cli import run_cli
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "test-project"
PACKAGE = "com.example.music"
PLAN = "premium_individual"
FEATURE = "offline_downloads"
WAIT = 60.0  # for a notification's effect: the emulator and a busy machine
DAY = timedelta(days=1)
APPLICATIONS = "/androidpublisher/v3/applications"
ACKNOWLEDGED = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _emulator_binary() -> Path | None:
    if EMULATOR.exists():
        return EMULATOR
    found = shutil.which("cloud-pubsub-emulator")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator on a free loopback port; PUBSUB_EMULATOR_HOST points the clients at it."""
    binary = _emulator_binary()
    if binary is None:
        message = "the Pub/Sub emulator (Debian google-cloud-cli-pubsub-emulator) is missing"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--host=127.0.0.1", f"--port={port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host = f"127.0.0.1:{port}"
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    try:

        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the Pub/Sub emulator did not start: {log.read_text()[-2000:]}")
            return f"listening on {port}" in log.read_text(errors="replace")

        eventually(
            listening,
            120,
            0.2,
            lambda: f"the Pub/Sub emulator did not start: {log.read_text()[-2000:]}",
        )
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield host
    finally:
        if saved is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = saved
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class PlayApiStandIn:
    """purchases.subscriptionsv2.get and purchases.subscriptions.acknowledge on 127.0.0.1."""

    purchases: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                prefix = f"{APPLICATIONS}/{PACKAGE}/purchases/subscriptionsv2/tokens/"
                if not self.path.startswith(prefix):
                    return self._answer(404, {"error": "not found"})
                token = urllib.parse.unquote(self.path[len(prefix) :])
                purchase = stand_in.purchases.get(token)
                if purchase is None:
                    return self._answer(404, {"error": "unknown token"})
                return self._answer(200, purchase)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.endswith(":acknowledge"):
                    return self._answer(404, {"error": "not found"})
                token = urllib.parse.unquote(self.path.removesuffix(":acknowledge").split("/")[-1])
                if token not in stand_in.purchases:
                    return self._answer(404, {"error": "unknown token"})
                stand_in.acknowledged.append(token)
                stand_in.purchases[token]["acknowledgementState"] = ACKNOWLEDGED
                return self._answer(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def purchase(
    user: str | None,
    expiry: datetime,
    *,
    state: str = "SUBSCRIPTION_STATE_ACTIVE",
    linked: str | None = None,
    product: str = PLAN,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "kind": "androidpublisher#subscriptionPurchaseV2",
        "regionCode": "US",
        "startTime": (expiry - 30 * DAY).isoformat().replace("+00:00", "Z"),
        "subscriptionState": state,
        "acknowledgementState": "ACKNOWLEDGEMENT_STATE_PENDING",
        "lineItems": [
            {
                "productId": product,
                "expiryTime": expiry.isoformat().replace("+00:00", "Z"),
                "autoRenewingPlan": {"autoRenewEnabled": True},
                "latestSuccessfulOrderId": f"GPA.{uuid.uuid4().hex[:8]}",
            }
        ],
    }
    if user is not None:
        resource["externalAccountIdentifiers"] = {"obfuscatedExternalAccountId": user}
    if linked is not None:
        resource["linkedPurchaseToken"] = linked
    return resource


def rtdn(kind: int, token: str, at: datetime, package: str = PACKAGE) -> bytes:
    return json.dumps(
        {
            "version": "1.0",
            "packageName": package,
            "eventTimeMillis": str(int(at.timestamp() * 1000)),
            "subscriptionNotification": {
                "version": "1.0",
                "notificationType": kind,
                "purchaseToken": token,
            },
        }
    ).encode()


def voided(token: str, order_id: str, at: datetime) -> bytes:
    return json.dumps(
        {
            "version": "1.0",
            "packageName": PACKAGE,
            "eventTimeMillis": str(int(at.timestamp() * 1000)),
            "voidedPurchaseNotification": {
                "purchaseToken": token,
                "orderId": order_id,
                "productType": 1,
                "refundType": 1,
            },
        }
    ).encode()


@dataclass
class Play:
    running: RunningServer
    ingestion: RunningIngress
    api: PlayApiStandIn
    stub: es_grpc.EntitlementServiceStub
    topic: str
    publisher: Any
    storage_url: str

    @property
    def notifications(self) -> PlayNotifications:
        assert self.ingestion.play is not None
        return self.ingestion.play

    def publish(self, data: bytes) -> str:
        return str(self.publisher.publish(self.topic, data).result(timeout=30))

    def granted(self, user: str) -> bool:
        request = es.GetEntitlementRequest(user_id=user, feature_id=FEATURE)
        return bool(self.stub.GetEntitlement(request, timeout=10).entitlement.granted)


@pytest.fixture
def play(pubsub_emulator: str, tmp_path: Path) -> Iterator[Play]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    name = f"rtdn-{uuid.uuid4().hex[:8]}"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, name)
    subscription = subscriber.subscription_path(PROJECT, name)
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)
    subscriber.close()
    api = PlayApiStandIn()
    api.start()
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"sqlite:///{db}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        play_subscription=subscription,
        play_package_name=PACKAGE,
        play_api_url=api.url,
        write_timeout_seconds=10,
    )
    running = start_server(settings)
    ingestion = start_ingress(settings, running)
    assert ingestion is not None
    assert ingestion.ingress is None
    channel = with_bearer_token(grpc.insecure_channel(f"127.0.0.1:{running.port}"), SERVICE_TOKEN)
    try:
        stub = es_grpc.EntitlementServiceStub(channel)
        yield Play(running, ingestion, api, stub, topic, publisher, settings.storage_url)
    finally:
        channel.close()
        ingestion.stop()
        running.stop(grace_seconds=1)
        api.stop()


def test_a_play_purchase_grants_access_and_is_acknowledged(play: Play) -> None:
    user, token = f"play-{uuid.uuid4()}", f"token-{uuid.uuid4()}" * 4
    now = datetime.now(UTC)
    play.api.purchases[token] = purchase(user, now + 30 * DAY)
    assert not play.granted(user)
    stream = play.stub.WatchEntitlements(
        es.WatchEntitlementsRequest(user_id=user, feature_ids=[FEATURE]), timeout=60
    )
    assert not next(stream).entitlements[0].granted
    play.publish(rtdn(4, token, now - timedelta(seconds=2)))
    assert next(stream).entitlements[0].granted  # the watch saw the purchase
    stream.cancel()
    eventually(lambda: play.granted(user), WAIT, 0.1)
    eventually(lambda: token in play.api.acknowledged, WAIT, 0.1)
    (subscription,) = play.running.repository.load(user).account.subscriptions
    assert subscription.store.value == "google_play"
    assert subscription.plan_id == PLAN


def test_an_upgrade_ends_the_linked_purchase_and_a_voided_one_is_a_refund(play: Play) -> None:
    user = f"play-{uuid.uuid4()}"
    old, new = f"old-{uuid.uuid4()}", f"new-{uuid.uuid4()}"
    now = datetime.now(UTC)
    play.api.purchases[old] = purchase(user, now + 20 * DAY)
    play.publish(rtdn(4, old, now - 10 * DAY))
    eventually(
        lambda: len(play.running.repository.load(user).account.subscriptions) == 1, WAIT, 0.1
    )
    play.api.purchases[new] = purchase(user, now + 30 * DAY, linked=old)
    play.publish(rtdn(4, new, now - timedelta(minutes=1)))

    def both() -> bool:
        return len(play.running.repository.load(user).account.subscriptions) == 2

    eventually(both, WAIT, 0.1)
    states = {
        s.subscription_id: s.status.value
        for s in play.running.repository.load(user).account.subscriptions
    }
    # The old purchase ended at the upgrade.
    assert states == {subscription_id(new): "active", subscription_id(old): "expired"}
    assert play.granted(user)
    order = play.api.purchases[new]["lineItems"][0]["latestSuccessfulOrderId"]
    play.publish(voided(new, order, now - timedelta(seconds=1)))
    eventually(lambda: not play.granted(user), WAIT, 0.1)


def test_a_whole_life_redelivered_and_reordered_ends_the_same(play: Play) -> None:
    now = datetime.now(UTC)
    start = now - 40 * DAY
    ends = {}
    for label, order in (("ordered", [4, 2, 3, 13]), ("reordered", [13, 3, 13, 2, 4, 4, 3])):
        user, token = f"play-{label}-{uuid.uuid4()}", f"tok-{uuid.uuid4()}"
        # The state Play reports now: the life is over (canceled, then expired).
        play.api.purchases[token] = purchase(
            user, now - 5 * DAY, state="SUBSCRIPTION_STATE_EXPIRED"
        )
        times = {4: start, 2: start + 30 * DAY, 3: start + 32 * DAY, 13: now - 5 * DAY}
        for kind in order:
            play.publish(rtdn(kind, token, times[kind]))

        def settled(user: str = user) -> bool:
            subs = play.running.repository.load(user).account.subscriptions
            return len(subs) == 1 and subs[0].status.value == "expired"

        eventually(settled, WAIT, 0.1)
        time.sleep(1)  # anything still in flight
        (subscription,) = play.running.repository.load(user).account.subscriptions
        ends[label] = (subscription.status, subscription.current_period_end, subscription.plan_id)
        assert not play.granted(user)
    assert ends["ordered"] == ends["reordered"]


def test_wrong_package_malformed_and_unknown_user_are_refused_or_kept(play: Play) -> None:
    now = datetime.now(UTC)
    token = f"tok-{uuid.uuid4()}"
    play.api.purchases[token] = purchase(None, now + 30 * DAY)  # no obfuscated account id
    play.publish(rtdn(4, token, now, package="com.example.other"))
    play.publish(b"not json")
    play.publish(rtdn(4, token, now))
    eventually(lambda: play.notifications.refusals.get("wrong_app") == 1, WAIT, 0.1)
    eventually(lambda: play.notifications.refusals.get("malformed") == 1, WAIT, 0.1)
    letters = play.notifications.ingestion.dead_letters

    def kept() -> bool:
        return [x.reason for x in letters.list() if x.source == "google_play"] == ["no_user"]

    eventually(kept, WAIT, 0.1)


@pytest.mark.subprocess
def test_reconciliation_records_a_purchase_whose_notification_never_came(
    play: Play, tmp_path: Path
) -> None:
    user, token = f"play-{uuid.uuid4()}", f"lost-{uuid.uuid4()}"
    play.api.purchases[token] = purchase(user, datetime.now(UTC) + 30 * DAY)
    env = {"ENTITLEMENTS_PLAY_PACKAGE_NAME": PACKAGE, "ENTITLEMENTS_PLAY_API_URL": play.api.url}
    args = ("reconcile-play", user, token, "--storage", play.storage_url)
    first = run_cli(*args, cwd=tmp_path, env=env, check=False)
    assert ": recorded" in first.stdout, first.stdout + first.stderr
    assert play.granted(user)
    again = run_cli(*args, cwd=tmp_path, env=env)  # nothing changed: a duplicate
    assert ": duplicate" in again.stdout
    other = run_cli("reconcile-play", "someone-else", token, "--storage", play.storage_url,
                    cwd=tmp_path, env=env)  # fmt: skip
    assert "belongs to another user" in other.stdout
