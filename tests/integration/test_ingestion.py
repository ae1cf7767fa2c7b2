"""Store notifications end to end, verification on: a real server on SQLite with the
ingress started as a worker starts it (start_ingress, notifications_port), App Store
payloads signed with a generated chain (strict checks), Stripe events signed with the
library's helper; the effect read back through GetEntitlement and WatchEntitlements."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from service.catalog import EXAMPLE_CATALOG
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import RunningServer, start_server
from service.ingestion.http import NotificationIngress
from service.ingestion.runner import RunningIngress, start_ingress
from service.usecases.ingestion import Verdict
from storage.sqlite import SqliteRepository
from tests.store_signing import (
    BUNDLE_ID,
    STRIPE_SECRET,
    AppleChain,
    app_store_notification,
    app_store_test_notification,
    stripe_signed,
    stripe_subscription_event,
)
from tests.support.cli import run_cli
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.polling import eventually
from tests.support.processes import server_process

FEATURE = "offline_downloads"
PLAN = "premium_individual"
DAY = timedelta(days=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ingest:
    running: RunningServer
    ingress: RunningIngress
    chain: AppleChain
    stub: es_grpc.EntitlementServiceStub
    channel: grpc.Channel
    storage_url: str

    @property
    def http(self) -> NotificationIngress:
        assert self.ingress.ingress is not None
        return self.ingress.ingress

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ingress.port}"

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def apple(self, body: bytes) -> tuple[int, dict[str, Any]]:
        return self.post("/notifications/app-store", body)

    def stripe(self, event: dict[str, Any], secret: str = STRIPE_SECRET) -> tuple[int, Any]:
        body, signature = stripe_signed(event, secret)
        return self.post("/notifications/stripe", body, {"Stripe-Signature": signature})

    def granted(self, user: str) -> bool:
        request = es.GetEntitlementRequest(user_id=user, feature_id=FEATURE)
        return bool(self.stub.GetEntitlement(request, timeout=10).entitlement.granted)

    def watch(self, user: str) -> Callable[[], es.WatchEntitlementsResponse]:
        """Opens a WatchEntitlements stream (its first message read) and returns a function
        waiting for the next message."""
        stream = self.stub.WatchEntitlements(
            es.WatchEntitlementsRequest(user_id=user, feature_ids=[FEATURE]), timeout=30
        )
        next(stream)
        messages: list[es.WatchEntitlementsResponse] = []
        reader = threading.Thread(target=lambda: messages.append(next(stream)), daemon=True)
        reader.start()

        def following() -> es.WatchEntitlementsResponse:
            reader.join(timeout=20)
            stream.cancel()
            assert messages, "no WatchEntitlements message"
            return messages[0]

        return following

    def count(self, source: str, verdict: Verdict) -> int:
        return self.http.ingestion.count(source, verdict)


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    now = datetime.now(UTC)
    chain = AppleChain.around(now)
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"sqlite:///{db}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        notifications_port=free_port(),
        apple_root_certificates=str(chain.write_root(tmp_path / "root.pem", pem=True)),
        apple_bundle_id=BUNDLE_ID,
        apple_environment="Sandbox",
        stripe_webhook_secret=STRIPE_SECRET,
        write_timeout_seconds=10,
        max_rpc_seconds=30,
    )
    running = start_server(settings)
    ingress = start_ingress(settings, running)
    assert ingress is not None
    assert ingress.port == settings.notifications_port
    channel = with_bearer_token(grpc.insecure_channel(f"127.0.0.1:{running.port}"), SERVICE_TOKEN)
    try:
        stub = es_grpc.EntitlementServiceStub(channel)
        yield Ingest(running, ingress, chain, stub, channel, settings.storage_url)
    finally:
        channel.close()
        ingress.stop()
        running.stop(grace_seconds=1)


def apple_life(chain: AppleChain, user: str, start: datetime) -> list[tuple[str, bytes]]:
    """A subscription's life on the App Store: bought, renewed, auto-renew off, expired."""
    otid = str(uuid.uuid4().int)[:15]
    common: dict[str, Any] = {"user": user, "original_transaction_id": otid, "product": PLAN}
    return [
        app_store_notification(
            chain, "SUBSCRIBED", "INITIAL_BUY", signed_at=start, expires=start + 30 * DAY,
            **common,
        ),
        app_store_notification(
            chain, "DID_RENEW", None, signed_at=start + 30 * DAY, expires=start + 60 * DAY,
            **common,
        ),
        app_store_notification(
            chain, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED",
            signed_at=start + 40 * DAY, expires=start + 60 * DAY, **common,
        ),
        app_store_notification(
            chain, "EXPIRED", "VOLUNTARY", signed_at=start + 60 * DAY, expires=start + 60 * DAY,
            **common,
        ),
    ]  # fmt: skip


def test_an_app_store_purchase_grants_access_and_wakes_a_watch(ingest: Ingest) -> None:
    user = str(uuid.uuid4())
    now = datetime.now(UTC)
    assert not ingest.granted(user)
    stream = ingest.stub.WatchEntitlements(
        es.WatchEntitlementsRequest(user_id=user, feature_ids=[FEATURE]), timeout=30
    )
    first = next(stream)
    assert not first.entitlements[0].granted
    messages: list[es.WatchEntitlementsResponse] = []
    reader = threading.Thread(target=lambda: messages.append(next(stream)), daemon=True)
    reader.start()
    _, body = app_store_notification(
        ingest.chain, "SUBSCRIBED", "INITIAL_BUY", user=user, original_transaction_id="2001",
        product=PLAN, signed_at=now - timedelta(seconds=5), expires=now + 30 * DAY,
    )  # fmt: skip
    status, answer = ingest.apple(body)
    assert (status, answer["verdict"]) == (200, "recorded")
    assert ingest.granted(user)
    reader.join(timeout=20)
    stream.cancel()
    assert messages
    assert messages[0].entitlements[0].granted
    # The same notification again (Apple retries until it gets a 2xx): a duplicate.
    status, answer = ingest.apple(body)
    assert (status, answer["verdict"]) == (200, "duplicate")


def test_a_whole_app_store_life_ends_the_same_in_any_order_and_with_redeliveries(
    ingest: Ingest,
) -> None:
    start = datetime.now(UTC) - 90 * DAY
    in_order, reordered = str(uuid.uuid4()), str(uuid.uuid4())
    life_a = apple_life(ingest.chain, in_order, start)
    for _, body in life_a:
        assert ingest.apple(body)[0] == 200
    life_b = apple_life(ingest.chain, reordered, start)
    # Reordered and redelivered: the expiry first, then the rest twice, backwards. An
    # event that is "not yet" applicable is answered 503 and redelivered later.
    pending = [life_b[3], life_b[2], life_b[1], life_b[0], *reversed(life_b)]
    for _ in range(3):
        pending = [item for item in pending if ingest.apple(item[1])[0] != 200]
    assert pending == []
    state_a = ingest.running.repository.load(in_order)
    state_b = ingest.running.repository.load(reordered)
    (sub_a,), (sub_b,) = state_a.account.subscriptions, state_b.account.subscriptions
    assert (sub_a.status, sub_a.current_period_end, sub_a.auto_renew) == (
        sub_b.status,
        sub_b.current_period_end,
        sub_b.auto_renew,
    )
    assert sub_a.status.value == "expired"
    assert not ingest.granted(in_order)
    assert not ingest.granted(reordered)


def test_app_store_test_notification_is_answered(ingest: Ingest) -> None:
    status, answer = ingest.apple(app_store_test_notification(ingest.chain, datetime.now(UTC)))
    assert (status, answer["verdict"]) == (200, "ignored")


def test_forged_expired_wrong_bundle_and_wrong_environment_are_refused_and_counted(
    ingest: Ingest,
) -> None:
    now = datetime.now(UTC)
    user = str(uuid.uuid4())
    args: dict[str, Any] = {
        "user": user, "original_transaction_id": "3001", "product": PLAN,
        "signed_at": now, "expires": now + 30 * DAY,
    }  # fmt: skip
    # Another chain, not under the configured root: a forgery.
    forger = AppleChain.around(now)
    forged = app_store_notification(forger, "SUBSCRIBED", "INITIAL_BUY", **args)[1]
    assert ingest.apple(forged)[0] == 401
    # A chain whose leaf expired before the payload was signed.
    status, _ = ingest.apple(
        app_store_notification(_reissued(ingest.chain, leaf_not_after=now - DAY), "SUBSCRIBED",
                               "INITIAL_BUY", **args)[1]
    )  # fmt: skip
    assert status == 401
    # A leaf without Apple's marker extension.
    status, _ = ingest.apple(
        app_store_notification(_reissued(ingest.chain, leaf_marker=False), "SUBSCRIBED",
                               "INITIAL_BUY", **args)[1]
    )  # fmt: skip
    assert status == 401
    wrong_bundle = app_store_notification(
        ingest.chain, "SUBSCRIBED", "INITIAL_BUY", bundle_id="com.example.other", **args
    )[1]
    assert ingest.apple(wrong_bundle)[0] == 403
    production = app_store_notification(
        ingest.chain, "SUBSCRIBED", "INITIAL_BUY", environment="Production", **args
    )[1]
    assert ingest.apple(production)[0] == 403
    assert ingest.post("/notifications/app-store", b"not json")[0] == 400
    # Tampered: the payload changed after signing.
    _, good = app_store_notification(ingest.chain, "SUBSCRIBED", "INITIAL_BUY", **args)
    header, payload, signature = json.loads(good)["signedPayload"].split(".")
    tampered = json.dumps({"signedPayload": f"{header}.{payload[:-4]}AAAA.{signature}"})
    assert ingest.apple(tampered.encode())[0] == 401
    refusals = ingest.http.refusals
    assert refusals[("app_store", "verification_failure")] >= 4
    assert refusals[("app_store", "wrong_app")] == 1
    assert refusals[("app_store", "wrong_environment")] == 1
    assert refusals[("app_store", "malformed")] == 1
    assert not ingest.granted(user)


def _reissued(chain: AppleChain, **leaf: Any) -> AppleChain:
    """A chain under the same root whose leaf differs (validity, marker extension)."""
    other = AppleChain(chain.not_before, chain.not_after, **leaf)
    # Re-sign other's intermediate under chain's root, and the leaf under that.
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.store_signing import INTERMEDIATE_OID, LEAF_OID, _certificate

    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    other.root, other.root_key = chain.root, chain.root_key
    other.intermediate = _certificate(
        "Test Apple WWDR CA", intermediate_key, (chain.root, chain.root_key), ca=True,
        marker=INTERMEDIATE_OID, not_before=chain.not_before, not_after=chain.not_after,
    )  # fmt: skip
    other.leaf = _certificate(
        "Test Apple Store Signing", other.leaf_key, (other.intermediate, intermediate_key),
        ca=False, marker=LEAF_OID if other.leaf_marker else None,
        not_before=chain.not_before, not_after=other.leaf_not_after or chain.not_after,
    )  # fmt: skip
    return other


def test_a_stripe_subscription_grants_then_expires(ingest: Ingest) -> None:
    user = f"web-{uuid.uuid4()}"
    now = datetime.now(UTC)
    created = stripe_subscription_event(
        "evt_created_1", "customer.subscription.created", created=now - timedelta(minutes=5),
        subscription_id="sub_1", user=user, price_lookup_key=PLAN, status="active",
        period_end=now + 30 * DAY,
    )  # fmt: skip
    following = ingest.watch(user)
    status, answer = ingest.stripe(created)
    assert (status, answer["verdict"]) == (200, "recorded")
    assert ingest.granted(user)
    assert following().entitlements[0].granted
    assert ingest.stripe(created)[1]["verdict"] == "duplicate"
    deleted = stripe_subscription_event(
        "evt_deleted_1", "customer.subscription.deleted", created=now - timedelta(minutes=1),
        subscription_id="sub_1", user=user, price_lookup_key=PLAN, status="canceled",
        period_end=now + 30 * DAY, period_end_on_item=False,
    )  # fmt: skip
    assert ingest.stripe(deleted)[0] == 200
    assert not ingest.granted(user)


def test_stripe_forged_and_replayed_with_another_body_are_refused_and_counted(
    ingest: Ingest,
) -> None:
    user = f"web-{uuid.uuid4()}"
    now = datetime.now(UTC)
    event = stripe_subscription_event(
        "evt_replay_1", "customer.subscription.created", created=now - timedelta(minutes=5),
        subscription_id="sub_r", user=user, price_lookup_key=PLAN, status="active",
        period_end=now + 30 * DAY,
    )  # fmt: skip
    assert ingest.stripe(event, secret="whsec_not_ours")[0] == 401
    body, _ = stripe_signed(event)
    assert ingest.post("/notifications/stripe", body)[0] == 401  # no signature
    assert not ingest.granted(user)
    assert ingest.stripe(event)[0] == 200
    # The same event id with another content (signed: a leaked secret, or a bug).
    event["data"]["object"]["items"]["data"][0]["current_period_end"] += 86_400
    status, answer = ingest.stripe(event)
    assert (status, answer["verdict"]) == (409, "conflict")
    assert ingest.count("stripe", Verdict.CONFLICT) == 1
    assert ingest.http.refusals[("stripe", "verification_failure")] == 1
    assert ingest.http.refusals[("stripe", "unsigned")] == 1


def test_unmappable_notifications_become_dead_letters_and_replay_after_a_fix(
    ingest: Ingest,
) -> None:
    now = datetime.now(UTC)
    no_user = stripe_subscription_event(
        "evt_no_user", "customer.subscription.created", created=now - timedelta(minutes=5),
        subscription_id="sub_nu", user=None, price_lookup_key=PLAN, status="active",
        period_end=now + 30 * DAY,
    )  # fmt: skip
    unknown = stripe_subscription_event(
        "evt_unknown_price", "customer.subscription.created", created=now - timedelta(minutes=5),
        subscription_id="sub_up", user="someone", price_lookup_key="karaoke_plan",
        status="active", period_end=now + 30 * DAY,
    )  # fmt: skip
    for event in (no_user, unknown, no_user):
        status, answer = ingest.stripe(event)
        assert (status, answer["verdict"]) == (200, "dead_letter")
    letters = ingest.http.ingestion.dead_letters.list()
    assert [(x.delivery_id, x.reason, x.attempts) for x in letters] == [
        ("evt_no_user", "no_user", 2),
        ("evt_unknown_price", "unknown_product", 1),
    ]
    assert ingest.count("stripe", Verdict.DEAD_LETTER) == 3


@pytest.mark.subprocess
def test_dead_letters_are_listed_and_replayed_by_the_cli_after_a_catalog_fix(
    ingest: Ingest, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    user = f"web-{uuid.uuid4()}"
    event = stripe_subscription_event(
        "evt_new_plan", "customer.subscription.created", created=now - timedelta(minutes=5),
        subscription_id="sub_np", user=user, price_lookup_key="karaoke_plan",
        status="active", period_end=now + 30 * DAY,
    )  # fmt: skip
    assert ingest.stripe(event)[1]["verdict"] == "dead_letter"
    storage = ingest.storage_url
    listed = run_cli("dead-letters", "--storage", storage, cwd=tmp_path).stdout
    assert "stripe evt_new_plan  unknown_product: price karaoke_plan/price_karaoke_plan" in listed
    # Still unmappable with the old catalog: it stays, exit status 1.
    failed = run_cli("replay-dead-letters", "--storage", storage, cwd=tmp_path, check=False)
    assert failed.returncode == 1
    assert "dead_letter" in failed.stdout
    # The fix: a catalog that sells the plan.
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        EXAMPLE_CATALOG.read_text().replace(
            "  - id: premium_individual\n", _KARAOKE_PLAN + "  - id: premium_individual\n", 1
        )
    )
    replayed = run_cli(
        "replay-dead-letters", "evt_new_plan", "--storage", storage, cwd=tmp_path,
        env={"ENTITLEMENTS_CATALOG_PATH": str(catalog)},
    )  # fmt: skip
    assert "evt_new_plan: recorded" in replayed.stdout
    listed = run_cli("dead-letters", "--storage", storage, cwd=tmp_path).stdout
    assert "no open dead letters" in listed
    (subscription,) = ingest.running.repository.load(user).account.subscriptions
    assert (subscription.plan_id, subscription.status.value) == ("karaoke_plan", "active")


_KARAOKE_PLAN = """  - id: karaoke_plan
    name: Karaoke
    premium: true
    household_size: 1
    features:
      basic_playback: {}
      offline_downloads: {}
"""


def test_an_app_store_notification_replayed_with_another_body_is_refused(ingest: Ingest) -> None:
    user, now = str(uuid.uuid4()), datetime.now(UTC)
    args: dict[str, Any] = {
        "user": user, "original_transaction_id": "4001", "product": PLAN, "signed_at": now,
        "notification_uuid": str(uuid.uuid4()),
    }  # fmt: skip
    first = app_store_notification(ingest.chain, "DID_RENEW", None, expires=now + DAY, **args)
    assert ingest.apple(first[1])[1]["verdict"] == "recorded"
    # The same notificationUUID, signed (a compromised key, a bug), another expiry.
    other = app_store_notification(ingest.chain, "DID_RENEW", None, expires=now + 99 * DAY, **args)
    status, answer = ingest.apple(other[1])
    assert (status, answer["verdict"]) == (409, "conflict")
    assert ingest.count("app_store", Verdict.CONFLICT) == 1
    (subscription,) = ingest.running.repository.load(user).account.subscriptions
    assert subscription.current_period_end < now + 2 * DAY


def test_a_stripe_life_delivered_backwards_and_twice_ends_as_in_order(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    start = now - 40 * DAY

    def life(user: str, tag: str) -> list[dict[str, Any]]:
        sub_id = f"sub_{tag}"
        common: dict[str, Any] = {
            "subscription_id": sub_id, "user": user, "price_lookup_key": PLAN,
        }  # fmt: skip
        return [
            stripe_subscription_event(
                f"evt_{tag}_1", "customer.subscription.created", created=start,
                status="trialing", period_end=start + 7 * DAY, **common,
            ),
            stripe_subscription_event(
                f"evt_{tag}_2", "customer.subscription.updated", created=start + 7 * DAY,
                status="active", period_end=start + 37 * DAY,
                previous={"status": "trialing"}, **common,
            ),
            stripe_subscription_event(
                f"evt_{tag}_3", "customer.subscription.updated", created=start + 37 * DAY,
                status="past_due", period_end=start + 37 * DAY, **common,
            ),
            stripe_subscription_event(
                f"evt_{tag}_4", "customer.subscription.updated", created=start + 38 * DAY,
                status="active", period_end=start + 67 * DAY,
                previous={"status": "past_due"}, **common,
            ),
            stripe_subscription_event(
                f"evt_{tag}_5", "customer.subscription.updated", created=start + 39 * DAY,
                status="active", period_end=start + 67 * DAY, cancel_at_period_end=True,
                previous={"cancel_at_period_end": False}, **common,
            ),
        ]  # fmt: skip

    ordered, backwards = f"web-{uuid.uuid4()}", f"web-{uuid.uuid4()}"
    for event in life(ordered, "o"):
        assert ingest.stripe(event)[0] == 200
    events = life(backwards, "b")
    pending = [*reversed(events), *events]
    for _ in range(3):
        pending = [event for event in pending if ingest.stripe(event)[0] != 200]
    assert pending == []
    (a,) = ingest.running.repository.load(ordered).account.subscriptions
    (b,) = ingest.running.repository.load(backwards).account.subscriptions
    assert (a.status, a.current_period_end, a.auto_renew, a.plan_id) == (
        b.status, b.current_period_end, b.auto_renew, b.plan_id,
    )  # fmt: skip
    assert a.status.value == "canceled"
    assert ingest.granted(ordered)
    assert ingest.granted(backwards)


@pytest.mark.subprocess
def test_serve_runs_the_ingress_in_every_worker_with_metrics_and_drains(tmp_path: Path) -> None:
    """`entitlements serve` with two workers: the port is claimed by the supervisor and
    shared; a notification through either worker is read back through the gRPC port (the
    other worker sees it through the change feed); the metrics endpoint sums the workers'
    counts; SIGTERM stops it cleanly."""
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    notifications, metrics = free_port(), free_port()
    env = {"ENTITLEMENTS_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}
    args = ("--notifications-port", str(notifications), "--metrics-port", str(metrics))
    with server_process(db, credentials, *args, workers=2, env=env) as server:
        base = f"http://127.0.0.1:{notifications}"
        with urllib.request.urlopen(base + "/healthz", timeout=10) as health:
            assert health.status == 200
        now = datetime.now(UTC)
        users = [f"web-{uuid.uuid4()}" for _ in range(4)]
        for index, user in enumerate(users):
            body, signature = stripe_signed(
                stripe_subscription_event(
                    f"evt_serve_{index}", "customer.subscription.created",
                    created=now - timedelta(minutes=1), subscription_id=f"sub_s{index}",
                    user=user, price_lookup_key=PLAN, status="active",
                    period_end=now + 30 * DAY,
                )
            )  # fmt: skip
            post = urllib.request.Request(
                base + "/notifications/stripe",
                data=body,
                headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(post, timeout=30) as response:
                assert json.loads(response.read())["verdict"] == "recorded"
        channel = with_bearer_token(grpc.insecure_channel(server.target), SERVICE_TOKEN)
        stub = es_grpc.EntitlementServiceStub(channel)
        for user in users:
            request = es.GetEntitlementRequest(user_id=user, feature_id=FEATURE)
            assert stub.GetEntitlement(request, timeout=10).entitlement.granted
        channel.close()
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as m:
                text = m.read().decode()
            line = 'entitlements_notifications_total{store="stripe",verdict="recorded"} 4.0'
            if line in text or datetime.now(UTC) > deadline:
                break
        assert line in text
        assert "entitlements_notification_lag_seconds_bucket" in text
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0


def _http_status(url: str) -> int | None:
    """The HTTP status of a GET (None: nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


@pytest.mark.subprocess
def test_sigterm_keeps_the_ingress_answering_through_the_drain_delay(tmp_path: Path) -> None:
    """SIGTERM to `entitlements serve`: the ingress's /healthz turns 503 at once (load
    balancers stop sending), but a notification still arriving in the drain delay is
    answered 200 and recorded; then the process stops within the grace."""
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    credentials = write_test_credentials(tmp_path / "credentials.yaml")
    notifications = free_port()
    drain_delay = 4.0
    env = {
        "ENTITLEMENTS_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "ENTITLEMENTS_DRAIN_DELAY_SECONDS": str(drain_delay),
        "ENTITLEMENTS_SHUTDOWN_GRACE_SECONDS": "2",
    }
    args = ("--notifications-port", str(notifications))
    user, now = f"web-{uuid.uuid4()}", datetime.now(UTC)
    body, signature = stripe_signed(
        stripe_subscription_event(
            "evt_drain", "customer.subscription.created", created=now - timedelta(minutes=1),
            subscription_id="sub_drain", user=user, price_lookup_key=PLAN, status="active",
            period_end=now + 30 * DAY,
        )
    )  # fmt: skip
    base = f"http://127.0.0.1:{notifications}"
    with server_process(db, credentials, *args, workers=2, env=env) as server:
        assert _http_status(base + "/healthz") == 200
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        eventually(
            lambda: _http_status(base + "/healthz") == 503,
            drain_delay / 2 - (time.monotonic() - signalled),
            0.05,
            "health never turned 503",
        )
        post = urllib.request.Request(
            base + "/notifications/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(post, timeout=30) as response:
            assert (response.status, json.loads(response.read())["verdict"]) == (200, "recorded")
        assert time.monotonic() - signalled < drain_delay  # answered within the drain delay
        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - signalled >= drain_delay
        assert _http_status(base + "/healthz") is None
    repository = SqliteRepository(db)
    try:
        (subscription,) = repository.load(user).account.subscriptions
    finally:
        repository.close()
    assert subscription.status.value == "active"


def test_a_store_that_cannot_write_is_answered_503_and_the_redelivery_lands(
    ingest: Ingest, tmp_path: Path
) -> None:
    """The account store gone (its file moved away): 503 with Retry-After, nothing
    claimed durable; the store's redelivery after the store is back is recorded."""
    user, now = f"web-{uuid.uuid4()}", datetime.now(UTC)
    event = stripe_subscription_event(
        "evt_outage", "customer.subscription.created", created=now - timedelta(minutes=1),
        subscription_id="sub_outage", user=user, price_lookup_key=PLAN, status="active",
        period_end=now + 30 * DAY,
    )  # fmt: skip
    db = Path(ingest.storage_url.removeprefix("sqlite:///"))
    aside = tmp_path / "aside.db"
    db.rename(aside)
    try:
        body, signature = stripe_signed(event)
        request = urllib.request.Request(
            ingest.url + "/notifications/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"] == "5"
        assert json.loads(refused.value.read())["verdict"] == "retry"
    finally:
        aside.rename(db)
    status, answer = ingest.stripe(event)
    assert (status, answer["verdict"]) == (200, "recorded")
    assert ingest.granted(user)


@pytest.mark.subprocess
def test_a_stripe_customer_linked_to_a_user_maps_its_notifications(
    ingest: Ingest, tmp_path: Path
) -> None:
    """No metadata.user_id: a dead letter; once the customer is linked (the CLI), the
    replay records it, and the customer's later notifications map at once."""
    user, now = f"web-{uuid.uuid4()}", datetime.now(UTC)
    customer = f"cus_{uuid.uuid4().hex[:12]}"

    def event(event_id: str, kind: str, status: str, minutes_ago: int) -> dict[str, Any]:
        made = stripe_subscription_event(
            event_id, kind, created=now - timedelta(minutes=minutes_ago),
            subscription_id="sub_linked", user=None, price_lookup_key=PLAN, status=status,
            period_end=now + 30 * DAY,
        )  # fmt: skip
        made["data"]["object"]["customer"] = customer
        return made

    created = event("evt_link_1", "customer.subscription.created", "active", 10)
    assert ingest.stripe(created)[1]["verdict"] == "dead_letter"
    storage = ("--storage", ingest.storage_url)
    run_cli("link-store-account", "stripe", customer, user, *storage, cwd=tmp_path)
    replayed = run_cli("replay-dead-letters", "evt_link_1", *storage, cwd=tmp_path)
    assert "evt_link_1: recorded" in replayed.stdout
    assert ingest.granted(user)
    canceled = event("evt_link_2", "customer.subscription.deleted", "canceled", 1)
    assert ingest.stripe(canceled)[1]["verdict"] == "recorded"
    assert not ingest.granted(user)


def _eventually(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.subprocess
def test_open_dead_letters_are_a_gauge_that_follows_keeping_and_replaying(
    tmp_path: Path,
) -> None:
    """entitlements_dead_letters_open: the store's count of open letters, published at
    start, right after the worker keeps a letter, and on its refresh (a replay through the
    CLI, in another process, resolves the letter)."""
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"sqlite:///{db}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        notifications_port=free_port(),
        stripe_webhook_secret=STRIPE_SECRET,
        metrics_port=1,  # metrics in this process (no endpoint in-process)
    )
    running = start_server(settings)
    ingress = start_ingress(settings, running, open_letters_refresh_seconds=0.3)
    assert ingress is not None

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("entitlements_dead_letters_open")

    try:
        _eventually(lambda: gauge() == 0)
        user, now = f"web-{uuid.uuid4()}", datetime.now(UTC)
        customer = f"cus_{uuid.uuid4().hex[:12]}"
        event = stripe_subscription_event(
            "evt_gauge_1", "customer.subscription.created", created=now - timedelta(minutes=1),
            subscription_id="sub_gauge", user=None, price_lookup_key=PLAN, status="active",
            period_end=now + 30 * DAY,
        )  # fmt: skip
        event["data"]["object"]["customer"] = customer
        body, signature = stripe_signed(event)
        request = urllib.request.Request(
            f"http://127.0.0.1:{ingress.port}/notifications/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["verdict"] == "dead_letter"
        _eventually(lambda: gauge() == 1)
        storage = ("--storage", settings.storage_url)
        run_cli("link-store-account", "stripe", customer, user, *storage, cwd=tmp_path)
        replayed = run_cli("replay-dead-letters", "evt_gauge_1", *storage, cwd=tmp_path)
        assert "evt_gauge_1: recorded" in replayed.stdout
        _eventually(lambda: gauge() == 0)
    finally:
        ingress.stop()
        running.stop(grace_seconds=1)
