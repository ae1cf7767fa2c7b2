"""Google Play real-time developer notifications (RTDN), with the subscription's state read
from purchases.subscriptionsv2, as events (docs/INGESTION.md).

The input is {"messageId", "notification": the DeveloperNotification (packageName,
eventTimeMillis, subscriptionNotification | voidedPurchaseNotification |
testNotification), "subscription": the SubscriptionPurchaseV2 resource of its
purchaseToken}. The event type comes from the table of store_notifications by the
notification type; the rest from the resource:

- event id: the Pub/Sub messageId (a redelivered message keeps it);
- subscription id: "google_play:" + a digest of the purchaseToken (tokens are longer than
  an id may be);
- user: externalAccountIdentifiers.obfuscatedExternalAccountId (the app sets it to the
  user's id at purchase);
- plan: lineItems[].productId; period end: lineItems[].expiryTime (the latest);
- occurred_at: eventTimeMillis;
- linkedPurchaseToken: the purchase it replaces (an upgrade, a resubscription) loses its
  access: an EXPIRED event of that purchase follows the new one;
- a voided subscription purchase is REFUNDED, its period named by the line item's expiryTime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping as MappingType
from datetime import datetime
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
    from_rfc3339,
    plan_for_product,
)
from service.domain.store_notifications import map_notification

SUBSCRIPTION_PREFIX = "google_play:"

# subscriptionNotification.notificationType -> the RTDN name of the table.
NOTIFICATION_TYPES: dict[int, str] = {
    1: "SUBSCRIPTION_RECOVERED",
    2: "SUBSCRIPTION_RENEWED",
    3: "SUBSCRIPTION_CANCELED",
    4: "SUBSCRIPTION_PURCHASED",
    5: "SUBSCRIPTION_ON_HOLD",
    6: "SUBSCRIPTION_IN_GRACE_PERIOD",
    7: "SUBSCRIPTION_RESTARTED",
    8: "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
    9: "SUBSCRIPTION_DEFERRED",
    10: "SUBSCRIPTION_PAUSED",
    11: "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED",
    12: "SUBSCRIPTION_REVOKED",
    13: "SUBSCRIPTION_EXPIRED",
    17: "SUBSCRIPTION_ITEMS_CHANGED",
    18: "SUBSCRIPTION_CANCELLATION_SCHEDULED",
    19: "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
    20: "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
    22: "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
}
# Types that change nobody's access (price changes, a pending purchase that never paid).
INFORMATIONAL = frozenset(
    {
        "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
        "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
        "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
        "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
    }
)
VOIDED_SUBSCRIPTION = 1  # voidedPurchaseNotification.productType PRODUCT_TYPE_SUBSCRIPTION


def subscription_id(purchase_token: str) -> str:
    return SUBSCRIPTION_PREFIX + hashlib.sha256(purchase_token.encode()).hexdigest()[:40]


def _obj(value: Any) -> MappingType[str, Any]:
    return value if isinstance(value, MappingType) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _latest_item(
    resource: MappingType[str, Any], order_id: str | None = None
) -> MappingType[str, Any]:
    items = [_obj(x) for x in resource.get("lineItems") or [] if isinstance(x, MappingType)]
    if order_id is not None:
        for item in items:
            if item.get("latestSuccessfulOrderId") == order_id:
                return item
    dated: list[tuple[datetime, MappingType[str, Any]]] = []
    for item in items:
        at = from_rfc3339(item.get("expiryTime"))
        if at is not None:
            dated.append((at, item))
    if dated:
        return max(dated, key=lambda pair: pair[0])[1]
    return items[0] if items else {}


def purchase_token(notification: MappingType[str, Any]) -> str | None:
    """The purchaseToken a DeveloperNotification is about (None: a test notification)."""
    for kind in ("subscriptionNotification", "voidedPurchaseNotification"):
        token = _text(_obj(notification.get(kind)).get("purchaseToken"))
        if token is not None:
            return token
    return None


def map_play(
    message: MappingType[str, Any], catalog: Catalog, linked_user: str | None = None, /
) -> Mapping:
    notification = _obj(message.get("notification"))
    resource = _obj(message.get("subscription"))
    message_id = _text(message.get("messageId"))
    if "testNotification" in notification:
        return Ignored("test notification")
    occurred_at = from_millis(notification.get("eventTimeMillis"))
    token = purchase_token(notification)
    if message_id is None or occurred_at is None or token is None:
        return Unmappable(
            DeadLetterReason.MISSING_DATA,
            "messageId, eventTimeMillis and purchaseToken are required",
        )
    voided = _obj(notification.get("voidedPurchaseNotification"))
    if voided:
        if voided.get("productType") != VOIDED_SUBSCRIPTION:
            return Ignored("a voided one-time product: no subscription access")
        kind = "VOIDED_PURCHASE"
    else:
        code = _obj(notification.get("subscriptionNotification")).get("notificationType")
        named = NOTIFICATION_TYPES.get(code) if isinstance(code, int) else None
        if named is None:
            return Unmappable(DeadLetterReason.UNHANDLED_TYPE, f"notificationType {code!r}")
        if named in INFORMATIONAL:
            return Ignored(named)
        kind = named
    if not resource:
        return Unmappable(DeadLetterReason.MISSING_DATA, "no subscriptionsv2 resource")
    accounts = _obj(resource.get("externalAccountIdentifiers"))
    user_id = _text(accounts.get("obfuscatedExternalAccountId")) or linked_user
    if user_id is None:
        return Unmappable(
            DeadLetterReason.NO_USER, "no obfuscatedExternalAccountId on the purchase"
        )
    item = _latest_item(resource, _text(voided.get("orderId")))
    product = _text(item.get("productId"))
    plan_id = plan_for_product(catalog, product)
    if plan_id is None:
        return Unmappable(DeadLetterReason.UNKNOWN_PRODUCT, f"productId {product!r}")
    expiry = from_rfc3339(item.get("expiryTime"))
    if expiry is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "the line item has no expiryTime")
    phase = _obj(item.get("offerPhase"))
    subtype = "FREE_TRIAL" if "freeTrial" in phase else None
    try:
        row = map_notification(Store.GOOGLE_PLAY, kind, subtype)
    except KeyError:
        return Unmappable(DeadLetterReason.UNHANDLED_TYPE, kind)
    if row.event_type is None:
        return Ignored(f"{kind}: {row.reads}")
    event_type = row.event_type
    offer = _text(_obj(item.get("offerDetails")).get("offerId"))
    event = SubscriptionEvent(
        event_id=message_id,
        subscription_id=subscription_id(token),
        store=Store.GOOGLE_PLAY,
        type=event_type,
        occurred_at=occurred_at,
        plan_id=plan_id,
        current_period_end=None if event_type is EventType.RENEWAL_FAILED else expiry,
        grace_period_end=expiry if event_type is EventType.RENEWAL_FAILED else None,
        offer_id=offer if offer and any(o.id == offer for o in catalog.offers) else None,
        market=_text(resource.get("regionCode")),
        refunded_period_end=expiry if event_type is EventType.REFUNDED else None,
    )
    then: tuple[SubscriptionEvent, ...] = ()
    linked = _text(resource.get("linkedPurchaseToken"))
    if linked is not None and event_type in (EventType.PURCHASED, EventType.TRIAL_STARTED):
        then = (_replaced(linked, message_id, occurred_at, plan_id),)
    return Mapped(user_id, event, then)


def _replaced(token: str, message_id: str, at: datetime, plan_id: str) -> SubscriptionEvent:
    """The purchase a new one replaced ends when the new one starts."""
    return SubscriptionEvent(
        event_id=f"{message_id}:linked",
        subscription_id=subscription_id(token),
        store=Store.GOOGLE_PLAY,
        type=EventType.EXPIRED,
        occurred_at=at,
        plan_id=plan_id,
        current_period_end=at,
    )
