"""App Store Server Notifications v2, verified and decoded, as events (docs/INGESTION.md).

The input is the notification's decoded JSON (`responseBodyV2DecodedPayload`: notificationType,
subtype, notificationUUID, signedDate, data) with the decoded signed transaction under
"transaction" and the decoded renewal info under "renewalInfo" (the adapter verifies all
three with Apple's library first). The event type comes from the table of
store_notifications; the rest from the transaction:

- event id: notificationUUID (Apple redelivers the same notification with the same UUID);
- subscription id: "app_store:" + originalTransactionId (the same across renewals);
- user: the transaction's appAccountToken (the app sets it to the user's id, a UUID), else
  the user its originalTransactionId is linked to (`entitlements link-store-account`);
- plan: productId (a plan id of the catalog); current_period_end: expiresDate;
- occurred_at: the notification's signedDate (ordering is by it, so a redelivered or
  reordered notification lands where it belongs);
- market: the storefront (alpha-3) as a market (alpha-2), when known.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from typing import Any

from service.domain.account import Store
from service.domain.catalog import Catalog
from service.domain.events import EventType, SubscriptionEvent
from service.domain.ingestion import (
    DeadLetterReason,
    Ignored,
    Mapped,
    Mapping,
    Unmappable,
    from_millis,
    market_for_storefront,
    plan_for_product,
)
from service.domain.store_notifications import map_notification

# Notification types that change nobody's access: answered and counted, nothing recorded.
INFORMATIONAL = frozenset(
    {
        "TEST",
        "PRICE_INCREASE",
        "REFUND_DECLINED",
        "CONSUMPTION_REQUEST",
        "RENEWAL_EXTENSION",  # a summary; each subscription gets its RENEWAL_EXTENDED
        "METADATA_UPDATE",
    }
)
SUBSCRIPTION_PREFIX = "app_store:"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def app_store_account(notification: MappingType[str, Any]) -> str | None:
    """The store account a notification is about: the originalTransactionId."""
    transaction = notification.get("transaction")
    if not isinstance(transaction, MappingType):
        return None
    return _text(transaction.get("originalTransactionId"))


def map_app_store(
    notification: MappingType[str, Any], catalog: Catalog, linked_user: str | None = None, /
) -> Mapping:
    kind = _text(notification.get("notificationType")) or ""
    subtype = _text(notification.get("subtype"))
    if kind in INFORMATIONAL:
        return Ignored(f"{kind} notification")
    try:
        row = map_notification(Store.APP_STORE, kind, subtype)
    except KeyError:
        return Unmappable(DeadLetterReason.UNHANDLED_TYPE, f"{kind}/{subtype or '-'}")
    if row.event_type is None:
        return Ignored(f"{kind}/{subtype or '-'}: {row.reads}")
    transaction = notification.get("transaction")
    if not isinstance(transaction, MappingType):
        return Unmappable(DeadLetterReason.MISSING_DATA, f"{kind}: no signedTransactionInfo")
    renewal = notification.get("renewalInfo")
    renewal = renewal if isinstance(renewal, MappingType) else {}
    user_id = _text(transaction.get("appAccountToken")) or linked_user
    if user_id is None:
        return Unmappable(
            DeadLetterReason.NO_USER, "no appAccountToken, and the purchase is linked to nobody"
        )
    product = _text(transaction.get("productId"))
    plan_id = plan_for_product(catalog, product)
    if plan_id is None:
        return Unmappable(DeadLetterReason.UNKNOWN_PRODUCT, f"productId {product!r}")
    original = _text(transaction.get("originalTransactionId"))
    uuid = _text(notification.get("notificationUUID"))
    occurred_at = from_millis(notification.get("signedDate"))
    if original is None or uuid is None or occurred_at is None:
        return Unmappable(
            DeadLetterReason.MISSING_DATA,
            "originalTransactionId, notificationUUID and signedDate are required",
        )
    expires = from_millis(transaction.get("expiresDate"))
    offer = _text(transaction.get("offerIdentifier"))
    event_type = row.event_type
    grace_end = None
    refunded_end = None
    if event_type is EventType.RENEWAL_FAILED:
        grace_end = from_millis(renewal.get("gracePeriodExpiresDate"))
        if grace_end is None:
            return Unmappable(DeadLetterReason.MISSING_DATA, "no gracePeriodExpiresDate")
    if event_type in (EventType.REFUNDED, EventType.REFUND_REVERSED):
        refunded_end = expires
        if refunded_end is None:
            return Unmappable(
                DeadLetterReason.MISSING_DATA, "the refunded transaction has no expiresDate"
            )
    event = SubscriptionEvent(
        event_id=uuid,
        subscription_id=SUBSCRIPTION_PREFIX + original,
        store=Store.APP_STORE,
        type=event_type,
        occurred_at=occurred_at,
        plan_id=plan_id,
        current_period_end=expires,
        grace_period_end=grace_end,
        # An offer the catalog does not know (a promotional code's offer) records none.
        offer_id=offer if offer and any(o.id == offer for o in catalog.offers) else None,
        market=market_for_storefront(transaction.get("storefront")),
        refunded_period_end=refunded_end,
    )
    return Mapped(user_id, event)
