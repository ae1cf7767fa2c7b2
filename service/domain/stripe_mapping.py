"""Stripe webhook events, verified, as events of the web store (docs/INGESTION.md).

Stripe sends the object as it is after the change (a snapshot), repeats events and does
not order them: each becomes a snapshot event ordered by the event's `created`.

| Stripe event | event type |
|---|---|
| customer.subscription.created / updated, status trialing | TRIAL_STARTED |
| customer.subscription.created, status active | PURCHASED |
| customer.subscription.updated, active, cancel_at_period_end (or cancel_at) | CANCELED |
| customer.subscription.updated, active, out of past_due / unpaid / paused | RESUMED |
| customer.subscription.updated, active, price changed | PLAN_CHANGED |
| customer.subscription.updated, active, cancellation withdrawn | UNCANCELED |
| customer.subscription.updated, active, anything else (a new period) | RENEWED |
| customer.subscription.*, status past_due | RENEWAL_FAILED (grace: PAST_DUE_GRACE) |
| customer.subscription.*, status unpaid / paused | ON_HOLD / PAUSED |
| customer.subscription.deleted, or status canceled | EXPIRED |
| customer.subscription.*, status incomplete / incomplete_expired | nothing (never paid) |
| invoice.paid (billing_reason subscription_create / subscription_cycle) | PURCHASED / RENEWED |
| charge.refunded (fully refunded), charge.dispute.created | REFUNDED |
| charge.dispute.closed, status won | REFUND_REVERSED |

- event id: the Stripe event id (evt_...); subscription id: "stripe:" + the subscription id;
- user: the subscription's metadata `user_id`, else the customer's (when the event carries
  the customer expanded), else the user the customer id is linked to (`entitlements
  link-store-account stripe cus_...`), else a dead letter (NO_USER);
- plan: the subscription item's price, by lookup_key then id; current_period_end from the
  subscription, or from its item (API versions from 2025-03-31 moved it there);
- refunds and disputes name the refunded period through the charge's invoice, which the
  event must carry expanded (invoice lines with period and subscription); a charge that
  names its invoice only by id is a dead letter (MISSING_DATA).
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from datetime import datetime, timedelta
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
    from_seconds,
    plan_for_product,
)

SUBSCRIPTION_PREFIX = "stripe:"
# A past_due subscription keeps access this long while Stripe retries the payment (Smart
# Retries); then `unpaid` (ON_HOLD) or `canceled` (EXPIRED) follows.
PAST_DUE_GRACE = timedelta(days=7)

_STATUS_EVENTS = {
    "past_due": EventType.RENEWAL_FAILED,
    "unpaid": EventType.ON_HOLD,
    "paused": EventType.PAUSED,
    "canceled": EventType.EXPIRED,
}
_NEVER_PAID = frozenset({"incomplete", "incomplete_expired"})
_INFORMATIONAL = frozenset(
    {
        "customer.subscription.trial_will_end",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
        "invoice.created",
        "invoice.finalized",
        "invoice.upcoming",
        "invoice.payment_succeeded",  # invoice.paid reports the same payment
        "invoice.payment_failed",  # the subscription's past_due reports it
        "charge.succeeded",
        "charge.dispute.updated",
        "charge.dispute.funds_reinstated",
    }
)


def _obj(value: Any) -> MappingType[str, Any]:
    return value if isinstance(value, MappingType) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _user(*metadata_owners: Any) -> str | None:
    for owner in metadata_owners:
        user = _text(_obj(_obj(owner).get("metadata")).get("user_id"))
        if user is not None:
            return user
    return None


def _price_plan(catalog: Catalog, price: Any) -> tuple[str | None, str]:
    """The plan a price names, and how the price is named (for a dead letter)."""
    if isinstance(price, str):
        return plan_for_product(catalog, price), price
    price = _obj(price)
    lookup, price_id = _text(price.get("lookup_key")), _text(price.get("id"))
    return plan_for_product(catalog, lookup, price_id), f"{lookup or '-'}/{price_id or '-'}"


def stripe_account(event: MappingType[str, Any]) -> str | None:
    """The store account an event is about: the customer id (of the subscription, invoice
    or charge, or of the dispute's charge)."""
    obj = _obj(_obj(event.get("data")).get("object"))
    for owner in (obj, _obj(obj.get("charge"))):
        customer = owner.get("customer")
        if isinstance(customer, MappingType):
            customer = customer.get("id")
        if isinstance(customer, str) and customer:
            return customer
    return None


def map_stripe(
    event: MappingType[str, Any], catalog: Catalog, linked_user: str | None = None, /
) -> Mapping:
    kind = _text(event.get("type")) or ""
    event_id = _text(event.get("id"))
    occurred_at = from_seconds(event.get("created"))
    obj = _obj(_obj(event.get("data")).get("object"))
    if kind in _INFORMATIONAL:
        return Ignored(kind)
    if event_id is None or occurred_at is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "the event has no id or created")
    if kind.startswith("customer.subscription."):
        if kind not in (
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "customer.subscription.paused",
            "customer.subscription.resumed",
        ):
            return Unmappable(DeadLetterReason.UNHANDLED_TYPE, kind)
        previous = _obj(_obj(event.get("data")).get("previous_attributes"))
        return _subscription(kind, event_id, occurred_at, obj, previous, catalog, linked_user)
    if kind == "invoice.paid":
        return _invoice_paid(event_id, occurred_at, obj, catalog, linked_user)
    if kind == "charge.refunded":
        if obj.get("refunded") is not True:
            return Ignored("a partial refund: access stays")
        return _refund(EventType.REFUNDED, event_id, occurred_at, obj, catalog, linked_user)
    if kind in ("charge.dispute.created", "charge.dispute.closed"):
        charge = obj.get("charge")
        if not isinstance(charge, MappingType):
            return Unmappable(DeadLetterReason.MISSING_DATA, f"{kind}: the charge is not expanded")
        if kind == "charge.dispute.created":
            return _refund(EventType.REFUNDED, event_id, occurred_at, charge, catalog, linked_user)
        if obj.get("status") == "won":
            reversed_ = EventType.REFUND_REVERSED
            return _refund(reversed_, event_id, occurred_at, charge, catalog, linked_user)
        return Ignored(f"dispute closed {obj.get('status')}: the refund stands")
    return Unmappable(DeadLetterReason.UNHANDLED_TYPE, kind or "(no type)")


def _subscription(
    kind: str,
    event_id: str,
    occurred_at: datetime,
    sub: MappingType[str, Any],
    previous: MappingType[str, Any],
    catalog: Catalog,
    linked_user: str | None,
) -> Mapping:
    status = _text(sub.get("status")) or ""
    if status in _NEVER_PAID:
        return Ignored(f"subscription {status}: never paid")
    sub_id = _text(sub.get("id"))
    if sub_id is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "the subscription has no id")
    user_id = _user(sub, sub.get("customer")) or linked_user
    if user_id is None:
        return Unmappable(
            DeadLetterReason.NO_USER, "no metadata.user_id on the subscription or its customer"
        )
    items = _obj(sub.get("items")).get("data")
    item = _obj(items[0]) if isinstance(items, list) and items else {}
    plan_id, price_name = _price_plan(catalog, item.get("price") or sub.get("plan"))
    if plan_id is None:
        return Unmappable(DeadLetterReason.UNKNOWN_PRODUCT, f"price {price_name}")
    period_end = from_seconds(sub.get("current_period_end")) or from_seconds(
        item.get("current_period_end")
    )
    if period_end is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "no current_period_end")
    event_type = _subscription_event_type(kind, status, sub, previous)
    if event_type is None:
        return Unmappable(DeadLetterReason.UNHANDLED_TYPE, f"{kind} with status {status!r}")
    grace_end = occurred_at + PAST_DUE_GRACE if event_type is EventType.RENEWAL_FAILED else None
    return Mapped(
        user_id,
        SubscriptionEvent(
            event_id=event_id,
            subscription_id=SUBSCRIPTION_PREFIX + sub_id,
            store=Store.WEB,
            type=event_type,
            occurred_at=occurred_at,
            plan_id=plan_id,
            current_period_end=period_end,
            grace_period_end=grace_end,
        ),
    )


def _subscription_event_type(
    kind: str, status: str, sub: MappingType[str, Any], previous: MappingType[str, Any]
) -> EventType | None:
    """The event a subscription change is: by its status, then for an active subscription by
    what changed (`previous` holds the attributes before the change); None: not one of ours."""
    if kind == "customer.subscription.deleted" or status == "canceled":
        return EventType.EXPIRED
    if status in _STATUS_EVENTS:
        return _STATUS_EVENTS[status]
    if status == "trialing":
        return EventType.TRIAL_STARTED
    if status != "active":
        return None
    if kind == "customer.subscription.created":
        return EventType.PURCHASED
    if sub.get("cancel_at_period_end") is True or sub.get("cancel_at") is not None:
        return EventType.CANCELED
    if previous.get("status") in ("past_due", "unpaid", "paused"):
        return EventType.RESUMED
    if "items" in previous or "plan" in previous:
        return EventType.PLAN_CHANGED
    if "cancel_at_period_end" in previous or "cancel_at" in previous:
        return EventType.UNCANCELED
    if previous.get("status") == "trialing":
        return EventType.PURCHASED  # the trial converted
    return EventType.RENEWED


def _invoice_subscription(invoice: MappingType[str, Any]) -> tuple[str | None, Any]:
    """The invoice's subscription id and the metadata owner that names its user (API
    versions before 2025-03-31: `subscription`, `subscription_details`; from then on under
    `parent.subscription_details`)."""
    details = _obj(_obj(invoice.get("parent")).get("subscription_details"))
    if not details:
        details = _obj(invoice.get("subscription_details"))
    sub = invoice.get("subscription") or details.get("subscription")
    if isinstance(sub, MappingType):
        return _text(sub.get("id")), sub
    return _text(sub), details


def _invoice_line(invoice: MappingType[str, Any]) -> MappingType[str, Any]:
    lines = _obj(invoice.get("lines")).get("data")
    if not isinstance(lines, list):
        return {}
    for line in lines:
        line = _obj(line)
        if _obj(line.get("period")).get("end") is not None:
            return line
    return {}


def _line_price(line: MappingType[str, Any]) -> Any:
    pricing = _obj(_obj(line.get("pricing")).get("price_details")).get("price")
    return line.get("price") or pricing


def _invoice_paid(
    event_id: str,
    occurred_at: datetime,
    invoice: MappingType[str, Any],
    catalog: Catalog,
    linked_user: str | None,
) -> Mapping:
    reason = _text(invoice.get("billing_reason")) or ""
    event_type = {
        "subscription_create": EventType.PURCHASED,
        "subscription_cycle": EventType.RENEWED,
    }.get(reason)
    if event_type is None:
        return Ignored(
            f"invoice.paid ({reason or 'no billing_reason'}): the subscription reports it"
        )
    sub_id, owner = _invoice_subscription(invoice)
    if sub_id is None:
        return Ignored("invoice.paid for no subscription")
    user_id = _user(owner, invoice.get("customer")) or linked_user
    if user_id is None:
        return Unmappable(DeadLetterReason.NO_USER, "no metadata.user_id on the subscription")
    line = _invoice_line(invoice)
    plan_id, price_name = _price_plan(catalog, _line_price(line))
    if plan_id is None:
        return Unmappable(DeadLetterReason.UNKNOWN_PRODUCT, f"price {price_name}")
    period_end = from_seconds(_obj(line.get("period")).get("end"))
    if period_end is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "the invoice line has no period")
    return Mapped(
        user_id,
        SubscriptionEvent(
            event_id=event_id,
            subscription_id=SUBSCRIPTION_PREFIX + sub_id,
            store=Store.WEB,
            type=event_type,
            occurred_at=occurred_at,
            plan_id=plan_id,
            current_period_end=period_end,
        ),
    )


def _refund(
    event_type: EventType,
    event_id: str,
    occurred_at: datetime,
    charge: MappingType[str, Any],
    catalog: Catalog,
    linked_user: str | None,
) -> Mapping:
    invoice = charge.get("invoice")
    if not isinstance(invoice, MappingType):
        return Unmappable(
            DeadLetterReason.MISSING_DATA,
            f"charge {charge.get('id')}: its invoice is not in the event (expand it)",
        )
    sub_id, owner = _invoice_subscription(invoice)
    if sub_id is None:
        return Ignored("a refund of a charge of no subscription")
    user_id = _user(owner, charge, invoice.get("customer")) or linked_user
    if user_id is None:
        return Unmappable(DeadLetterReason.NO_USER, "no metadata.user_id on the subscription")
    line = _invoice_line(invoice)
    period_end = from_seconds(_obj(line.get("period")).get("end"))
    if period_end is None:
        return Unmappable(DeadLetterReason.MISSING_DATA, "the invoice line has no period")
    return Mapped(
        user_id,
        SubscriptionEvent(
            event_id=event_id,
            subscription_id=SUBSCRIPTION_PREFIX + sub_id,
            store=Store.WEB,
            type=event_type,
            occurred_at=occurred_at,
            refunded_period_end=period_end,
        ),
    )
