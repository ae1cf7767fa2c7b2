"""The lifecycle oracle: a reference model of a subscription's fold written from its rules
without calling the production code, generated realistic lives, and their deliveries in
any order with redeliveries (the specification is tests/unit/test_lifecycle_oracle.py;
the contract and fuzz suites use it too)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from service.catalog import load_catalog
from service.domain.account import AccountState, Store, Subscription, UserState
from service.domain.decisions import decide_entitlement
from service.domain.events import (
    EventType,
    SubscriptionEvent,
    apply_event,
    events_of,
    validate_event,
)

CATALOG = load_catalog()


T0 = datetime(2025, 1, 1, tzinfo=UTC)


DAY = timedelta(days=1)


NOW = T0 + 3 * 365 * DAY  # after every generated life


PLANS = ("premium_individual", "premium_duo", "premium_family")


FEATURE = "offline_downloads"  # premium only


# type name -> (status, auto_renew) of status events (rule 1).
ORACLE_STATUS = {
    "trial_started": ("trialing", True),
    "purchased": ("active", True),
    "renewed": ("active", True),
    "renewal_failed": ("in_grace_period", True),
    "grace_expired": ("on_hold", True),
    "on_hold": ("on_hold", True),
    "paused": ("paused", True),
    "resumed": ("active", True),
    "canceled": ("canceled", False),
    "uncanceled": ("active", True),
    "expired": ("expired", False),
    "plan_changed": ("active", True),
}


# Ties at one instant: a later name wins (the status that ends more; reversal after refund).
ORACLE_TIE = [
    "trial_started", "purchased", "renewed", "resumed", "uncanceled", "plan_changed",
    "period_extended", "canceled", "renewal_failed", "paused", "grace_expired", "on_hold",
    "expired", "refunded", "refund_reversed", "revoked",
]  # fmt: skip


ORACLE_PAID = {"purchased", "renewed", "resumed", "plan_changed"}


ORACLE_REFUNDABLE = {"trialing", "active", "canceled", "in_grace_period"}


def order(e: SubscriptionEvent) -> tuple[datetime, int, str]:
    assert e.occurred_at is not None
    assert e.type is not None
    return (e.occurred_at, ORACLE_TIE.index(e.type.value), e.event_id)


@dataclass(frozen=True)
class OracleState:
    status: str
    auto_renew: bool
    plan: str
    period_end: datetime
    grace_end: datetime | None

    def entitled(self, now: datetime) -> bool:
        if self.status in ("trialing", "active", "canceled"):
            return now < self.period_end
        if self.status == "in_grace_period":
            return self.grace_end is not None and now < self.grace_end
        return False


def oracle(events: list[SubscriptionEvent]) -> OracleState | None:
    """None while the subscription is unknown (no plan, period end or status yet)."""
    ends = [e.current_period_end for e in events if e.current_period_end is not None]
    named = [e for e in events if e.plan_id is not None]
    status_events = [e for e in events if e.type is not None and e.type.value in ORACLE_STATUS]
    revocations = [e for e in events if e.type is EventType.REVOKED]
    if not ends or not named or not (status_events or revocations):
        return None
    period_end = max(ends)
    by_status = [e for e in named if e in status_events or e in revocations]
    plan = max(by_status or named, key=order).plan_id
    assert plan is not None
    if revocations:
        return OracleState("revoked", False, plan, period_end, None)
    winner = max(status_events, key=order)
    assert winner.type is not None
    status, auto_renew = ORACLE_STATUS[winner.type.value]
    grace = winner.grace_period_end if status == "in_grace_period" else None
    paid = [
        e.current_period_end
        for e in events
        if e.type is not None and e.type.value in ORACLE_PAID and e.current_period_end
    ]
    refunded_ends = {e.refunded_period_end for e in events if e.type is EventType.REFUNDED}
    in_force = False
    for end in refunded_ends:
        line = [
            e
            for e in events
            if e.refunded_period_end == end
            and e.type in (EventType.REFUNDED, EventType.REFUND_REVERSED)
        ]
        last = max(line, key=order)
        carried = end in ends
        past = any(p is not None and end is not None and p > end for p in paid)
        if last.type is EventType.REFUNDED and carried and not past:
            in_force = True
    if in_force and status in ORACLE_REFUNDABLE:
        status = "refunded"
    return OracleState(status, auto_renew, plan, period_end, grace)


@dataclass
class Life:
    events: list[SubscriptionEvent] = field(default_factory=list)
    # (start, end) of each period a payment or a trial started.
    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    plan: str = PLANS[0]

    def add(self, type_: EventType, at: datetime, **extra: object) -> None:
        self.events.append(
            SubscriptionEvent(
                event_id=f"e{len(self.events)}",
                subscription_id="sub",
                store=Store.GOOGLE_PLAY,
                type=type_,
                occurred_at=at,
                plan_id=self.plan,
                **extra,  # type: ignore[arg-type]
            )
        )


def build_life(rng: random.Random) -> Life:
    """A realistic life: a trial or a purchase, then renewals, failures with grace,
    account hold and recovery, pauses, cancel and uncancel, plan changes, period
    extensions; refunds of any period (trial periods and extended ones included), some
    reversed (the reversal sometimes stamped with the same instant); maybe a revocation.
    Every notification names the plan and the current period end, as stores' do."""
    life = Life(plan=rng.choice(PLANS))
    start, end = T0, T0 + 30 * DAY
    if rng.random() < 0.5:
        life.add(EventType.TRIAL_STARTED, start, current_period_end=end)
    else:
        life.add(EventType.PURCHASED, start, current_period_end=end)
    life.periods.append((start, end))
    for _ in range(rng.choice([0, 1, 1, 2, 3, 4, 5, 7])):
        step = _STEPS[rng.choice(["renew", "renew", "fail", "pause", "cancel", "extend", "plan"])]
        start, end, ended = step(life, rng, start, end)
        if ended:
            break
    for index, (paid_from, paid_until) in enumerate(life.periods):
        # The last period is refunded more often: its refund is the one still in force.
        if rng.random() < (0.6 if index == len(life.periods) - 1 else 0.3):
            at = paid_from + timedelta(hours=rng.randint(1, 20 * 24), minutes=7)
            life.add(EventType.REFUNDED, at, refunded_period_end=paid_until)
            if rng.random() < 0.4:
                gap = rng.choice([timedelta(0), timedelta(days=3, minutes=1)])
                life.add(EventType.REFUND_REVERSED, at + gap, refunded_period_end=paid_until)
    last = max(e.occurred_at for e in life.events if e.occurred_at is not None)
    if rng.random() < 0.15:
        life.add(EventType.REVOKED, last + timedelta(hours=1))
        if rng.random() < 0.5:
            life.add(EventType.CANCELED, last + timedelta(hours=2), current_period_end=end)
    return life


# One step of a life: (life, rng, current period start, end) -> the new period and whether
# the subscription ended. Each draws from `rng` in the order the life happens.
Step = Callable[[Life, random.Random, datetime, datetime], tuple[datetime, datetime, bool]]


def _renew(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    start, end = end, end + 30 * DAY
    life.add(EventType.RENEWED, start, current_period_end=end)
    life.periods.append((start, end))
    return start, end, False


def _fail(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    grace = end + 7 * DAY
    life.add(EventType.RENEWAL_FAILED, end, current_period_end=end, grace_period_end=grace)
    if rng.random() < 0.5:  # recovered in grace
        start, end = end + 2 * DAY, end + 32 * DAY
        life.add(EventType.RENEWED, start, current_period_end=end)
        life.periods.append((start, end))
        return start, end, False
    life.add(EventType.GRACE_EXPIRED, grace, current_period_end=end)
    if rng.random() < 0.3:  # the user gives up during account hold
        life.add(EventType.CANCELED, grace + DAY, current_period_end=end)
        if rng.random() < 0.5:
            life.add(EventType.EXPIRED, grace + 20 * DAY, current_period_end=end)
            return start, end, True
        return start, end, False
    if rng.random() < 0.3:
        life.add(EventType.EXPIRED, grace + 20 * DAY, current_period_end=end)
        return start, end, True
    start, end = grace + 5 * DAY, grace + 35 * DAY
    life.add(EventType.RESUMED, start, current_period_end=end)
    life.periods.append((start, end))
    return start, end, False


def _pause(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    life.add(EventType.PAUSED, end, current_period_end=end)
    start, end = end + 30 * DAY, end + 60 * DAY
    life.add(EventType.RESUMED, start, current_period_end=end)
    life.periods.append((start, end))
    return start, end, False


def _cancel(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    at = end - 10 * DAY + rng.randint(0, 5) * DAY
    life.add(EventType.CANCELED, at, current_period_end=end)
    if rng.random() < 0.5:
        life.add(EventType.UNCANCELED, at + DAY, current_period_end=end)
        return start, end, False
    life.add(EventType.EXPIRED, end + timedelta(minutes=1), current_period_end=end)
    return start, end, True


def _change_plan(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    life.plan = rng.choice([p for p in PLANS if p != life.plan])
    at = start + rng.randint(1, 20) * DAY
    if rng.random() < 0.5:  # an upgrade, charged at once for a new period
        start, end = at, at + 30 * DAY
        life.periods.append((start, end))
    life.add(EventType.PLAN_CHANGED, at, current_period_end=end)
    return start, end, False


def _extend(
    life: Life, rng: random.Random, start: datetime, end: datetime
) -> tuple[datetime, datetime, bool]:
    at = end - DAY
    end = end + 10 * DAY
    life.add(EventType.PERIOD_EXTENDED, at, current_period_end=end)
    # The extended transaction's end is what a refund then names.
    life.periods.append((start, end))
    return start, end, False


_STEPS: dict[str, Step] = {
    "renew": _renew,
    "fail": _fail,
    "pause": _pause,
    "cancel": _cancel,
    "plan": _change_plan,
    "extend": _extend,
}


def deliver(
    events: list[SubscriptionEvent], compact_above: int = 64, keep_recent: int = 16
) -> AccountState:
    """Delivers like a store: in the given order; an event id seen before is answered
    DUPLICATE by the repository (not applied). Each event must be accepted at once."""
    seen: set[str] = set()
    account = AccountState.new("u")
    for ev in events:
        if ev.event_id in seen:
            continue
        validate_event(ev, CATALOG, NOW)
        account = apply_event(
            account, ev, CATALOG, T0, compact_above=compact_above, keep_recent=keep_recent
        ).account
        seen.add(ev.event_id)
    return account


def redelivered(life: Life, rng: random.Random) -> list[SubscriptionEvent]:
    """The life's events, some delivered twice, some again under a new id (the oracle
    must not care: the same notification under another id adds nothing)."""
    extra = [rng.choice(life.events) for _ in range(rng.randint(0, 3))]
    renamed = [
        dataclasses.replace(e, event_id=f"{e.event_id}-again")
        for e in rng.sample(life.events, k=min(2, len(life.events)))
        if rng.random() < 0.5
    ]
    return [*life.events, *extra, *renamed]


def agrees(
    sub: Subscription | None, expected: OracleState | None, events: list[SubscriptionEvent]
) -> None:
    if expected is None:
        assert sub is None, (sub, [(e.type, e.occurred_at) for e in events])
        return
    assert sub is not None, (expected, [(e.type, e.occurred_at) for e in events])
    assert sub.status.value == expected.status, (sub, expected)
    assert sub.current_period_end == expected.period_end
    assert sub.auto_renew == expected.auto_renew
    assert sub.plan_id == expected.plan
    assert sub.started_at == min(e.occurred_at for e in events if e.occurred_at is not None)
    if expected.status == "in_grace_period":
        assert sub.grace_period_end == expected.grace_end


def check(life_events: list[SubscriptionEvent], delivered: list[SubscriptionEvent]) -> None:
    """The state after every delivery equals the oracle of the events delivered so far
    (so an event that needs one not seen yet waits for it), and the end state's
    decisions equal the oracle's."""
    unique = list({e.event_id: e for e in life_events}.values())
    account = AccountState.new("u")
    so_far: dict[str, SubscriptionEvent] = {}
    for ev in delivered:
        if ev.event_id in so_far:
            continue  # the repository answers DUPLICATE
        validate_event(ev, CATALOG, NOW)
        account = apply_event(account, ev, CATALOG, T0).account
        so_far[ev.event_id] = ev
        seen = list(so_far.values())
        agrees(next(iter(account.subscriptions), None), oracle(seen), seen)
    assert set(so_far) == {e.event_id for e in unique}
    expected = oracle(unique)
    if expected is None:
        assert account.subscriptions == ()
        return
    (sub,) = account.subscriptions
    first = min(e.occurred_at for e in unique if e.occurred_at is not None)
    for now in [first + timedelta(days=d) for d in range(0, 900, 9)]:
        decision = decide_entitlement(
            CATALOG, UserState(AccountState("u", subscriptions=(sub,))), FEATURE, now
        )
        assert decision.granted == expected.entitled(now), (now, sub, expected)
    # Compaction at any size changes nothing.
    compacted = deliver(delivered, compact_above=4, keep_recent=2)
    assert compacted.subscriptions == account.subscriptions
    assert len(events_of(compacted, "sub")) <= 5


LIVES_PER_EXAMPLE = 4
