"""Subscription lifecycle events from the stores and the web checkout.

Store events arrive late, twice and out of order. The rules:
- An event strictly older than the newest event a subscription reflects (`last_event_at`)
  is *stale*: it is recorded (its facts, such as the offer redeemed or the start time, are
  kept) but it never moves the status, plan or period back.
- A newer event must be a valid transition from the current status (`ALLOWED_FROM`),
  else it is rejected with FAILED_PRECONDITION and changes nothing; stores redeliver
  rejected events, and by then the event it depended on has usually arrived.
- An applied event sets the status from its type and takes plan and period data from the
  event when it carries them (store notifications carry the current plan and period end),
  so the newest event determines the state whatever order the others arrived in.
Duplicates (the same event id) are caught before this module, by the store's idempotency
keys.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.domain.account import AccountState, Redemption, Store, Subscription
from service.domain.account import SubscriptionStatus as S
from service.domain.catalog import Catalog
from service.domain.errors import (
    FieldViolation,
    InvalidRequest,
    PreconditionFailed,
    PreconditionReason,
)
from service.domain.validation import check_id, check_market

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.
MAX_CLOCK_SKEW = timedelta(hours=1)


class EventType(enum.Enum):
    PURCHASED = "purchased"
    TRIAL_STARTED = "trial_started"
    RENEWED = "renewed"
    RENEWAL_FAILED = "renewal_failed"
    GRACE_EXPIRED = "grace_expired"
    ON_HOLD = "on_hold"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELED = "canceled"
    UNCANCELED = "uncanceled"
    EXPIRED = "expired"
    REVOKED = "revoked"
    PLAN_CHANGED = "plan_changed"


class EventOutcome(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"


# The statuses (None: the subscription is not known yet) each event may arrive in.
ALLOWED_FROM: dict[EventType, frozenset[S | None]] = {
    EventType.TRIAL_STARTED: frozenset({None, S.TRIALING}),
    EventType.PURCHASED: frozenset({None, S.TRIALING, S.CANCELED, S.EXPIRED}),
    EventType.RENEWED: frozenset(
        {S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD, S.ON_HOLD, S.CANCELED, S.EXPIRED}
    ),
    EventType.RENEWAL_FAILED: frozenset({S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD}),
    EventType.GRACE_EXPIRED: frozenset({S.IN_GRACE_PERIOD}),
    EventType.ON_HOLD: frozenset({S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD}),
    EventType.PAUSED: frozenset({S.ACTIVE}),
    EventType.RESUMED: frozenset({S.PAUSED, S.ON_HOLD}),
    EventType.CANCELED: frozenset({S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD}),
    EventType.UNCANCELED: frozenset({S.CANCELED}),
    EventType.EXPIRED: frozenset(
        {S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD, S.ON_HOLD, S.PAUSED, S.CANCELED}
    ),
    EventType.REVOKED: frozenset(
        {S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD, S.ON_HOLD, S.PAUSED, S.CANCELED, S.EXPIRED}
    ),
    EventType.PLAN_CHANGED: frozenset({S.TRIALING, S.ACTIVE, S.IN_GRACE_PERIOD, S.CANCELED}),
}

# The status an event leads to; PLAN_CHANGED keeps the current one.
_STATUS_AFTER: dict[EventType, S] = {
    EventType.TRIAL_STARTED: S.TRIALING,
    EventType.PURCHASED: S.ACTIVE,
    EventType.RENEWED: S.ACTIVE,
    EventType.RENEWAL_FAILED: S.IN_GRACE_PERIOD,
    EventType.GRACE_EXPIRED: S.ON_HOLD,
    EventType.ON_HOLD: S.ON_HOLD,
    EventType.PAUSED: S.PAUSED,
    EventType.RESUMED: S.ACTIVE,
    EventType.CANCELED: S.CANCELED,
    EventType.UNCANCELED: S.ACTIVE,
    EventType.EXPIRED: S.EXPIRED,
    EventType.REVOKED: S.REVOKED,
}

# Whether the subscription renews after the event; events not listed keep the setting.
_AUTO_RENEW_AFTER: dict[EventType, bool] = {
    EventType.TRIAL_STARTED: True,
    EventType.PURCHASED: True,
    EventType.RENEWED: True,
    EventType.RESUMED: True,
    EventType.UNCANCELED: True,
    EventType.CANCELED: False,
    EventType.EXPIRED: False,
    EventType.REVOKED: False,
}

_NEEDS_PLAN = frozenset({EventType.PURCHASED, EventType.TRIAL_STARTED, EventType.PLAN_CHANGED})
_NEEDS_PERIOD_END = frozenset(
    {EventType.PURCHASED, EventType.TRIAL_STARTED, EventType.RENEWED, EventType.RESUMED}
)


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    event_id: str
    subscription_id: str
    store: Store | None
    type: EventType | None
    occurred_at: datetime | None
    plan_id: str | None = None
    current_period_end: datetime | None = None
    grace_period_end: datetime | None = None
    offer_id: str | None = None
    market: str | None = None


@dataclass(frozen=True, slots=True)
class EventResult:
    account: AccountState
    outcome: EventOutcome
    subscription: Subscription


def validate_event(event: SubscriptionEvent, catalog: Catalog, now: datetime) -> None:
    """Raises InvalidRequest naming every bad field of the event."""
    out: list[FieldViolation] = []
    check_id(event.event_id, "event_id", out)
    check_id(event.subscription_id, "subscription_id", out)
    if event.store is None:
        out.append(FieldViolation("store", "must be a known store"))
    if event.type is None:
        out.append(FieldViolation("event_type", "must be a known event type"))
    occurred = event.occurred_at
    if occurred is None:
        out.append(FieldViolation("occurred_at", "must be set"))
    elif occurred > now + MAX_CLOCK_SKEW:
        out.append(FieldViolation("occurred_at", "lies in the future"))
    if event.plan_id is not None:
        plan = catalog.plans.get(event.plan_id)
        if plan is None or not plan.premium:
            out.append(FieldViolation("plan_id", f"unknown premium plan '{event.plan_id}'"))
    if event.offer_id is not None and all(o.id != event.offer_id for o in catalog.offers):
        out.append(FieldViolation("offer_id", f"unknown offer '{event.offer_id}'"))
    if event.market is not None:
        check_market(event.market, "market", out)
    if event.type is not None:
        label = event.type.name
        if event.type in _NEEDS_PLAN and event.plan_id is None:
            out.append(FieldViolation("plan_id", f"required for {label}"))
        if event.type in _NEEDS_PERIOD_END:
            if event.current_period_end is None:
                out.append(FieldViolation("current_period_end", f"required for {label}"))
            elif occurred is not None and event.current_period_end <= occurred:
                out.append(FieldViolation("current_period_end", "must be after occurred_at"))
        if event.type is EventType.RENEWAL_FAILED:
            if event.grace_period_end is None:
                out.append(FieldViolation("grace_period_end", f"required for {label}"))
            elif occurred is not None and event.grace_period_end <= occurred:
                out.append(FieldViolation("grace_period_end", "must be after occurred_at"))
    if out:
        raise InvalidRequest(out)


def apply_event(account: AccountState, event: SubscriptionEvent, catalog: Catalog) -> EventResult:
    """The account after `event` (validated with validate_event first)."""
    assert event.type is not None and event.occurred_at is not None and event.store is not None
    occurred = event.occurred_at
    existing = next(
        (s for s in account.subscriptions if s.subscription_id == event.subscription_id), None
    )
    account = _record_facts(account, event, catalog)
    if (
        existing is not None
        and existing.last_event_at is not None
        and occurred < existing.last_event_at
    ):
        kept = dataclasses.replace(
            existing,
            started_at=min(existing.started_at, occurred),
            offer_id=existing.offer_id or event.offer_id,
        )
        return EventResult(_with_subscription(account, kept), EventOutcome.STALE, kept)

    current = existing.status if existing is not None else None
    if current not in ALLOWED_FROM[event.type]:
        state = current.name if current is not None else "unknown"
        raise PreconditionFailed(
            reason=PreconditionReason.INVALID_TRANSITION,
            subject=f"subscriptions/{event.subscription_id}",
            description=f"{event.type.name} is not valid for a subscription in state {state}",
        )
    plan_id = event.plan_id or (existing.plan_id if existing is not None else None)
    period_end = event.current_period_end or (
        existing.current_period_end if existing is not None else None
    )
    # ALLOWED_FROM admits an unknown subscription only for events that must carry both.
    assert plan_id is not None and period_end is not None
    status = _STATUS_AFTER.get(event.type) or (existing.status if existing else S.ACTIVE)
    auto_renew = _AUTO_RENEW_AFTER.get(event.type, existing.auto_renew if existing else True)
    updated = Subscription(
        subscription_id=event.subscription_id,
        plan_id=plan_id,
        status=status,
        store=event.store,
        started_at=min(existing.started_at, occurred) if existing else occurred,
        current_period_end=period_end,
        grace_period_end=(
            (event.grace_period_end or (existing.grace_period_end if existing else None))
            if status is S.IN_GRACE_PERIOD
            else None
        ),
        auto_renew=auto_renew,
        last_event_at=occurred,
        offer_id=(existing.offer_id if existing else None) or event.offer_id,
    )
    if event.market is not None:
        account = dataclasses.replace(account, home_market=event.market)
    return EventResult(_with_subscription(account, updated), EventOutcome.APPLIED, updated)


def _record_facts(
    account: AccountState, event: SubscriptionEvent, catalog: Catalog
) -> AccountState:
    """Facts an event establishes whether or not it is stale: an offer was redeemed (for
    the once-per-group rules), the user's market if none is known yet."""
    assert event.occurred_at is not None and event.store is not None
    if event.offer_id is not None and all(
        r.offer_id != event.offer_id for r in account.redemptions
    ):
        offer = next(o for o in catalog.offers if o.id == event.offer_id)
        redemption = Redemption(offer.id, offer.group, event.occurred_at, event.store)
        account = dataclasses.replace(account, redemptions=(*account.redemptions, redemption))
    if event.market is not None and account.home_market is None:
        account = dataclasses.replace(account, home_market=event.market)
    return account


def _with_subscription(account: AccountState, sub: Subscription) -> AccountState:
    """Replaces the subscription in place, or appends a new one."""
    subs = account.subscriptions
    ids = [s.subscription_id for s in subs]
    if sub.subscription_id in ids:
        index = ids.index(sub.subscription_id)
        subs = (*subs[:index], sub, *subs[index + 1 :])
    else:
        subs = (*subs, sub)
    return dataclasses.replace(account, subscriptions=subs)
