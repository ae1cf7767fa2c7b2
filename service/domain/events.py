"""Subscription lifecycle events from the stores and the web checkout.

Store events arrive late, twice and out of order. The ordering model makes the state of a
subscription a function of the *set* of its events, never of their delivery order
(docs/WRITE_PATH.md has the same table):

- facts (every event): `started_at` is the earliest occurrence, `current_period_end`
  the latest period end any event carried, `offer_id` the least offer id carried; the
  offer is recorded as redeemed.
- snapshots (the types of `SNAPSHOT`): the newest (by `occurred_at`, ties by `_RANK`)
  sets status and auto-renew from its type whatever the current status, the grace end
  when it is RENEWAL_FAILED, the plan when it names one; an older one is STALE.
- PERIOD_EXTENDED only moves the period end later.
- REFUNDED names the refunded period by its end. Refunding the current period of an
  ACTIVE, CANCELED or IN_GRACE_PERIOD subscription makes it REFUNDED (no access) until
  a later period is paid for or the refund is reversed; refunding a past period, or a
  period without access, is SUPERSEDED.
- REFUND_REVERSED lifts the refund of the current period; otherwise SUPERSEDED.
- REVOKED is absorbing: REVOKED from its occurrence (`last_event_at`) whatever arrives
  before or after it; later-delivered events are STALE (occurred before) or SUPERSEDED
  (after) and only add facts.

FAILED_PRECONDITION is answered only where redelivery helps ("not yet"): an event for an
unknown subscription without plan and period end (SUBSCRIPTION_NOT_YET_KNOWN), a refund
or reversal of a period later than any recorded (PERIOD_NOT_YET_KNOWN), a reversal of the
current period's refund before that refund (REFUND_NOT_YET_RECORDED).

Order independence holds when every snapshot names the plan (store notifications always
carry the product) and each period is refunded and reversed at most once; the oracle in
tests/unit/test_lifecycle_oracle.py checks it over generated lives. Duplicates (the same
event id) are caught before this module, by the store's idempotency keys.
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
    # A per-transaction refund: `refunded_period_end` names the period it refunds.
    REFUNDED = "refunded"
    # The store reversed the refund of the period `refunded_period_end`.
    REFUND_REVERSED = "refund_reversed"
    # The period end moved later without a payment (Play deferral, App Store extension).
    PERIOD_EXTENDED = "period_extended"


class EventOutcome(enum.Enum):
    APPLIED = "applied"
    # Older than the newest snapshot the subscription reflects: recorded, facts kept.
    STALE = "stale"
    # Can never apply (after a revocation, a refund of a past period or of a period
    # without access, a reversal without a refund): recorded, facts kept.
    SUPERSEDED = "superseded"
    # The event id was recorded before: the first answer, replayed (never the result of
    # apply_event: the write use case answers it for a replay).
    DUPLICATE = "duplicate"


# The status and auto-renew setting each snapshot event leads to, whatever came before.
SNAPSHOT: dict[EventType, tuple[S, bool]] = {
    EventType.TRIAL_STARTED: (S.TRIALING, True),
    EventType.PURCHASED: (S.ACTIVE, True),
    EventType.RENEWED: (S.ACTIVE, True),
    EventType.RENEWAL_FAILED: (S.IN_GRACE_PERIOD, True),
    EventType.GRACE_EXPIRED: (S.ON_HOLD, True),
    EventType.ON_HOLD: (S.ON_HOLD, True),
    EventType.PAUSED: (S.PAUSED, True),
    EventType.RESUMED: (S.ACTIVE, True),
    EventType.CANCELED: (S.CANCELED, False),
    EventType.UNCANCELED: (S.ACTIVE, True),
    EventType.EXPIRED: (S.EXPIRED, False),
    EventType.PLAN_CHANGED: (S.ACTIVE, True),
}

# Snapshots at the same instant: the higher rank wins (the one that ends more).
_RANK: dict[S, int] = {
    S.TRIALING: 0,
    S.ACTIVE: 1,
    S.CANCELED: 2,
    S.IN_GRACE_PERIOD: 3,
    S.PAUSED: 4,
    S.ON_HOLD: 5,
    S.EXPIRED: 6,
}

# The statuses whose access a refund of the current period takes away.
REFUNDABLE = frozenset({S.ACTIVE, S.CANCELED, S.IN_GRACE_PERIOD})

_NEEDS_PLAN = frozenset({EventType.PURCHASED, EventType.TRIAL_STARTED, EventType.PLAN_CHANGED})
_NEEDS_PERIOD_END = frozenset(
    {
        EventType.PURCHASED,
        EventType.TRIAL_STARTED,
        EventType.RENEWED,
        EventType.RESUMED,
        EventType.PERIOD_EXTENDED,
    }
)
_NEEDS_REFUNDED_PERIOD = frozenset({EventType.REFUNDED, EventType.REFUND_REVERSED})
# Events that say nothing of the status: they cannot be a subscription's first.
_NOT_A_START = _NEEDS_REFUNDED_PERIOD | {EventType.PERIOD_EXTENDED}


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
    # REFUNDED and REFUND_REVERSED: the end of the period the refunded transaction paid for.
    refunded_period_end: datetime | None = None


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
    out += _catalog_violations(event, catalog)
    if event.type is not None:
        out += _type_violations(event, event.type, occurred)
    if out:
        raise InvalidRequest(out)


def _catalog_violations(event: SubscriptionEvent, catalog: Catalog) -> list[FieldViolation]:
    """The plan, offer and market the event names exist."""
    out: list[FieldViolation] = []
    if event.plan_id is not None:
        plan = catalog.plans.get(event.plan_id)
        if plan is None or not plan.premium:
            out.append(FieldViolation("plan_id", f"unknown premium plan '{event.plan_id}'"))
    if event.offer_id is not None and all(o.id != event.offer_id for o in catalog.offers):
        out.append(FieldViolation("offer_id", f"unknown offer '{event.offer_id}'"))
    if event.market is not None:
        check_market(event.market, "market", out)
    return out


def _type_violations(
    event: SubscriptionEvent, kind: EventType, occurred: datetime | None
) -> list[FieldViolation]:
    """The fields the event's type needs: its plan, its period end or grace end (after the
    event), the end of the refunded period."""
    out: list[FieldViolation] = []
    label = kind.name
    if kind in _NEEDS_PLAN and event.plan_id is None:
        out.append(FieldViolation("plan_id", f"required for {label}"))
    if kind in _NEEDS_PERIOD_END:
        out += _end_violations("current_period_end", event.current_period_end, occurred, label)
    if kind is EventType.RENEWAL_FAILED:
        out += _end_violations("grace_period_end", event.grace_period_end, occurred, label)
    if kind in _NEEDS_REFUNDED_PERIOD and event.refunded_period_end is None:
        out.append(FieldViolation("refunded_period_end", f"required for {label}"))
    return out


def _end_violations(
    name: str, end: datetime | None, occurred: datetime | None, label: str
) -> list[FieldViolation]:
    """An end the event's type needs: set, and after the event."""
    if end is None:
        return [FieldViolation(name, f"required for {label}")]
    if occurred is not None and end <= occurred:
        return [FieldViolation(name, "must be after occurred_at")]
    return []


def apply_event(account: AccountState, event: SubscriptionEvent, catalog: Catalog) -> EventResult:
    """The account after `event` (validated with validate_event first)."""
    assert event.type is not None and event.occurred_at is not None and event.store is not None
    existing = next(
        (s for s in account.subscriptions if s.subscription_id == event.subscription_id), None
    )
    if existing is None:
        updated = _first(event)
        outcome = EventOutcome.APPLIED
    else:
        updated, outcome = _next(existing, event)
    account = _record_facts(account, event, catalog)
    if outcome is EventOutcome.APPLIED and event.market is not None:
        account = dataclasses.replace(account, home_market=event.market)
    return EventResult(_with_subscription(account, updated), outcome, updated)


def _not_yet(event: SubscriptionEvent, reason: PreconditionReason, why: str) -> PreconditionFailed:
    return PreconditionFailed(
        reason=reason,
        subject=f"subscriptions/{event.subscription_id}",
        description=f"{event.type.name if event.type else 'event'} {why}; redeliver later",
    )


def _first(event: SubscriptionEvent) -> Subscription:
    """The subscription an event of an unknown subscription starts."""
    assert event.type is not None and event.occurred_at is not None and event.store is not None
    plan, period_end = event.plan_id, event.current_period_end
    if plan is None or period_end is None or event.type in _NOT_A_START:
        raise _not_yet(
            event,
            PreconditionReason.SUBSCRIPTION_NOT_YET_KNOWN,
            "names a subscription without a recorded start",
        )
    if event.type is EventType.REVOKED:
        status, auto_renew = S.REVOKED, False
    else:
        status, auto_renew = SNAPSHOT[event.type]
    return Subscription(
        subscription_id=event.subscription_id,
        plan_id=plan,
        status=status,
        store=event.store,
        started_at=event.occurred_at,
        current_period_end=period_end,
        grace_period_end=event.grace_period_end if status is S.IN_GRACE_PERIOD else None,
        auto_renew=auto_renew,
        last_event_at=event.occurred_at,
        offer_id=event.offer_id,
    )


def underlying_status(sub: Subscription) -> S:
    """The status a subscription has apart from a refund of its current period. A
    refund overlays only REFUNDABLE statuses, which its other fields tell apart."""
    if sub.status is not S.REFUNDED:
        return sub.status
    if sub.grace_period_end is not None:
        return S.IN_GRACE_PERIOD
    return S.ACTIVE if sub.auto_renew else S.CANCELED


def _newer(event: SubscriptionEvent, status: S, sub: Subscription) -> bool:
    """Whether a snapshot event leading to `status` wins over the newest one `sub`
    reflects."""
    assert event.occurred_at is not None
    last = sub.last_event_at
    if last is None or event.occurred_at > last:
        return True
    if event.occurred_at < last:
        return False
    return _RANK[status] > _RANK[underlying_status(sub)]


def _next(existing: Subscription, event: SubscriptionEvent) -> tuple[Subscription, EventOutcome]:
    """The subscription after `event` and what the event did."""
    assert event.type is not None and event.occurred_at is not None
    occurred, kind = event.occurred_at, event.type
    # Facts every event adds, whatever else it does.
    period_end = existing.current_period_end
    if event.current_period_end is not None:
        period_end = max(period_end, event.current_period_end)
    facts = dataclasses.replace(
        existing,
        started_at=min(existing.started_at, occurred),
        current_period_end=period_end,
        offer_id=_least(existing.offer_id, event.offer_id),
    )
    if existing.status is S.REVOKED:
        before = existing.last_event_at is not None and occurred < existing.last_event_at
        if kind is EventType.REVOKED and before:  # an earlier revocation: it counts
            earlier = dataclasses.replace(
                facts, last_event_at=occurred, plan_id=event.plan_id or facts.plan_id
            )
            return earlier, EventOutcome.APPLIED
        return facts, EventOutcome.STALE if before else EventOutcome.SUPERSEDED
    if kind is EventType.REVOKED:
        revoked = dataclasses.replace(
            facts,
            status=S.REVOKED,
            auto_renew=False,
            grace_period_end=None,
            last_event_at=occurred,
            plan_id=event.plan_id or facts.plan_id,
        )
        return revoked, EventOutcome.APPLIED

    underlying = underlying_status(existing)
    # The refund of the current period holds while no later period is known.
    refunded = existing.status is S.REFUNDED and period_end == existing.current_period_end
    outcome = EventOutcome.APPLIED
    base = facts
    if kind in SNAPSHOT:
        status, auto_renew = SNAPSHOT[kind]
        if _newer(event, status, existing):
            underlying = status
            base = dataclasses.replace(
                facts,
                auto_renew=auto_renew,
                grace_period_end=event.grace_period_end if status is S.IN_GRACE_PERIOD else None,
                last_event_at=occurred,
                plan_id=event.plan_id or facts.plan_id,
            )
        else:
            outcome = EventOutcome.STALE
    elif kind is EventType.PERIOD_EXTENDED:
        if period_end == existing.current_period_end:
            outcome = EventOutcome.STALE
    else:
        assert event.refunded_period_end is not None
        refunded_end = event.refunded_period_end
        if refunded_end > period_end:
            raise _not_yet(
                event, PreconditionReason.PERIOD_NOT_YET_KNOWN, "names an unrecorded period"
            )
        current = refunded_end == period_end
        if kind is EventType.REFUNDED:
            if current and underlying in REFUNDABLE and not refunded:
                refunded = True
            else:
                outcome = EventOutcome.SUPERSEDED
        elif current and refunded:
            refunded = False
        elif current and underlying in REFUNDABLE:
            raise _not_yet(
                event,
                PreconditionReason.REFUND_NOT_YET_RECORDED,
                "reverses a refund not recorded yet",
            )
        else:
            outcome = EventOutcome.SUPERSEDED
    status = S.REFUNDED if refunded and underlying in REFUNDABLE else underlying
    return dataclasses.replace(base, status=status), outcome


def _least(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def _record_facts(
    account: AccountState, event: SubscriptionEvent, catalog: Catalog
) -> AccountState:
    """Facts an event establishes whatever it does to the subscription: an offer was
    redeemed (for the once-per-group rules), the user's market if none is known yet."""
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
