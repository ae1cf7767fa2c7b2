"""The store notification table (service.domain.store_notifications): one test per row.
Each row's expected event type is restated here, and the event it yields is applied to a
subscription in a typical prior state to show the effect docs/WRITE_PATH.md promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.catalog import load_catalog
from service.domain.account import AccountState, Store, SubscriptionStatus
from service.domain.account import SubscriptionStatus as S
from service.domain.events import EventType as E
from service.domain.events import SubscriptionEvent, apply_event, validate_event
from service.domain.store_notifications import APP_STORE, GOOGLE_PLAY, TABLE, map_notification

CATALOG = load_catalog()
T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
END = T0 + 30 * DAY

A, G = Store.APP_STORE, Store.GOOGLE_PLAY
# (store, notification, subtype, expected event type, status after it from an active
# subscription; None: the notification records nothing)
ROWS = [
    (A, "SUBSCRIBED", "INITIAL_BUY", E.PURCHASED, S.ACTIVE),
    (A, "SUBSCRIBED", "INITIAL_BUY_FREE_TRIAL", E.TRIAL_STARTED, S.TRIALING),
    (A, "SUBSCRIBED", "RESUBSCRIBE", E.PURCHASED, S.ACTIVE),
    (A, "DID_RENEW", None, E.RENEWED, S.ACTIVE),
    (A, "DID_RENEW", "BILLING_RECOVERY", E.RENEWED, S.ACTIVE),
    (A, "DID_FAIL_TO_RENEW", "GRACE_PERIOD", E.RENEWAL_FAILED, S.IN_GRACE_PERIOD),
    (A, "DID_FAIL_TO_RENEW", None, E.ON_HOLD, S.ON_HOLD),
    (A, "GRACE_PERIOD_EXPIRED", None, E.GRACE_EXPIRED, S.ON_HOLD),
    (A, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", E.CANCELED, S.CANCELED),
    (A, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_ENABLED", E.UNCANCELED, S.ACTIVE),
    (A, "DID_CHANGE_RENEWAL_PREF", "UPGRADE", E.PLAN_CHANGED, S.ACTIVE),
    (A, "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE", None, None),
    (A, "OFFER_REDEEMED", "INITIAL_BUY", E.PURCHASED, S.ACTIVE),
    (A, "OFFER_REDEEMED", "RESUBSCRIBE", E.PURCHASED, S.ACTIVE),
    (A, "OFFER_REDEEMED", "UPGRADE", E.PLAN_CHANGED, S.ACTIVE),
    (A, "OFFER_REDEEMED", None, E.UNCANCELED, S.ACTIVE),
    (A, "EXPIRED", None, E.EXPIRED, S.EXPIRED),
    (A, "EXPIRED", "VOLUNTARY", E.EXPIRED, S.EXPIRED),
    (A, "REFUND", None, E.REFUNDED, S.REFUNDED),
    (A, "REFUND_REVERSED", None, E.REFUND_REVERSED, S.ACTIVE),
    (A, "REVOKE", None, E.REVOKED, S.REVOKED),
    (A, "RENEWAL_EXTENDED", None, E.PERIOD_EXTENDED, S.ACTIVE),
    (G, "SUBSCRIPTION_PURCHASED", None, E.PURCHASED, S.ACTIVE),
    (G, "SUBSCRIPTION_PURCHASED", "FREE_TRIAL", E.TRIAL_STARTED, S.TRIALING),
    (G, "SUBSCRIPTION_RENEWED", None, E.RENEWED, S.ACTIVE),
    (G, "SUBSCRIPTION_RECOVERED", None, E.RESUMED, S.ACTIVE),
    (G, "SUBSCRIPTION_CANCELED", None, E.CANCELED, S.CANCELED),
    (G, "SUBSCRIPTION_RESTARTED", None, E.UNCANCELED, S.ACTIVE),
    (G, "SUBSCRIPTION_IN_GRACE_PERIOD", None, E.RENEWAL_FAILED, S.IN_GRACE_PERIOD),
    (G, "SUBSCRIPTION_ON_HOLD", None, E.ON_HOLD, S.ON_HOLD),
    (G, "SUBSCRIPTION_PAUSED", None, E.PAUSED, S.PAUSED),
    (G, "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED", None, None, None),
    (G, "SUBSCRIPTION_DEFERRED", None, E.PERIOD_EXTENDED, S.ACTIVE),
    (G, "SUBSCRIPTION_REVOKED", None, E.REVOKED, S.REVOKED),
    (G, "SUBSCRIPTION_EXPIRED", None, E.EXPIRED, S.EXPIRED),
    (G, "VOIDED_PURCHASE", None, E.REFUNDED, S.REFUNDED),
]


def test_every_row_of_the_table_is_tested() -> None:
    tested = {(store, name, subtype) for store, name, subtype, _, _ in ROWS}
    assert {(r.store, r.notification, r.subtype) for r in TABLE} <= tested
    assert {r.notification for r in APP_STORE} >= {
        "SUBSCRIBED", "DID_RENEW", "DID_FAIL_TO_RENEW", "GRACE_PERIOD_EXPIRED",
        "DID_CHANGE_RENEWAL_STATUS", "DID_CHANGE_RENEWAL_PREF", "OFFER_REDEEMED", "EXPIRED",
        "REFUND", "REFUND_REVERSED", "REVOKE", "RENEWAL_EXTENDED",
    }  # fmt: skip
    assert {r.notification.removeprefix("SUBSCRIPTION_") for r in GOOGLE_PLAY} >= {
        "PURCHASED", "RENEWED", "RECOVERED", "CANCELED", "RESTARTED", "IN_GRACE_PERIOD",
        "ON_HOLD", "PAUSED", "PAUSE_SCHEDULE_CHANGED", "DEFERRED", "REVOKED", "EXPIRED",
    }  # fmt: skip


def _account(status_before: E) -> AccountState:
    """An active subscription (period T0..END), refunded first for a reversal."""
    purchase = SubscriptionEvent("p", "sub", Store.WEB, E.PURCHASED, T0, "premium_individual", END)
    account = apply_event(AccountState.new("u"), purchase, CATALOG).account
    if status_before is E.REFUND_REVERSED:
        refund = SubscriptionEvent(
            "r", "sub", Store.WEB, E.REFUNDED, T0 + DAY, refunded_period_end=END
        )
        account = apply_event(account, refund, CATALOG).account
    return account


@pytest.mark.parametrize(("store", "name", "subtype", "expected", "status"), ROWS)
def test_row(
    store: Store, name: str, subtype: str | None, expected: E | None, status: S | None
) -> None:
    row = map_notification(store, name, subtype)
    assert row.event_type is expected
    assert row.reads
    if expected is None:
        return
    at = T0 + 2 * DAY
    event = SubscriptionEvent(
        event_id="n",
        subscription_id="sub",
        store=store,
        type=expected,
        occurred_at=at,
        plan_id="premium_family" if expected is E.PLAN_CHANGED else "premium_individual",
        current_period_end=END + 10 * DAY if expected is E.PERIOD_EXTENDED else END,
        grace_period_end=at + 7 * DAY if expected is E.RENEWAL_FAILED else None,
        refunded_period_end=END if expected in (E.REFUNDED, E.REFUND_REVERSED) else None,
    )
    validate_event(event, CATALOG, at)
    result = apply_event(_account(expected), event, CATALOG)
    assert result.subscription is not None
    assert result.subscription.status is status
    if expected is E.PERIOD_EXTENDED:
        assert result.subscription.current_period_end == END + 10 * DAY


def test_unknown_notifications_are_refused() -> None:
    with pytest.raises(KeyError):
        map_notification(Store.APP_STORE, "PRICE_INCREASE")
    assert SubscriptionStatus.REFUNDED.value == "refunded"
