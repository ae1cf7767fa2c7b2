"""Subscription events: transitions, staleness, and order independence."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from service.catalog import load_catalog
from service.domain.account import (
    AccountState,
    Store,
    Subscription,
    SubscriptionStatus,
    UserState,
)
from service.domain.decisions import decide_entitlement
from service.domain.errors import InvalidRequest
from service.domain.events import (
    EventOutcome,
    EventResult,
    EventType,
    SubscriptionEvent,
    apply_event,
    effects,
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


def known(result: EventResult) -> Subscription:
    assert result.subscription is not None
    return result.subscription


def deliver(events: list[SubscriptionEvent]) -> AccountState:
    """Delivers events in the given order: each is accepted the first time (none is
    refused for arriving early)."""
    account = AccountState.new("u1")
    for ev in events:
        validate_event(ev, CATALOG, T0 + 365 * DAY)
        account = apply_event(account, ev, CATALOG).account
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
    ("history", "early", "needed"),
    [
        # Needs the subscription's start and does not carry enough to make one.
        ([], event("x", EventType.CANCELED, T0 + DAY, plan=None), LIFE[0]),
        ([], event("x", EventType.REFUNDED, T0 + DAY, refunded_period_end=T0 + 30 * DAY),
         LIFE[0]),
        # Refunds a period whose renewal has not arrived.
        ([LIFE[0]], event("x", EventType.REFUNDED, T0 + 40 * DAY,
                          refunded_period_end=T0 + 60 * DAY), LIFE[1]),
        # Reverses a refund of the current period that has not arrived.
        (LIFE[:2], event("x", EventType.REFUND_REVERSED, T0 + 50 * DAY,
                         refunded_period_end=T0 + 60 * DAY),
         event("rf", EventType.REFUNDED, T0 + 45 * DAY, refunded_period_end=T0 + 60 * DAY)),
    ],
)  # fmt: skip
def test_early_events_are_kept_pending_and_apply_when_what_they_need_arrives(
    history: list[SubscriptionEvent], early: SubscriptionEvent, needed: SubscriptionEvent
) -> None:
    account = deliver(history)
    pending = apply_event(account, early, CATALOG)
    assert pending.outcome is EventOutcome.PENDING
    assert pending.account.subscriptions == account.subscriptions
    assert "x" in {e.event_id for e in pending.account.subscription_events}
    later = apply_event(pending.account, needed, CATALOG)
    assert later.outcome is not EventOutcome.PENDING
    assert effects(later.account)[(SUB, "x")].outcome is EventOutcome.APPLIED
    # The same set delivered in order ends in the same state.
    in_order = deliver([*history, needed, early])
    assert in_order.subscriptions == later.account.subscriptions


def test_events_are_never_refused_for_the_current_status() -> None:
    # Once refused with INVALID_TRANSITION: an uncancel of a trial, a grace expiry
    # without grace, a renewal after a revocation, a cancel during account hold.
    revoked = deliver([LIFE[0], event("r", EventType.REVOKED, T0 + DAY)])
    late_renewal = event("x", EventType.RENEWED, T0 + 2 * DAY, period_end=T0 + 40 * DAY)
    result = apply_event(revoked, late_renewal, CATALOG)
    assert result.outcome is EventOutcome.SUPERSEDED
    assert known(result).status is SubscriptionStatus.REVOKED
    held = deliver([*LIFE[:2], event("h", EventType.ON_HOLD, T0 + 62 * DAY)])
    cancel = apply_event(held, event("c", EventType.CANCELED, T0 + 63 * DAY), CATALOG)
    assert cancel.outcome is EventOutcome.APPLIED
    assert known(cancel).auto_renew is False
    assert not decide_entitlement(
        CATALOG, UserState(cancel.account), "offline_downloads", T0 + 64 * DAY
    ).granted


PURCHASE = event("p", EventType.PURCHASED, T0, period_end=T0 + 30 * DAY)
REFUND = event("rf", EventType.REFUNDED, T0 + 27 * DAY, refunded_period_end=T0 + 30 * DAY)
CANCEL = event("c", EventType.CANCELED, T0 + 29 * DAY, period_end=T0 + 30 * DAY)
REVOKE = event("rv", EventType.REVOKED, T0 + 27 * DAY)


@pytest.mark.parametrize("loss", [REFUND, REVOKE], ids=["refund", "revoke"])
def test_a_refund_wins_whatever_arrives_before_or_after_it(loss: SubscriptionEvent) -> None:
    """Issue 12, problem 1: purchase, refund at day 27, cancel at day 29."""
    ends = {
        tuple(deliver(list(order)).subscriptions)
        for order in itertools.permutations([PURCHASE, loss, CANCEL])
    }
    assert len(ends) == 1
    ((sub,),) = ends
    assert sub.status in (SubscriptionStatus.REFUNDED, SubscriptionStatus.REVOKED)
    now = T0 + 28 * DAY
    (account,) = {deliver([PURCHASE, CANCEL, loss])}
    assert not decide_entitlement(CATALOG, UserState(account), "offline_downloads", now).granted


def test_refunding_a_past_period_keeps_current_access_and_a_reversal_restores() -> None:
    """Issue 12, problem 3."""
    renewed = deliver([PURCHASE, event("r", EventType.RENEWED, T0 + 30 * DAY,
                                       period_end=T0 + 60 * DAY)])  # fmt: skip
    now = T0 + 40 * DAY
    past = apply_event(renewed, event("x", EventType.REFUNDED, T0 + 35 * DAY,
                                      refunded_period_end=T0 + 30 * DAY), CATALOG)  # fmt: skip
    assert past.outcome is EventOutcome.SUPERSEDED
    assert decide_entitlement(CATALOG, UserState(past.account), "offline_downloads", now).granted
    current = apply_event(renewed, event("y", EventType.REFUNDED, T0 + 35 * DAY,
                                         refunded_period_end=T0 + 60 * DAY), CATALOG)  # fmt: skip
    assert current.outcome is EventOutcome.APPLIED
    assert known(current).status is SubscriptionStatus.REFUNDED
    assert not decide_entitlement(
        CATALOG, UserState(current.account), "offline_downloads", now
    ).granted
    reversal = event(
        "z", EventType.REFUND_REVERSED, T0 + 38 * DAY, refunded_period_end=T0 + 60 * DAY
    )
    reversed_ = apply_event(current.account, reversal, CATALOG)
    assert reversed_.outcome is EventOutcome.APPLIED
    assert reversed_.subscription == renewed.subscriptions[0]
    # A renewal paid after the refund brings access back as well.
    paid = apply_event(current.account, event("n", EventType.RENEWED, T0 + 60 * DAY,
                                              period_end=T0 + 90 * DAY), CATALOG)  # fmt: skip
    assert known(paid).status is SubscriptionStatus.ACTIVE


def test_a_period_extension_only_moves_the_period_end() -> None:
    canceled = deliver([PURCHASE, CANCEL])
    extended = apply_event(canceled, event("d", EventType.PERIOD_EXTENDED, T0 + 20 * DAY,
                                           period_end=T0 + 45 * DAY), CATALOG)  # fmt: skip
    (sub,) = extended.account.subscriptions
    assert (sub.status, sub.current_period_end) == (SubscriptionStatus.CANCELED, T0 + 45 * DAY)


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
        (event("x", EventType.REFUNDED, T0), ["refunded_period_end"]),
        (event("x", EventType.PERIOD_EXTENDED, T0), ["current_period_end"]),
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


def test_a_row_without_events_is_where_the_fold_starts() -> None:
    """A subscription RedeemOffer wrote (or one from before events were kept) has a row
    and no events: its first event folds on a snapshot of the row."""
    redeemed = Subscription(
        subscription_id=SUB, plan_id="premium_individual", status=SubscriptionStatus.TRIALING,
        store=Store.APP_STORE, started_at=T0, current_period_end=T0 + 30 * DAY,
        offer_id="premium-individual-trial-1m",
    )  # fmt: skip
    account = AccountState("u1", version=1, subscriptions=(redeemed,))
    cancel = apply_event(
        account, event("c", EventType.CANCELED, T0 + DAY, period_end=T0 + 30 * DAY), CATALOG
    )
    sub = known(cancel)
    assert (sub.status, sub.started_at, sub.offer_id) == (
        SubscriptionStatus.CANCELED, T0, "premium-individual-trial-1m",
    )  # fmt: skip
    assert [e.kind for e in cancel.account.subscription_events] == ["snapshot", "canceled"]
    assert sub.folded_events == 2
    # A refund of the trial period, then: refunded (rule 6).
    refund = event("r", EventType.REFUNDED, T0 + 2 * DAY, refunded_period_end=T0 + 30 * DAY)
    assert known(apply_event(cancel.account, refund, CATALOG)).status is SubscriptionStatus.REFUNDED
