"""Stripe refunds and disputes whose event names the charge or invoice only by id: the
ingress fetches them through the `stripe` library from a local stand-in of the Stripe API
(api base at 127.0.0.1; the real API is unreachable here) instead of keeping a dead letter;
the effect read back through GetEntitlement."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from entitlements.v1 import entitlement_service_pb2 as es
from entitlements.v1 import entitlement_service_pb2_grpc as es_grpc
from service.config import Settings
from service.grpc_api.auth import with_bearer_token
from service.grpc_api.server import start_server
from service.ingestion.runner import start_ingress
from storage.sqlite import SqliteRepository
from tests.integration.test_ingestion import FEATURE, PLAN
from tests.store_signing import STRIPE_SECRET, stripe_signed, stripe_subscription_event
from tests.support.cli import run_cli
from tests.support.harness import SERVICE_TOKEN, write_test_credentials
from tests.support.metrics import free_port
from tests.support.stand_ins import json_get_stand_in

API_KEY = "rk_test_refunds_reader"
DAY = timedelta(days=1)


@dataclass
class StripeStandIn:
    """GET /v1/invoices/ID and /v1/charges/ID (expand[]=invoice honoured), for API_KEY."""

    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    failing: bool = False
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        if authorization != f"Bearer {API_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "bad key"}}
        if self.failing:
            return 500, {"error": {"type": "api_error", "message": "down"}}
        route, _, query = path.partition("?")
        kind, _, object_id = route.removeprefix("/v1/").partition("/")
        missing = {"error": {"type": "invalid_request_error", "message": "No such object"}}
        if kind == "invoices" and object_id in self.invoices:
            return 200, self.invoices[object_id]
        if kind == "charges" and object_id in self.charges:
            charge = dict(self.charges[object_id])
            if "expand" in query and isinstance(charge.get("invoice"), str):
                charge["invoice"] = self.invoices[charge["invoice"]]
            return 200, charge
        return 404, missing


@pytest.fixture
def stand_in() -> Iterator[StripeStandIn]:
    api = StripeStandIn()
    with json_get_stand_in(api.answer) as url:
        api.url = url
        yield api


def invoice(
    invoice_id: str, subscription_id: str, user: str, period_end: datetime
) -> dict[str, Any]:
    line = {
        "period": {
            "start": int((period_end - 30 * DAY).timestamp()),
            "end": int(period_end.timestamp()),
        },
        "price": {"id": f"price_{PLAN}", "lookup_key": PLAN},
    }
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_test",
        "subscription": subscription_id,
        "subscription_details": {"metadata": {"user_id": user}},
        "lines": {"object": "list", "data": [line]},
    }


@pytest.mark.subprocess
def test_a_refund_and_a_dispute_naming_their_invoice_by_id_are_fetched_and_recorded(
    stand_in: StripeStandIn, tmp_path: Path
) -> None:
    db = tmp_path / "entitlements.db"
    SqliteRepository(db, create=True).close()
    settings = Settings(
        host="127.0.0.1",
        port=0,
        storage_url=f"sqlite:///{db}",
        credentials_file=write_test_credentials(tmp_path / "credentials.yaml"),
        notifications_port=free_port(),
        stripe_webhook_secret=STRIPE_SECRET,
        stripe_api_key=API_KEY,
        stripe_api_url=stand_in.url,
        write_timeout_seconds=10,
    )
    running = start_server(settings)
    ingress = start_ingress(settings, running)
    assert ingress is not None
    channel = with_bearer_token(grpc.insecure_channel(f"127.0.0.1:{running.port}"), SERVICE_TOKEN)
    stub = es_grpc.EntitlementServiceStub(channel)

    def post(event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body, signature = stripe_signed(event)
        request = urllib.request.Request(
            f"http://127.0.0.1:{ingress.port}/notifications/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def granted(user: str) -> bool:
        request = es.GetEntitlementRequest(user_id=user, feature_id=FEATURE)
        return bool(stub.GetEntitlement(request, timeout=10).entitlement.granted)

    try:
        user, now = f"web-{uuid.uuid4()}", datetime.now(UTC)
        period_end = now + 30 * DAY
        created = stripe_subscription_event(
            "evt_sub_refund", "customer.subscription.created", created=now - timedelta(hours=1),
            subscription_id="sub_refund", user=user, price_lookup_key=PLAN, status="active",
            period_end=period_end,
        )  # fmt: skip
        assert post(created)[1]["verdict"] == "recorded"
        assert granted(user)
        stand_in.invoices["in_refund"] = invoice("in_refund", "sub_refund", user, period_end)
        stand_in.charges["ch_refund"] = {
            "id": "ch_refund", "object": "charge", "customer": "cus_test", "refunded": True,
            "invoice": "in_refund",
        }  # fmt: skip

        def charge_event(event_id: str, kind: str, minutes_ago: int, obj: Any) -> dict[str, Any]:
            return {
                "id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20",
                "created": int((now - timedelta(minutes=minutes_ago)).timestamp()),
                "data": {"object": obj},
            }  # fmt: skip

        # The Stripe API down: answered 503, the store redelivers; nothing recorded.
        refunded = charge_event("evt_refund", "charge.refunded", 30, stand_in.charges["ch_refund"])
        stand_in.failing = True
        assert post(refunded)[0] == 503
        assert granted(user)
        stand_in.failing = False
        status, answer = post(refunded)
        assert (status, answer["verdict"]) == (200, "recorded"), answer
        assert "/v1/invoices/in_refund" in stand_in.requests
        assert not granted(user)
        # A dispute won: its charge named by id, fetched with the invoice expanded.
        won = charge_event(
            "evt_dispute_won", "charge.dispute.closed", 10,
            {"id": "dp_1", "object": "dispute", "status": "won", "charge": "ch_refund"},
        )  # fmt: skip
        status, answer = post(won)
        assert (status, answer["verdict"]) == (200, "recorded"), answer
        assert any(p.startswith("/v1/charges/ch_refund") for p in stand_in.requests)
        assert granted(user)
        # An invoice Stripe does not know: a dead letter, as without the API.
        lost = charge_event(
            "evt_refund_lost", "charge.refunded", 5,
            {**stand_in.charges["ch_refund"], "id": "ch_lost", "invoice": "in_missing"},
        )  # fmt: skip
        assert post(lost)[1]["verdict"] == "dead_letter"
        # Once Stripe has it (here: the stand-in learns it), the replay fetches it.
        stand_in.invoices["in_missing"] = invoice("in_missing", "sub_refund", user, period_end)
        env = {
            "ENTITLEMENTS_STRIPE_API_KEY": API_KEY,
            "ENTITLEMENTS_STRIPE_API_URL": stand_in.url,
        }
        replayed = run_cli(
            "replay-dead-letters", "evt_refund_lost", "--storage", settings.storage_url,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert "evt_refund_lost: recorded" in replayed.stdout, replayed.stdout
        assert not granted(user)
    finally:
        channel.close()
        ingress.stop()
        running.stop(grace_seconds=1)
