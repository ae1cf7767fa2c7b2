"""Subscription events: transitions, staleness, and order independence."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from service.catalog import load_catalog
from service.domain.account import AccountState, Store, SubscriptionStatus, UserState
from service.domain.decisions import decide_entitlement
from service.domain.errors import InvalidRequest, PreconditionFailed, PreconditionReason
from service.domain.events import (
    EventOutcome,
    EventType,
    SubscriptionEvent,
    apply_event,
    validate_event,
)

CATALOG = load_catalog()
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SUB = "sub-1"


def event(
    event_id: str,
    type_: EventType,
    at: datetime,
    plan: str | None = "premium_individual",
    period_end: datetime | None = None,
    **extra: object,
) -> SubscriptionEvent:
    return SubscriptionEvent(
        event_id=event_id,
        subscription_id=SUB,
        store=Store.APP_STORE,
        type=type_,
        occurred_at=at,
        plan_id=plan,
        current_period_end=period_end,
        **extra,  # type: ignore[arg-type]
    )


# A realistic life of one subscription: every store notification carries the plan and the
# current period end, as App Store and Play notifications do.
LIFE = [
    event(
        "e1", EventType.TRIAL_STARTED, T0, period_end=T0 + 30 * DAY,
        offer_id="premium-individual-trial-1m", market="SE",
    ),
    event("e2", EventType.RENEWED, T0 + 30 * DAY, period_end=T0 + 60 * DAY),
    event(
        "e3", EventType.RENEWAL_FAILED, T0 + 60 * DAY, period_end=T0 + 60 * DAY,
        grace_period_end=T0 + 67 * DAY,
    ),
    event("e4", EventType.RENEWED, T0 + 62 * DAY, period_end=T0 + 92 * DAY),
    event("e5", EventType.PLAN_CHANGED, T0 + 70 * DAY, "premium_family", T0 + 92 * DAY),
    event("e6", EventType.CANCELED, T0 + 80 * DAY, "premium_family", T0 + 92 * DAY),
]  # fmt: skip


def deliver(events: list[SubscriptionEvent]) -> AccountState:
    """Delivers events in the given order the way stores do: a rejected event is
    delivered again later, until every event is accepted."""
    account = AccountState.new("u1")
    pending = list(events)
    while pending:
        accepted = []
        for ev in pending:
            validate_event(ev, CATALOG, T0 + 365 * DAY)
            try:
                account = apply_event(account, ev, CATALOG).account
            except PreconditionFailed:
                continue
            accepted.append(ev)
        assert accepted, f"no progress with {[e.event_id for e in pending]}"
        pending = [ev for ev in pending if ev not in accepted]
    return account


def test_in_order_life_ends_canceled_on_the_new_plan() -> None:
    account = deliver(LIFE)
    (sub,) = account.subscriptions
    assert sub.status is SubscriptionStatus.CANCELED
    assert sub.plan_id == "premium_family"
    assert sub.current_period_end == T0 + 92 * DAY
    assert sub.auto_renew is False
    assert sub.started_at == T0
    assert sub.offer_id == "premium-individual-trial-1m"
    assert [r.offer_group for r in account.redemptions] == ["trial"]
    assert account.home_market == "SE"


def test_every_permutation_ends_in_the_same_state() -> None:
    expected = deliver(LIFE)
    for order in itertools.permutations(LIFE):
        account = deliver(list(order))
        assert account.subscriptions == expected.subscriptions, [e.event_id for e in order]
        assert {r.offer_id for r in account.redemptions} == {"premium-individual-trial-1m"}
        assert account.home_market == "SE"


def test_late_renewal_failure_does_not_take_premium_away() -> None:
    account = deliver([*LIFE[:2], LIFE[3]])  # renewed at day 62, active until day 92
    late = apply_event(account, LIFE[2], CATALOG)  # the failure of day 60 arrives now
    assert late.outcome is EventOutcome.STALE
    assert late.account.subscriptions == account.subscriptions
    now = T0 + 65 * DAY
    decision = decide_entitlement(CATALOG, UserState(late.account), "offline_downloads", now)
    assert decision.granted


@pytest.mark.parametrize(
    ("history", "bad", "state"),
    [
        ([], event("x", EventType.RENEWED, T0, period_end=T0 + DAY), "unknown"),
        ([LIFE[0]], event("x", EventType.UNCANCELED, T0 + DAY), "TRIALING"),
        ([LIFE[0]], event("x", EventType.GRACE_EXPIRED, T0 + DAY), "TRIALING"),
        (
            [LIFE[0], event("r", EventType.REVOKED, T0 + DAY)],
            event("x", EventType.RENEWED, T0 + 2 * DAY, period_end=T0 + 40 * DAY),
            "REVOKED",
        ),
    ],
)
def test_invalid_transitions_are_rejected_and_change_nothing(
    history: list[SubscriptionEvent], bad: SubscriptionEvent, state: str
) -> None:
    account = deliver(history)
    with pytest.raises(PreconditionFailed) as raised:
        apply_event(account, bad, CATALOG)
    assert raised.value.reason is PreconditionReason.INVALID_TRANSITION
    assert state in raised.value.description
    assert raised.value.subject == f"subscriptions/{SUB}"


@pytest.mark.parametrize(
    ("bad", "fields"),
    [
        (event("", EventType.PURCHASED, T0, period_end=T0 + DAY), ["event_id"]),
        (event("x", EventType.PURCHASED, T0, plan="premium_gold", period_end=T0 + DAY),
         ["plan_id"]),
        (event("x", EventType.PURCHASED, T0, plan="free", period_end=T0 + DAY), ["plan_id"]),
        (event("x", EventType.PURCHASED, T0, plan=None), ["plan_id", "current_period_end"]),
        (event("x", EventType.RENEWED, T0, period_end=T0 - DAY), ["current_period_end"]),
        (event("x", EventType.RENEWAL_FAILED, T0), ["grace_period_end"]),
        (event("x", EventType.PURCHASED, T0 + 30 * DAY, period_end=T0 + 60 * DAY),
         ["occurred_at"]),
        (event("x", EventType.PURCHASED, T0, period_end=T0 + DAY, market="se"), ["market"]),
        (event("x", EventType.PURCHASED, T0, period_end=T0 + DAY, market="A1"), ["market"]),
        (event("x", EventType.PURCHASED, T0, period_end=T0 + DAY, offer_id="nope"),
         ["offer_id"]),
    ],
)  # fmt: skip
def test_invalid_events_name_their_fields(bad: SubscriptionEvent, fields: list[str]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_event(bad, CATALOG, now=T0)
    assert [v.field for v in raised.value.violations] == fields


def test_stale_event_keeps_its_facts() -> None:
    # A later purchase arrived first; the trial start (with its offer) arrives late.
    later_purchase = event("p", EventType.PURCHASED, T0 + 30 * DAY, period_end=T0 + 60 * DAY)
    account2 = apply_event(AccountState.new("u1"), later_purchase, CATALOG).account
    late_trial = apply_event(account2, LIFE[0], CATALOG)
    assert late_trial.outcome is EventOutcome.STALE
    (sub,) = late_trial.account.subscriptions
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.started_at == T0
    assert [r.offer_group for r in late_trial.account.redemptions] == ["trial"]
