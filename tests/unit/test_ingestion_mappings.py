"""The pure mappings of store notifications (service/domain/*_mapping.py): what each kind of
notification becomes, and why the unmappable ones are dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.catalog import load_catalog
from service.domain.app_store_mapping import map_app_store
from service.domain.events import EventType as E
from service.domain.ingestion import DeadLetterReason, Ignored, Mapped, Unmappable
from service.domain.play_mapping import map_play, subscription_id
from service.domain.stripe_mapping import PAST_DUE_GRACE, map_stripe
from tests.store_signing import millis, stripe_subscription_event

CATALOG = load_catalog()
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
PLAN = "premium_individual"


def seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def mapped(result: object) -> Mapped:
    assert isinstance(result, Mapped), result
    return result


# -- App Store ---------------------------------------------------------------------------


def apple(kind: str, subtype: str | None = None, **transaction: Any) -> dict[str, Any]:
    return {
        "notificationType": kind,
        "subtype": subtype,
        "notificationUUID": "uuid-1",
        "signedDate": millis(T0),
        "transaction": {
            "originalTransactionId": "1000",
            "productId": PLAN,
            "expiresDate": millis(T0 + 30 * DAY),
            "appAccountToken": "3f1c2a5e-0000-4000-8000-000000000001",
            "storefront": "SWE",
            **transaction,
        },
        "renewalInfo": {"gracePeriodExpiresDate": millis(T0 + 16 * DAY)},
    }


def test_app_store_purchase_names_user_subscription_plan_period_and_market() -> None:
    result = mapped(map_app_store(apple("SUBSCRIBED", "INITIAL_BUY"), CATALOG))
    assert result.user_id == "3f1c2a5e-0000-4000-8000-000000000001"
    event = result.event
    assert (event.event_id, event.subscription_id, event.type) == (
        "uuid-1", "app_store:1000", E.PURCHASED,
    )  # fmt: skip
    assert (event.plan_id, event.current_period_end, event.market) == (PLAN, T0 + 30 * DAY, "SE")
    assert event.occurred_at == T0


def test_app_store_grace_refund_and_informational_types() -> None:
    grace = mapped(map_app_store(apple("DID_FAIL_TO_RENEW", "GRACE_PERIOD"), CATALOG)).event
    assert (grace.type, grace.grace_period_end) == (E.RENEWAL_FAILED, T0 + 16 * DAY)
    refund = mapped(map_app_store(apple("REFUND"), CATALOG)).event
    assert (refund.type, refund.refunded_period_end) == (E.REFUNDED, T0 + 30 * DAY)
    assert isinstance(map_app_store(apple("TEST"), CATALOG), Ignored)
    assert isinstance(
        map_app_store(apple("DID_CHANGE_RENEWAL_PREF", "DOWNGRADE"), CATALOG), Ignored
    )


@pytest.mark.parametrize(
    ("notification", "reason"),
    [
        (apple("SUBSCRIBED", "INITIAL_BUY", appAccountToken=None), DeadLetterReason.NO_USER),
        (apple("SUBSCRIBED", "INITIAL_BUY", productId="karaoke"), DeadLetterReason.UNKNOWN_PRODUCT),
        (apple("ONE_TIME_CHARGE"), DeadLetterReason.UNHANDLED_TYPE),
        (apple("SUBSCRIBED", "SOMETHING_NEW"), DeadLetterReason.UNHANDLED_TYPE),
    ],
)
def test_app_store_unmappable(notification: dict[str, Any], reason: DeadLetterReason) -> None:
    result = map_app_store(notification, CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is reason


# -- Stripe ------------------------------------------------------------------------------


def sub_event(kind: str, status: str, **kwargs: Any) -> dict[str, Any]:
    return stripe_subscription_event(
        "evt_1", kind, created=T0, subscription_id="sub_1", user="u1",
        price_lookup_key=PLAN, status=status, period_end=T0 + 30 * DAY, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "status", "extra", "expected"),
    [
        ("customer.subscription.created", "trialing", {}, E.TRIAL_STARTED),
        ("customer.subscription.created", "active", {}, E.PURCHASED),
        ("customer.subscription.updated", "active", {"cancel_at_period_end": True}, E.CANCELED),
        ("customer.subscription.updated", "active", {"previous": {"status": "past_due"}},
         E.RESUMED),
        ("customer.subscription.updated", "active", {"previous": {"items": {}}},
         E.PLAN_CHANGED),
        ("customer.subscription.updated", "active",
         {"previous": {"cancel_at_period_end": True}}, E.UNCANCELED),
        ("customer.subscription.updated", "active", {"previous": {"current_period_end": 1}},
         E.RENEWED),
        ("customer.subscription.updated", "past_due", {}, E.RENEWAL_FAILED),
        ("customer.subscription.updated", "unpaid", {}, E.ON_HOLD),
        ("customer.subscription.updated", "paused", {}, E.PAUSED),
        ("customer.subscription.deleted", "canceled", {}, E.EXPIRED),
    ],
)  # fmt: skip
def test_stripe_subscription_snapshots(
    kind: str, status: str, extra: dict[str, Any], expected: E
) -> None:
    event = mapped(map_stripe(sub_event(kind, status, **extra), CATALOG)).event
    assert (event.type, event.subscription_id, event.plan_id) == (expected, "stripe:sub_1", PLAN)
    assert event.current_period_end == T0 + 30 * DAY
    if expected is E.RENEWAL_FAILED:
        assert event.grace_period_end == T0 + PAST_DUE_GRACE


def test_stripe_period_end_from_the_subscription_or_its_item() -> None:
    before = sub_event("customer.subscription.created", "active", period_end_on_item=False)
    after = sub_event("customer.subscription.created", "active")
    assert mapped(map_stripe(before, CATALOG)).event == mapped(map_stripe(after, CATALOG)).event


def test_stripe_user_from_the_customer_when_the_subscription_has_none() -> None:
    event = sub_event("customer.subscription.created", "active")
    event["data"]["object"]["metadata"] = {}
    event["data"]["object"]["customer"] = {"id": "cus_1", "metadata": {"user_id": "u-cus"}}
    assert mapped(map_stripe(event, CATALOG)).user_id == "u-cus"
    event["data"]["object"]["customer"] = "cus_1"
    result = map_stripe(event, CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is DeadLetterReason.NO_USER


def invoice(billing_reason: str, new_api: bool = True) -> dict[str, Any]:
    line: dict[str, Any] = {"period": {"start": seconds(T0), "end": seconds(T0 + 30 * DAY)}}
    obj: dict[str, Any] = {
        "id": "in_1",
        "billing_reason": billing_reason,
        "lines": {"data": [line]},
    }
    details = {"subscription": "sub_1", "metadata": {"user_id": "u1"}}
    if new_api:  # 2025-03-31 and later
        line["pricing"] = {"price_details": {"price": PLAN}}
        obj["parent"] = {"subscription_details": details}
    else:
        line["price"] = {"id": "price_x", "lookup_key": PLAN}
        obj["subscription"] = "sub_1"
        obj["subscription_details"] = {"metadata": {"user_id": "u1"}}
    return obj


@pytest.mark.parametrize("new_api", [True, False])
def test_stripe_invoice_paid_renews(new_api: bool) -> None:
    paid = invoice("subscription_cycle", new_api)
    event = {"id": "evt_2", "type": "invoice.paid", "created": seconds(T0),
             "data": {"object": paid}}  # fmt: skip
    result = mapped(map_stripe(event, CATALOG))
    assert (result.user_id, result.event.type, result.event.current_period_end) == (
        "u1", E.RENEWED, T0 + 30 * DAY,
    )  # fmt: skip
    paid["billing_reason"] = "manual"
    assert isinstance(map_stripe(event, CATALOG), Ignored)


def test_stripe_refunds_and_disputes_name_the_invoice_period() -> None:
    charge = {"id": "ch_1", "refunded": True, "invoice": invoice("subscription_cycle")}
    refund = {"id": "evt_3", "type": "charge.refunded", "created": seconds(T0),
              "data": {"object": charge}}  # fmt: skip
    event = mapped(map_stripe(refund, CATALOG)).event
    assert (event.type, event.refunded_period_end) == (E.REFUNDED, T0 + 30 * DAY)
    won = {"id": "evt_4", "type": "charge.dispute.closed", "created": seconds(T0),
           "data": {"object": {"status": "won", "charge": charge}}}  # fmt: skip
    assert mapped(map_stripe(won, CATALOG)).event.type is E.REFUND_REVERSED
    partial = {**refund, "data": {"object": {**charge, "refunded": False}}}
    assert isinstance(map_stripe(partial, CATALOG), Ignored)
    by_id = {**refund, "data": {"object": {**charge, "invoice": "in_1"}}}
    result = map_stripe(by_id, CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is DeadLetterReason.MISSING_DATA


def test_stripe_unknown_price_and_unhandled_types() -> None:
    unknown = stripe_subscription_event(
        "evt_5", "customer.subscription.created", created=T0, subscription_id="sub_1",
        user="u1", price_lookup_key="karaoke", status="active", period_end=T0 + 30 * DAY,
    )  # fmt: skip
    result = map_stripe(unknown, CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is DeadLetterReason.UNKNOWN_PRODUCT
    other = {"id": "evt_6", "type": "payout.paid", "created": seconds(T0), "data": {"object": {}}}
    result = map_stripe(other, CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is DeadLetterReason.UNHANDLED_TYPE
    assert isinstance(map_stripe(sub_event("customer.subscription.created", "incomplete"),
                                 CATALOG), Ignored)  # fmt: skip


# -- Google Play -------------------------------------------------------------------------


def play(kind: int, *, trial: bool = False, linked: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"productId": PLAN, "expiryTime": "2026-03-31T12:00:00.000Z"}
    if trial:
        item["offerPhase"] = {"freeTrial": {}}
    resource: dict[str, Any] = {
        "regionCode": "DE",
        "lineItems": [item],
        "externalAccountIdentifiers": {"obfuscatedExternalAccountId": "u-play"},
    }
    if linked:
        resource["linkedPurchaseToken"] = linked
    return {
        "messageId": "m-1",
        "notification": {
            "packageName": "com.example.music",
            "eventTimeMillis": str(millis(T0)),
            "subscriptionNotification": {"notificationType": kind, "purchaseToken": "tok"},
        },
        "subscription": resource,
    }


def test_play_purchase_trial_grace_and_linked_purchase() -> None:
    purchased = mapped(map_play(play(4), CATALOG))
    assert (purchased.user_id, purchased.event.type, purchased.event.market) == (
        "u-play", E.PURCHASED, "DE",
    )  # fmt: skip
    assert purchased.event.subscription_id == subscription_id("tok")
    assert purchased.then == ()
    assert mapped(map_play(play(4, trial=True), CATALOG)).event.type is E.TRIAL_STARTED
    grace = mapped(map_play(play(6), CATALOG)).event
    assert (grace.type, grace.grace_period_end) == (E.RENEWAL_FAILED, T0 + 30 * DAY)
    upgrade = mapped(map_play(play(4, linked="old-tok"), CATALOG))
    (ended,) = upgrade.then
    assert (ended.subscription_id, ended.type, ended.occurred_at) == (
        subscription_id("old-tok"), E.EXPIRED, T0,
    )  # fmt: skip


def test_play_informational_test_and_unhandled() -> None:
    assert isinstance(map_play(play(19), CATALOG), Ignored)  # price change updated
    assert isinstance(map_play(play(11), CATALOG), Ignored)  # pause schedule changed
    test = {"messageId": "m", "notification": {"testNotification": {"version": "1.0"}}}
    assert isinstance(map_play(test, CATALOG), Ignored)
    result = map_play(play(99), CATALOG)
    assert isinstance(result, Unmappable)
    assert result.reason is DeadLetterReason.UNHANDLED_TYPE
