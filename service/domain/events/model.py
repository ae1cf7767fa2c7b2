"""The vocabulary of subscription events: types, outcomes, the event itself, its validation and
its place in the fold's total order (`event_key`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.domain.account import (
    AccountState,
    Store,
    Subscription,
)
from service.domain.account import SubscriptionStatus as S
from service.domain.catalog import Catalog
from service.domain.errors import FieldViolation, InvalidRequest
from service.domain.validation import check_id, check_market

# Events stamped further ahead than this of the service's clock are refused: one bogus
# future event would make every real event of the subscription look stale.


MAX_CLOCK_SKEW = timedelta(hours=1)

# A subscription with more kept events than this is compacted on its next write: all but
# its newest KEEP_RECENT events become one snapshot (docs/SUBSCRIPTION_FOLD.md).
COMPACT_ABOVE = 64
KEEP_RECENT = 16

SNAPSHOT_KIND = "snapshot"


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
    """An event's effect in the fold of its subscription's events."""

    # It decides part of the subscription (status, plan, period end, a refund in force...).
    APPLIED = "applied"
    # Kept; a newer event of the same kind decides instead (an older status event, an
    # extension to an earlier end, a refund of the period refunded again later).
    STALE = "stale"
    # Kept; it can never take effect (after a revocation, a refund of a past period, a
    # refund reversed, a reversal of a refund of a past period).
    SUPERSEDED = "superseded"
    # Kept; it needs an event not seen yet (docs: rule 8) and takes effect when it arrives.
    PENDING = "pending"
    # The event id was recorded before: the first answer, replayed (never the result of
    # apply_event: the write use case answers it for a replay).
    DUPLICATE = "duplicate"


# The status and auto-renew setting each status event leads to, whatever came before.
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

# The fold order of types at the same instant, first to last: a later type wins a tie.
# Status events rank by the status they lead to, the one that ends more last (trialing,
# active, canceled, grace, paused, on hold, expired); a reversal follows its refund.
TYPE_ORDER: tuple[EventType, ...] = (
    EventType.TRIAL_STARTED,
    EventType.PURCHASED,
    EventType.RENEWED,
    EventType.RESUMED,
    EventType.UNCANCELED,
    EventType.PLAN_CHANGED,
    EventType.PERIOD_EXTENDED,
    EventType.CANCELED,
    EventType.RENEWAL_FAILED,
    EventType.PAUSED,
    EventType.GRACE_EXPIRED,
    EventType.ON_HOLD,
    EventType.EXPIRED,
    EventType.REFUNDED,
    EventType.REFUND_REVERSED,
    EventType.REVOKED,
)
_TYPE_RANK = {t: i for i, t in enumerate(TYPE_ORDER)}
_KIND_RANK = {t.value: i for i, t in enumerate(TYPE_ORDER)}

# Events that pay for the period they carry (rule 4).
PAID = frozenset(
    {EventType.PURCHASED, EventType.RENEWED, EventType.RESUMED, EventType.PLAN_CHANGED}
)

# The statuses whose access a refund in force takes away (rules 4, 6).
REFUNDABLE = frozenset({S.TRIALING, S.ACTIVE, S.CANCELED, S.IN_GRACE_PERIOD})

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


# (occurred_at, type rank, event id): the fold's total order. A snapshot's key is the
# largest key it compacted.
Key = tuple[datetime, int, str]


@dataclass(frozen=True, slots=True)
class EventEffect:
    outcome: EventOutcome
    why: str  # one line for people (GetUserHistory), without personal data


@dataclass(frozen=True, slots=True)
class EventResult:
    account: AccountState
    outcome: EventOutcome
    # None while the subscription is not known yet (every event of it PENDING).
    subscription: Subscription | None
    effect: EventEffect


# -- validation ------------------------------------------------------------------------------


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


def event_key(event: SubscriptionEvent) -> Key:
    assert event.occurred_at is not None
    assert event.type is not None
    return (event.occurred_at, _TYPE_RANK[event.type], event.event_id)
