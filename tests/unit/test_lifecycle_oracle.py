"""The specification of a subscription's lifecycle: a reference model written from the
rules of the fold (service/domain/events.py docstring, docs/subscription-fold.md) without
calling the production code, and generated realistic lives (trials and their refunds,
renewals, failures with grace, account hold, pauses, plan changes, cancel and uncancel,
period extensions, refunds and reversals in any order, revocations) delivered in
permutations chosen by hypothesis, with redeliveries under the same and under new ids.

For each life and each delivery order: every event is accepted at once (none refused),
the end state equals the oracle's, the premium decision at sampled times equals the
oracle's, and compacting any part of the kept events changes nothing.

The default suite runs a short search (ORACLE_EXAMPLES, default 40);
tests/fuzz/test_fuzz_lifecycle.py runs it long under `make fuzz` (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.catalog import load_catalog
from service.domain.account import AccountState, Store, Subscription, UserState
from service.domain.decisions import decide_entitlement
from service.domain.events import (
    EventType,
    SubscriptionEvent,
    apply_event,
    compact,
    events_of,
    fold,
    subscription_of,
    validate_event,
)

CATALOG = load_catalog()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 3 * 365 * DAY  # after every generated life
PLANS = ("premium_individual", "premium_duo", "premium_family")
FEATURE = "offline_downloads"  # premium only

# -- the oracle: the rules, as a function of the set of events ----------------------------

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


# -- lives -------------------------------------------------------------------------------


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


EXAMPLES = int(os.environ.get("ORACLE_EXAMPLES", "40"))
ORACLE_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


LIVES_PER_EXAMPLE = 4


@ORACLE_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_every_delivery_order_matches_the_oracle(seed: int, data: st.DataObject) -> None:
    """A few lives per example (interesting end states are a few percent of lives), each
    delivered in a permutation hypothesis chooses, with redeliveries."""
    rng = random.Random(seed)
    for _ in range(LIVES_PER_EXAMPLE):
        life = build_life(rng)
        events = redelivered(life, rng)
        renamed = [e for e in events if e.event_id.endswith("-again")]
        check([*life.events, *renamed], data.draw(st.permutations(events)))


@ORACLE_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_a_snapshot_of_any_part_folds_like_the_part(seed: int, data: st.DataObject) -> None:
    """fold(snapshot(part) + rest) == fold(all), for any split of the kept events (the
    merge is commutative), and snapshots of snapshots too."""
    life = build_life(random.Random(seed))
    account = deliver(life.events)
    entries = events_of(account, "sub")
    chosen = data.draw(st.sets(st.sampled_from(range(len(entries)))))
    part = [e for i, e in enumerate(entries) if i in chosen]
    rest = [e for i, e in enumerate(entries) if i not in chosen]
    once = compact(part, NOW, keep=0) if part else []
    twice = compact([*once, *rest], NOW, keep=data.draw(st.integers(0, 3)))
    whole = fold(entries)
    assert subscription_of("sub", fold([*once, *rest])) == subscription_of("sub", whole)
    assert subscription_of("sub", fold(twice)) == subscription_of("sub", whole)
    assert fold([*once, *rest]) == whole


def test_the_oracle_decides_the_issue_lives() -> None:
    """Issue 20's lives and issue 12's first one, by hand, against the oracle."""
    refund_first = Life()
    refund_first.add(EventType.PURCHASED, T0, current_period_end=T0 + 30 * DAY)
    refund_first.add(EventType.REFUNDED, T0 + 27 * DAY, refunded_period_end=T0 + 30 * DAY)
    refund_first.add(EventType.CANCELED, T0 + 29 * DAY, current_period_end=T0 + 30 * DAY)
    state = oracle(refund_first.events)
    assert state is not None
    assert state.status == "refunded"
    extended = Life()  # refund, then an unpaid extension: still refunded
    extended.add(EventType.PURCHASED, T0, current_period_end=T0 + 30 * DAY)
    extended.add(EventType.REFUNDED, T0 + 5 * DAY, refunded_period_end=T0 + 30 * DAY)
    extended.add(EventType.PERIOD_EXTENDED, T0 + 9 * DAY, current_period_end=T0 + 57 * DAY)
    state = oracle(extended.events)
    assert state is not None
    assert state.status == "refunded"
    assert state.period_end == T0 + 57 * DAY
    trial_only = Life()  # a refunded trial: refunded
    trial_only.add(EventType.TRIAL_STARTED, T0, current_period_end=T0 + 30 * DAY)
    trial_only.add(EventType.REFUNDED, T0 + DAY, refunded_period_end=T0 + 30 * DAY)
    state = oracle(trial_only.events)
    assert state is not None
    assert state.status == "refunded"
    trial = Life()  # a refunded trial, canceled later: refunded
    trial.add(EventType.TRIAL_STARTED, T0, current_period_end=T0 + 30 * DAY)
    trial.add(EventType.REFUNDED, T0 + DAY / 2, refunded_period_end=T0 + 30 * DAY)
    trial.add(EventType.CANCELED, T0 + 2 * DAY, current_period_end=T0 + 30 * DAY)
    state = oracle(trial.events)
    assert state is not None
    assert state.status == "refunded"
    trial.add(EventType.REFUND_REVERSED, T0 + 3 * DAY, refunded_period_end=T0 + 30 * DAY)
    state = oracle(trial.events)
    assert state is not None
    assert state.status == "canceled"
    for life in (refund_first, extended, trial_only, trial):
        for seed in range(6):
            delivered = list(life.events)
            random.Random(seed).shuffle(delivered)
            check(life.events, delivered)


def test_the_generated_lives_cover_the_cases_of_the_issue() -> None:
    """The generator is worth its search: among 300 lives there are refunded trials,
    refunds of extended periods, same-instant reversals, plan changes, holds, pauses and
    revocations, and lives the oracle ends refunded."""
    seen: set[str] = set()
    for seed in range(300):
        life = build_life(random.Random(seed))
        types = {e.type for e in life.events}
        refunded = {e.refunded_period_end for e in life.events if e.type is EventType.REFUNDED}
        trial_end = life.events[0].current_period_end
        if life.events[0].type is EventType.TRIAL_STARTED and trial_end in refunded:
            seen.add("trial refund")
        extended = {
            e.current_period_end for e in life.events if e.type is EventType.PERIOD_EXTENDED
        }
        if extended & refunded:
            seen.add("extended period refunded")
        reversals = [e for e in life.events if e.type is EventType.REFUND_REVERSED]
        refunds = {(e.refunded_period_end, e.occurred_at) for e in life.events
                   if e.type is EventType.REFUNDED}  # fmt: skip
        if any((r.refunded_period_end, r.occurred_at) in refunds for r in reversals):
            seen.add("same-instant reversal")
        for kind in (EventType.PLAN_CHANGED, EventType.ON_HOLD, EventType.GRACE_EXPIRED,
                     EventType.PAUSED, EventType.REVOKED):  # fmt: skip
            if kind in types:
                seen.add(kind.value)
        state = oracle(life.events)
        if state is not None and state.status == "refunded":
            seen.add("ends refunded")
    assert seen >= {
        "trial refund", "extended period refunded", "same-instant reversal", "plan_changed",
        "grace_expired", "paused", "revoked", "ends refunded",
    }, seen  # fmt: skip
